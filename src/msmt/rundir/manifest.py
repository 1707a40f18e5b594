"""``RUN_DIR/manifest.json``: what a finished run holds, written last, checked on every load.

::

    {"format": 1,
     "files":   {"config.yaml": {"sha256": "…", "bytes": 812}, "model.safetensors": {…}, …},
     "weights": {"model.safetensors": {"towers.click.net.0.weight": [8, 16], …}}}

``msmt train`` writes it after every other file of the run (so a run directory without one was
not finished, unless it was written before manifests existed: msmt 0.1, see
:func:`manifest_required`). ``evaluate``, ``predict``, ``serve``, ``export`` and ``adapt`` load a
run through :func:`msmt.rundir.layout.load_run`, which calls :func:`verify`: a listed file that
is missing or whose bytes changed (truncated, edited, randomised) is an error naming the file.
Files that are not listed (``blocks/``, a user's predictions, ``bench.json``) are not checked
here: personal blocks carry their own index (:mod:`msmt.rundir.blocks`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from msmt.data.io import atomic_write_text
from msmt.spec.errors import RunDirError

MANIFEST = "manifest.json"
FORMAT = 1
FIRST_VERSION = (0, 2, 0)  # the first msmt version that writes a manifest
UNLISTED = {MANIFEST, "checkpoint.pt"}  # the manifest itself; a checkpoint exists only while training
UNLISTED_DIRS = {"blocks"}  # personal blocks: published with their own index


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safetensors_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's header (no tensor is read)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > path.stat().st_size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(fh.read(length))
        return {name: list(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunDirError(f"{path}: not a safetensors file ({type(exc).__name__}: {exc})") from None


def _listed(run_dir: Path) -> list[Path]:
    out = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if not path.is_file() or path.name in UNLISTED or rel.parts[0] in UNLISTED_DIRS:
            continue
        if any(part.startswith(".") for part in rel.parts):  # temporary files of atomic writes
            continue
        out.append(path)
    return out


def write_manifest(run_dir: str | Path) -> dict:
    """Hash every file of the run (the last write of ``msmt train``) and record the weights' shapes."""
    run_dir = Path(run_dir)
    files, weights = {}, {}
    for path in _listed(run_dir):
        rel = path.relative_to(run_dir).as_posix()
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        if path.suffix == ".safetensors":
            weights[rel] = safetensors_shapes(path)
    manifest = {"format": FORMAT, "files": files, "weights": weights}
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def manifest_required(version: str) -> bool:
    """Whether a run written by msmt ``version`` must hold a manifest (0.1.x runs never do)."""
    return _version(version) >= FIRST_VERSION


def read_manifest(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise ValueError("no 'files' mapping")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: damaged manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise RunDirError(f"{path}: unsupported manifest format {manifest.get('format')!r} (this msmt reads {FORMAT})")
    return manifest


def verify(run_dir: str | Path, version: str) -> dict | None:
    """Check ``run_dir`` against its manifest; returns the manifest (None for a run written
    before manifests). Raises :class:`RunDirError` naming the first file that does not match."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if manifest is None:
        if manifest_required(version):
            raise RunDirError(
                f"{run_dir / MANIFEST}: missing; msmt {version} writes it last, so the run did not finish "
                "(resume it with 'msmt train --resume' or train again with --overwrite)"
            )
        return None
    for rel, entry in sorted(manifest["files"].items()):
        path = run_dir / rel
        if not path.is_file():
            raise RunDirError(f"{path}: missing (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise RunDirError(f"{path}: {size} bytes, {MANIFEST} says {entry.get('bytes')} (truncated or changed after training)")
        if sha256_file(path) != entry.get("sha256"):
            raise RunDirError(f"{path}: content differs from {MANIFEST} (sha256 mismatch: changed or damaged after training)")
    for rel, shapes in sorted((manifest.get("weights") or {}).items()):
        found = safetensors_shapes(run_dir / rel)
        if found != shapes:
            name = next((k for k in sorted(set(found) | set(shapes)) if found.get(k) != shapes.get(k)), "?")
            raise RunDirError(f"{run_dir / rel}: tensor '{name}' has shape {found.get(name)}, {MANIFEST} says {shapes.get(name)}")
    return manifest
