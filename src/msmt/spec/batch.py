"""The batch a model reads: a dict of tensors keyed by input name, and how to slice it.

Layout (every model reads the keys it needs; ``N`` rows; built by :mod:`msmt.data.tensorize`):

=====================  ====================  ==============================================
key                    shape / dtype         meaning
=====================  ====================  ==============================================
``scenario``           [N] int64             0 = unknown scenario, 1..P = known ones
``sparse``             [N, S] int64          one column per sparse feature (vocab indices)
``dense``              [N, D] float32        standardised dense features
``multi.<name>``       [N, L] int64          multi-valued feature, right-padded with 0
``scenario_sparse``    [N, A_s] int64        scenario attribute categoricals
``scenario_dense``     [N, A_d] float32      scenario attribute numerics
``labels``             [N, T] float32        one column per task, in ``spec.tasks`` order
``weight``             [N] float32           per-sample loss weight (1 without a column)
``task_mask``          [N, T] bool           True where the task exists in the row's scenario
``task_weight``        [N, T] float32        per-task loss weight (``tasks.<name>.weight_column``; 1 without)
``seq.behaviour``      [N, W] int64          panel history events (only with a ``panel``)
``seq.performance``    [N, W, F] float32     panel history metrics, standardised
``seq.mask``           [N, W] bool           True where the past step was observed
``seq.raw``            [N, W, F] float32     panel history metrics as they are, 0 where missing
``seq.present``        [N, W, F] bool        True where that metric's value was observed
``seq.group_raw``      [N, W, F] float32     metrics summed over the group's other units (``panel.group_keys``)
``seq.group_count``    [N, W] float32        how many other units of the group have a row at that step
``seq.group_active``   [N, W] float32        how many of those have a positive value of some metric
``seq.cross_raw``      [N, W, F] float32     the same over the cross-section's other units (``panel.cross_section_keys``)
``seq.cross_count``    [N, W] float32        how many other units of the cross-section have a row at that step
``seq.cross_active``   [N, W] float32        how many of those have a positive value of some metric
=====================  ====================  ==============================================
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

Batch = dict[str, torch.Tensor]
TARGET_KEYS = ("labels", "weight", "task_mask", "task_weight")  # what training reads besides the model's inputs


def peer_channels(panel) -> list[tuple[str, tuple[str, ...]]]:
    """``[(batch-key prefix, key columns)]`` of the peer channels a panel declares, in batch order:
    ``seq.group`` (``panel.group_keys``: the unit's group, e.g. its advertiser's other scenarios) and
    ``seq.cross`` (``panel.cross_section_keys``: its cross-section, e.g. the scenario's other
    advertisers). Each gives ``<prefix>_raw`` [N, W, F], ``<prefix>_count`` and ``<prefix>_active``
    [N, W]. ``panel``: a :class:`~msmt.spec.dataset.PanelSpec` or a fitted ``PanelEncoding``."""
    pairs = (("seq.group", tuple(panel.group_keys)), ("seq.cross", tuple(getattr(panel, "cross_section_keys", ()))))
    return [(prefix, keys) for prefix, keys in pairs if keys]


def num_rows(batch: Batch) -> int:
    return int(batch["scenario"].shape[0])


def take(batch: Batch, index: torch.Tensor | slice) -> Batch:
    return {k: v[index] for k, v in batch.items()}


def inputs_only(batch: Batch) -> Batch:
    """The batch without labels and sample weights (what scoring hands to a model)."""
    return {k: v for k, v in batch.items() if k not in TARGET_KEYS}


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """The batch on ``device`` (tensors already there are not copied).

    ``non_blocking`` lets a host-to-GPU copy overlap with the GPU's work where the source is
    pinned memory (otherwise it is an ordinary synchronous copy). Results are only ever brought
    back to the CPU with blocking copies (``.cpu()``), so nothing is read before it has arrived.
    """
    device = torch.device(device)
    return {k: v.to(device, non_blocking=device.type == "cuda") for k, v in batch.items()}


def iterate_batches(
    data: Batch,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    start_batch: int = 0,
) -> Iterator[Batch]:
    """Yield mini-batches by tensor indexing; shuffling uses ``generator`` for reproducibility.

    ``start_batch`` skips the first batches of the same order (resuming mid-epoch).
    """
    n = num_rows(data)
    first = start_batch * batch_size
    if shuffle:
        order = torch.randperm(n, generator=generator)
        for start in range(first, n, batch_size):
            yield take(data, order[start : start + batch_size])
    else:
        for start in range(first, n, batch_size):
            yield take(data, slice(start, start + batch_size))
