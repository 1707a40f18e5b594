"""Which code produced a run: ``RUN_DIR/provenance.json``.

``config.yaml`` reproduces a run only with the same code. A run directory therefore records the
msmt version, a SHA-256 over msmt's own source files, and the versions of the libraries whose
numerics matter (torch, numpy, pandas, scikit-learn). ``msmt bench`` and the results scripts reuse
a finished run only when its source hash equals the running code's (:func:`same_code`), so a
results page cannot silently mix runs trained by different code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PROVENANCE = "provenance.json"
_LIBRARIES = ("torch", "numpy", "pandas", "scikit-learn")


def source_hash(root: Path | None = None) -> str:
    """SHA-256 over every ``.py`` file under ``root`` (default: the msmt package), relative path and
    bytes, in path order: any edit to msmt's code changes it; caches and data files do not."""
    return _hash_tree(Path(root).resolve() if root else Path(__file__).resolve().parents[1])


@functools.lru_cache(maxsize=4)
def _hash_tree(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def current() -> dict:
    from msmt import __version__

    return {
        "msmt": __version__,
        "source_sha256": source_hash(),
        "python": platform.python_version(),
        **{lib: _version(lib) for lib in _LIBRARIES},
    }


def write(run_dir: Path, training: dict | None = None) -> None:
    """``current()`` and, when given, ``training``: how the run trained (world size, backend,
    device, threads, precision; :func:`msmt.experiments.run.training_setup`)."""
    from msmt.rundir.layout import write_json

    record = current()
    if training is not None:
        record["training"] = training
    write_json(Path(run_dir) / PROVENANCE, record)


def same_code(run_dir: Path) -> bool:
    """True when ``run_dir`` was written by the code running now (a run without the record: False)."""
    path = Path(run_dir) / PROVENANCE
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("source_sha256") == source_hash()
    except (OSError, json.JSONDecodeError):
        return False
