"""TensorBoard logging of the per-epoch history (``train.tensorboard: true``).

Each epoch's history row (:func:`msmt.training.loop.fit`) becomes scalars under
``RUN_DIR/tensorboard/``: ``loss/train``, ``loss/val``, ``loss_train/<task>``, ``loss_val/<task>``,
``val/<task>_<metric>`` and ``weight/<task>`` (the loss balancer's weights), at step = epoch; the
restored epoch is written as ``best_epoch`` when training ends. ``tensorboard --logdir RUN_DIR``
shows them. The writer is torch's own (:class:`torch.utils.tensorboard.SummaryWriter`), which needs
the ``tensorboard`` package (``pip install 'msmt[tensorboard]'``).
"""

from __future__ import annotations

import math
from pathlib import Path


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a history key: ``train_loss`` → ``loss/train``, ``val_click_loss`` →
    ``loss_val/click``, ``val_click_auc`` → ``val/click_auc``, ``weight_click`` → ``weight/click``."""
    if key in ("train_loss", "val_loss"):
        return f"loss/{key[:-5]}"
    for split in ("train", "val"):
        if key.startswith(f"{split}_") and key.endswith("_loss"):
            return f"loss_{split}/{key[len(split) + 1:-5]}"
    if key.startswith("weight_"):
        return f"weight/{key[7:]}"
    return f"val/{key[4:]}" if key.startswith("val_") else key


class EpochWriter:
    """Writes history rows as scalars; a no-op context when ``log_dir`` is None."""

    def __init__(self, log_dir: Path | None):
        self.writer = None
        if log_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # torch raises this when the tensorboard package is missing
                raise ImportError("train.tensorboard: true needs the tensorboard package (pip install 'msmt[tensorboard]')") from exc
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(scalar_tag(key), float(value), step)
        self.writer.flush()

    def close(self, best_epoch: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar("best_epoch", best_epoch, best_epoch)
            self.writer.close()
