"""Personal blocks on disk: a group's own copy of a few parameters, stored beside the shared base.

Layout inside a run directory::

    RUN_DIR/blocks/index.json
        {"format": 2,
         "base": {"file": "model.safetensors", "sha256": "…"},     the base they were adapted from
         "blocks": {"<group id>": {"file": "<name>", "sha256": "…"}, …}}
    RUN_DIR/blocks/<sha1(group)[:16]>.<set>.safetensors   only the personal tensors of that group

A block holds a subset of ``model.state_dict()`` keys (e.g. the towers); scoring composes base +
block (:func:`msmt.scoring.predict.predict`), and a group without a block is scored by the base.

**A block set is published atomically** (:func:`save_blocks`): the new files are written under
names no earlier set used, then ``index.json`` (the one switch from the old set to the new),
then the files the new index no longer lists are removed. A writer killed before the index
leaves the previous set in force (its unlisted files are removed by the next publication).
**Blocks belong to one base**: the index records the SHA-256 of the ``model.safetensors`` they
were adapted from, and :class:`BlockStore` refuses them beside any other base (a retrained
model). msmt 0.1 wrote the index as a plain ``{group: file}`` mapping, still read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from msmt.data.io import atomic_write, atomic_write_text
from msmt.rundir.manifest import safetensors_shapes, sha256_file
from msmt.spec.errors import RunDirError

BLOCKS_DIR = "blocks"
INDEX = "index.json"
FORMAT = 2
BASE_FILE = "model.safetensors"


def block_file(group: str, tag: str = "") -> str:
    stem = hashlib.sha1(str(group).encode("utf-8")).hexdigest()[:16]
    return f"{stem}.{tag}.safetensors" if tag else f"{stem}.safetensors"


@dataclass
class BlockSet:
    """What ``blocks/index.json`` says: group -> file (and its SHA-256), and the base's SHA-256
    (None for a 0.1 index, which recorded neither)."""

    files: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str | None] = field(default_factory=dict)
    base_sha256: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "base": {"file": BASE_FILE, "sha256": self.base_sha256},
                "blocks": {g: {"file": self.files[g], "sha256": self.sha256.get(g)} for g in sorted(self.files)},
            },
            indent=1,
        )


def read_block_set(run_dir: str | Path) -> BlockSet:
    """The published block set of ``run_dir`` (empty when it has none)."""
    path = Path(run_dir) / BLOCKS_DIR / INDEX
    if not path.exists():
        return BlockSet()
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a mapping")
        if "format" not in data:  # msmt 0.1: {group: file}
            if not all(isinstance(v, str) for v in data.values()):
                raise ValueError("0.1 index values must be file names")
            return BlockSet(files=dict(data), sha256={})
        if data["format"] != FORMAT:
            raise ValueError(f"unsupported format {data['format']!r}")
        blocks = data["blocks"]
        return BlockSet(
            files={str(g): str(e["file"]) for g, e in blocks.items()},
            sha256={str(g): e.get("sha256") for g, e in blocks.items()},
            base_sha256=(data.get("base") or {}).get("sha256"),
        )
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: damaged block index ({type(exc).__name__}: {exc})") from None


def read_index(run_dir: str | Path) -> dict[str, str]:
    """``{group: file name}`` of the published block set."""
    return read_block_set(run_dir).files


def save_blocks(run_dir: str | Path, blocks: dict[str, dict[str, Tensor]], base_sha256: str | None = None) -> BlockSet:
    """Publish a block set: ``blocks`` plus the current set's blocks of other groups (when they
    were adapted from the same base), atomically (module docstring). Returns the new set."""
    folder = Path(run_dir) / BLOCKS_DIR
    base_sha256 = base_sha256 or _base_sha(run_dir)
    current = read_block_set(run_dir)
    new = BlockSet(base_sha256=base_sha256)
    if current.base_sha256 in (None, base_sha256):  # blocks of another base are stale: dropped
        for group, name in current.files.items():  # carried into the new set: checked before anything is written
            if group in blocks or not (folder / name).exists():
                continue
            digest = sha256_file(folder / name)
            if current.sha256.get(group) not in (None, digest):
                raise RunDirError(f"{folder / name}: content differs from {folder / INDEX} (sha256 mismatch: changed or damaged after adaptation)")
            new.files[group], new.sha256[group] = name, digest
    tag = uuid.uuid4().hex[:8]  # names no earlier set used: the files in force are never overwritten
    for group, tensors in blocks.items():
        name = block_file(group, tag)
        plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        atomic_write(folder / name, lambda tmp, plain=plain: save_file(plain, str(tmp)))
        new.files[str(group)], new.sha256[str(group)] = name, sha256_file(folder / name)
    atomic_write_text(folder / INDEX, new.to_json())  # the switch to the new set
    listed = set(new.files.values())
    for path in folder.glob("*.safetensors"):
        if path.name not in listed:
            path.unlink(missing_ok=True)
    return new


def base_sha256_of(run_dir: str | Path) -> str | None:
    """SHA-256 of a run's base weights (``model.safetensors``), None when it has none."""
    path = Path(run_dir) / BASE_FILE
    return sha256_file(path) if path.exists() else None


