"""Personal blocks: a group's own copy of a few parameters, stored beside the shared base.

Layout inside a run directory::

    RUN_DIR/blocks/index.json               {"<group id>": "<file name>", ...}
    RUN_DIR/blocks/<sha1(group)[:16]>.safetensors   only the personal tensors of that group

A block holds a subset of ``model.state_dict()`` keys (e.g. the towers). Scoring a group
composes base + block with :func:`torch.func.functional_call`: the base model object is never
modified, and a group without a block is scored by the base alone.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from msmt.data.io import atomic_write_text
from msmt.spec.task_kinds import to_user_units

BLOCKS_DIR = "blocks"
INDEX = "index.json"


def select_parameters(model: nn.Module, patterns: list[str]) -> list[str]:
    """Names of parameters matching any glob pattern (``"towers.*"``)."""
    return [n for n, _ in model.named_parameters() if any(fnmatch.fnmatch(n, p) for p in patterns)]


def block_file(group: str) -> str:
    return hashlib.sha1(str(group).encode("utf-8")).hexdigest()[:16] + ".safetensors"


def read_index(run_dir: str | Path) -> dict[str, str]:
    path = Path(run_dir) / BLOCKS_DIR / INDEX
    return json.loads(path.read_text()) if path.exists() else {}


def save_blocks(run_dir: str | Path, blocks: dict[str, dict[str, Tensor]]) -> None:
    """Write one file per group and an updated index (each write atomic)."""
    folder = Path(run_dir) / BLOCKS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    index = read_index(run_dir)
    for group, tensors in blocks.items():
        name = block_file(group)
        tmp = folder / f".{name}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        tmp.replace(folder / name)
        index[str(group)] = name
    atomic_write_text(folder / INDEX, json.dumps(index, indent=1, sort_keys=True))


def load_block(run_dir: str | Path, group: str, index: dict[str, str] | None = None) -> dict[str, Tensor] | None:
    """The group's personal tensors, or None when the group has no block (fall back to base)."""
    index = read_index(run_dir) if index is None else index
    name = index.get(str(group))
    if name is None:
        return None
    return load_file(str(Path(run_dir) / BLOCKS_DIR / name))


def forward_with_block(model: nn.Module, block: dict[str, Tensor] | None, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Model outputs with the block's tensors in place of the base's (base unchanged)."""
    if not block:
        return model(batch)
    return torch.func.functional_call(model, block, (batch,), strict=False)


@torch.no_grad()
def predict_with_blocks(
    model: nn.Module,
    run_dir: str | Path,
    data: dict[str, Tensor],
    groups,
    batch_size: int = 8192,
) -> tuple[dict[str, np.ndarray], int]:
    """Per-row predictions, each row scored by base + its group's block (base alone without one).

    Args:
        model: the base model (a ``MultiTaskModel``; left unchanged).
        run_dir: holds ``blocks/index.json`` (absent: every row falls back to the base).
        data: an encoded batch of N rows; ``groups``: [N] group ids (text).
    Returns:
        ({task: [N] prediction in user units}, number of rows scored with a block).
    """
    import pandas as pd

    from msmt.spec.batch import take

    was_training = model.training
    model.eval()
    kinds = {t.name: t.kind for t in model.schema.spec.tasks}
    inputs = {k: v for k, v in data.items() if k not in ("labels", "weight")}
    n = int(inputs["scenario"].shape[0])
    out = {t: np.zeros(n, dtype=np.float32) for t in kinds}
    index = read_index(run_dir)
    groups = np.asarray(groups, dtype=object)
    with_block = np.array([str(g) in index for g in groups], dtype=bool) if n else np.zeros(0, dtype=bool)

    def score(rows: np.ndarray, block: dict[str, Tensor] | None) -> None:
        part = take(inputs, torch.from_numpy(rows))
        for start in range(0, len(rows), batch_size):
            batch = take(part, slice(start, start + batch_size))
            pred = forward_with_block(model, block, batch)
            for t, kind in kinds.items():
                out[t][rows[start : start + batch_size]] = to_user_units(kind, pred[t]).float().cpu().numpy()

    base_rows = np.flatnonzero(~with_block)
    if len(base_rows):
        score(base_rows, None)
    sel = np.flatnonzero(with_block)
    for group, rows in pd.Series(sel).groupby(groups[sel], sort=False):
        score(rows.to_numpy().copy(), load_block(run_dir, str(group), index))
    model.train(was_training)
    return out, int(with_block.sum())
