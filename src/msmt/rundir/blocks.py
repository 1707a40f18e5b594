"""Personal blocks on disk: a group's own copy of a few parameters, stored beside the shared base.

Layout inside a run directory::

    RUN_DIR/blocks/index.json                        {"<group id>": "<file name>", ...}
    RUN_DIR/blocks/<sha1(group)[:16]>.safetensors    only the personal tensors of that group

A block holds a subset of ``model.state_dict()`` keys (e.g. the towers); scoring composes base +
block (:func:`msmt.scoring.predict.predict`), and a group without a block is scored by the base.

A block is only meaningful on the base it was adapted from: its safetensors header records the
SHA-256 of the run's ``model.safetensors`` when it was written (``msmt.base_sha256``), and a
block read for a run whose weights have another hash is refused with a one-line
:class:`ConfigError` (:func:`check_base`; the service checks every block at start). Blocks
written before this record existed carry none and are checked by tensor names and shapes only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from msmt.data.io import atomic_write, atomic_write_text
from msmt.rundir.layout import WEIGHTS
from msmt.spec.errors import ConfigError

BLOCKS_DIR = "blocks"
INDEX = "index.json"
BASE_KEY = "msmt.base_sha256"


def weights_sha256(run_dir: str | Path) -> str | None:
    """SHA-256 of the run's ``model.safetensors`` (None when it has none)."""
    path = Path(run_dir) / WEIGHTS
    if not path.exists():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_base(path: Path, group: str, recorded: str | None, base: str | None) -> None:
    """Refuse a block written for other base weights than the run's (one line, naming both hashes)."""
    if recorded is not None and base is not None and recorded != base:
        raise ConfigError(
            f"{path}: the block of group '{group}' was written for other base weights (sha256 {recorded[:12]}..., "
            f"this run's {WEIGHTS} has {base[:12]}...): adapt the groups again on this run"
        )


def copy_base(src: Path, dst: Path) -> None:
    """Copy a run directory's files (and its blocks/plots folders) into ``dst``, each atomically."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(src).rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        atomic_write(dst / path.relative_to(src), lambda tmp, path=path: shutil.copyfile(path, tmp))


def block_file(group: str) -> str:
    return hashlib.sha1(str(group).encode("utf-8")).hexdigest()[:16] + ".safetensors"


def read_index(run_dir: str | Path) -> dict[str, str]:
    path = Path(run_dir) / BLOCKS_DIR / INDEX
    return json.loads(path.read_text()) if path.exists() else {}


def save_blocks(run_dir: str | Path, blocks: dict[str, dict[str, Tensor]]) -> None:
    """Write one file per group and an updated index (each write atomic)."""
    folder = Path(run_dir) / BLOCKS_DIR
    index = read_index(run_dir)
    base = weights_sha256(run_dir)
    metadata = {BASE_KEY: base} if base else None
    for group, tensors in blocks.items():
        name = block_file(group)
        plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        atomic_write(folder / name, lambda tmp, plain=plain: save_file(plain, str(tmp), metadata=metadata))
        index[str(group)] = name
    atomic_write_text(folder / INDEX, json.dumps(index, indent=1, sort_keys=True))


def load_block(
    run_dir: str | Path, group: str, index: dict[str, str] | None = None, base: str | None = None
) -> dict[str, Tensor] | None:
    """The group's personal tensors, or None when the group has no block (fall back to base).

    ``base``: the run's :func:`weights_sha256`; a block recorded for other weights is refused."""
    index = read_index(run_dir) if index is None else index
    name = index.get(str(group))
    if name is None:
        return None
    path = Path(run_dir) / BLOCKS_DIR / name
    with safe_open(str(path), framework="pt") as fh:
        check_base(path, str(group), (fh.metadata() or {}).get(BASE_KEY), base)
        return {k: fh.get_tensor(k) for k in fh.keys()}


class BlockStore:
    """The blocks of a run directory as a block source for scoring: index read once, files on use."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.index = read_index(run_dir)
        self.base = weights_sha256(run_dir) if self.index else None

    def __len__(self) -> int:
        return len(self.index)

    def has(self, group: str) -> bool:
        return str(group) in self.index

    def get(self, group: str) -> dict[str, Tensor] | None:
        return load_block(self.run_dir, group, self.index, self.base)