_base_sha = base_sha256_of


def copy_base(src: Path, dst: Path) -> None:
    """Copy a run directory's files (and its blocks/plots folders) into ``dst``, each atomically;
    the block index after the block files (it is what publishes them), the manifest last."""
    dst.mkdir(parents=True, exist_ok=True)
    files = [p for p in sorted(Path(src).rglob("*")) if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    last = {"index.json": 1, "manifest.json": 2}
    for path in sorted(files, key=lambda p: last.get(p.name, 0)):
        atomic_write(dst / path.relative_to(src), lambda tmp, path=path: shutil.copyfile(path, tmp))


def load_block(run_dir: str | Path, group: str, index: dict[str, str] | None = None) -> dict[str, Tensor] | None:
    """The group's personal tensors, or None when the group has no block (fall back to base)."""
    index = read_index(run_dir) if index is None else index
    name = index.get(str(group))
    if name is None:
        return None
    return load_file(str(Path(run_dir) / BLOCKS_DIR / name))


class BlockStore:
    """The blocks of a run directory as a block source for scoring: index read once, files on use.

    Checked at construction: the index is readable, every listed file exists, and (given
    ``base_sha256``, the SHA-256 of the run's weights) the blocks were adapted from this base.
    Checked on use: the file's SHA-256 against the index, its tensors against the model's
    (``shapes``: name -> shape of the personal parameters it may hold) and finite values.
    ``orphans``: block files no index lists (left by an interrupted ``msmt adapt``; never used).
    """

    def __init__(self, run_dir: str | Path, base_sha256: str | None = None, shapes: dict[str, list[int]] | None = None):
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / BLOCKS_DIR
        self.set = read_block_set(run_dir)
        self.index = self.set.files
        self.shapes = shapes
        index_path = self.folder / INDEX
        if self.index and base_sha256 is not None and self.set.base_sha256 not in (None, base_sha256):
            raise RunDirError(
                f"{index_path}: the blocks were adapted from another base model (sha256 {self.set.base_sha256[:12]}…, "
                f"this run's {BASE_FILE} is {base_sha256[:12]}…); run 'msmt adapt' again on this base"
            )
        for name in self.index.values():
            if not (self.folder / name).is_file():
                raise RunDirError(f"{self.folder / name}: missing (listed in {index_path})")
        listed = set(self.index.values())
        self.orphans = sorted(p.name for p in self.folder.glob("*.safetensors") if p.name not in listed) if self.folder.is_dir() else []

    def __len__(self) -> int:
        return len(self.index)

    def has(self, group: str) -> bool:
        return str(group) in self.index

    def get(self, group: str) -> dict[str, Tensor] | None:
        name = self.index.get(str(group))
        if name is None:
            return None
        path = self.folder / name
        expected = self.set.sha256.get(str(group))
        if expected is not None and sha256_file(path) != expected:
            raise RunDirError(f"{path}: content differs from {self.folder / INDEX} (sha256 mismatch: changed or damaged after adaptation)")
        if self.shapes is not None:
            for tensor, shape in safetensors_shapes(path).items():
                if self.shapes.get(tensor) != shape:
                    what = "not a parameter of the model" if tensor not in self.shapes else f"shape {shape}, the model has {self.shapes[tensor]}"
                    raise RunDirError(f"{path}: tensor '{tensor}': {what}")
        try:
            block = load_file(str(path))
        except Exception as exc:  # safetensors' own error types
            raise RunDirError(f"{path}: cannot read the block ({type(exc).__name__}: {exc})") from None
        for tensor, value in block.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise RunDirError(f"{path}: tensor '{tensor}' holds non-finite values")
        return block


def open_blocks(run) -> BlockStore:
    """The checked block store of a loaded run (:class:`msmt.rundir.layout.LoadedRun`)."""
    shapes = {name: list(t.shape) for name, t in run.model.state_dict().items()}
    return BlockStore(run.path, _base_sha(run.path), shapes)
