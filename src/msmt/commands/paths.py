"""Checks of the paths a command will write, made before any work starts.

A command's output is written atomically (:func:`msmt.data.io.atomic_write`), so a failure never
leaves a partial file; these checks turn the predictable failures into one-line errors up front:
an output that is a folder, an output that is also an input (``--out`` equal to ``--data`` would
overwrite the data), an output inside a run directory's own files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from msmt.spec.errors import ConfigError


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _check_parents(out: Path, option: str) -> None:
    """The nearest existing ancestor of ``out`` is a folder (one that is a file could never hold it)."""
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{option} {out}: {parent} is a file, not a folder")
            break


def check_output_file(out: Path, option: str = "--out", inputs: Iterable[tuple[str, Path | None]] = ()) -> None:
    """``out`` names a file msmt may (re)write: not a folder, not one of ``inputs`` ((option, path) pairs)."""
    if out.is_dir():
        raise ConfigError(f"{option} {out}: is a folder; name the file to write")
    for name, path in inputs:
        if path is not None and _same(out, Path(path)):
            raise ConfigError(f"{option} {out}: is also {name}; writing it would overwrite the input, choose another file")
    _check_parents(out, option)


def check_output_dir(out: Path, option: str = "--out") -> None:
    """``out`` names a folder msmt may create or write into."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {out}: exists and is not a folder")
    _check_parents(out, option)


RUN_FILES = {"config.yaml", "schema.json", "model.safetensors", "metrics.json", "history.csv", "report.md",
             "provenance.json", "manifest.json", "adapt.json", "meta_history.csv", "checkpoint.pt"}
RUN_FOLDERS = {"blocks", "plots"}


def check_not_in_run(out: Path, run_dir: Path, option: str = "--out") -> None:
    """``out`` must not replace a file of the run directory that scoring reads (its weights, its
    manifest...); a new file of the user's beside them is fine."""
    try:
        rel = out.resolve().relative_to(run_dir.resolve())
    except (ValueError, OSError):
        return
    if rel.parts and (rel.as_posix() in RUN_FILES or rel.parts[0] in RUN_FOLDERS):
        raise ConfigError(f"{option} {out}: is a file of the run directory {run_dir}; choose another file")
