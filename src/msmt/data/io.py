"""Reading and writing tables (CSV or Parquet) with errors that name the file.

Categorical columns are read as strings so that ``259`` in a CSV, ``259`` in Parquet and
``"259"`` in a JSON request all map to the same vocabulary entry.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from msmt.spec.errors import DataError

PARQUET_SUFFIXES = {".parquet", ".pq"}


def read_table(path: str | Path, string_columns: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV (optionally gzipped) or Parquet file.

    Args:
        path: the file.
        string_columns: columns to read as text (categoricals, scenario).
    Raises:
        DataError: the file is missing, unreadable or has no rows.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, "no such file")
    string_columns = list(string_columns or [])
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = pd.read_parquet(path)
            for col in string_columns:
                if col in frame.columns:
                    frame[col] = _as_text(frame[col])
        else:
            frame = pd.read_csv(path, dtype={c: str for c in string_columns}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise DataError(str(path), None, "empty file") from None
    except (ValueError, OSError) as exc:  # malformed CSV / Parquet
        raise DataError(str(path), None, f"cannot read table ({exc})") from None
    if len(frame) == 0:
        raise DataError(str(path), None, "empty file (no data rows)")
    duplicated = _duplicate_header(path, frame)
    if duplicated is not None:  # pandas would rename the second one 'x.1' and read the first silently
        raise DataError(str(path), duplicated, "duplicate column name in the header")
    frame.attrs["source"] = str(path)
    return frame


def _duplicate_header(path: Path, frame: pd.DataFrame) -> str | None:
    """The first column name that appears twice in the file's header, or None."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        names = list(frame.columns)
    else:
        names = [str(v) for v in pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _as_text(series: pd.Series) -> pd.Series:
    """Categorical values as strings; integral floats lose their '.0'; missing stays missing."""
    if pd.api.types.is_float_dtype(series):
        as_int = series.dropna()
        if (as_int == as_int.round()).all():
            return series.map(lambda v: None if pd.isna(v) else str(int(v)))
    return series.map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))


def source_of(frame: pd.DataFrame) -> str:
    return frame.attrs.get("source", "<data>")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()  # what open() would give a new file (mkstemp gives 0600)


def atomic_write(path: str | Path, write: Callable[[Path], None], durable: bool = False) -> Path:
    """The one way msmt writes a file: ``write(tmp)`` fills a temporary file beside ``path``, which
    is then renamed over ``path``; never a half-written file, and no temporary left behind when
    ``write`` fails. The file gets the permissions ``open()`` would give it (the umask's).

    ``durable``: flush the file to disk before the rename (checkpoints: a crash right after the
    rename must not leave an empty file). Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write CSV or Parquet (by suffix) atomically."""
    parquet = Path(path).suffix.lower() in PARQUET_SUFFIXES
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False) if parquet else frame.to_csv(tmp, index=False))
