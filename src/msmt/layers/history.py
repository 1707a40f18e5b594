"""A fixed-size summary of a row's panel history, for models without a sequence encoder.

Lets Shared-Bottom, MMoE, PLE, ... read the same trailing history that M2M's Transformer reads
(``seq.*`` batch keys, see docs/architecture.md), so comparisons with M2M are about the
architecture, not about who may look at the past. Per row, over its own window only:

* masked mean of each performance metric        [B, F]
* the most recent step's metrics (0 if missing)  [B, F]
* the share of observed steps                   [B, 1]
* the share of observed steps with each event   [B, V]   (V = event vocabulary incl. pad/OOV)
* per peer channel (:func:`msmt.spec.batch.peer_channels`): with ``panel.group_keys`` the group
  channel (the unit's group's other units, e.g. the advertiser's other scenarios; ``seq.group_raw``,
  ``seq.group_count``, ``seq.group_active``), with ``panel.cross_section_keys`` the cross-section
  (``seq.cross_*``, e.g. the scenario's other advertisers): the mean of log1p(sums) over the
  steps the peers have rows, the most recent step's, the share of such steps, and the share of
  the other units active (a positive metric) over those steps and at the most recent one
                                                  [B, 2F + 3] each
* with ``live`` (``model.history_live``), per panel metric of the raw history (``seq.raw``,
  ``seq.present``), the unit's live history: a step is live where the metric is positive, paused
  where it is observed and not: days since the last live and the last paused step (window + 1
  when none) / (window + 1), changes of state between consecutive observed steps / window, and
  whether the most recent step was live (the features ``benchmarks/active_baseline.py`` gives a
  logistic regression, :mod:`msmt.experiments.live_history`)
                                                  [B, 4F]

Output: [B, 2F + 1 + V + (2F + 3)·channels (+ 4F)]. Nothing mixes rows of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msmt.spec.batch import peer_channels
from msmt.spec.errors import ConfigError
from msmt.spec.fitted import FittedSchema


class HistorySummary(nn.Module):
    def __init__(self, schema: FittedSchema, live: bool = False):
        super().__init__()
        self.live = live
        panel = schema.panel
        if panel is None:
            raise ConfigError("model.history_summary: the dataset has no 'panel' section, so there is no history to summarise")
        self.num_metrics = len(panel.metrics)
        self.num_events = len(panel.events) + 2
        self.peers = [prefix for prefix, _ in peer_channels(panel)]
        self.out_dim = 2 * self.num_metrics + 1 + self.num_events + (2 * self.num_metrics + 3) * len(self.peers) + 4 * self.num_metrics * live

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        perf = batch["seq.performance"]  # [B, W, F], 0 where missing
        mask = batch["seq.mask"].to(perf.dtype)  # [B, W]
        observed = mask.sum(1, keepdim=True)  # [B, 1]
        mean = (perf * mask.unsqueeze(-1)).sum(1) / observed.clamp_min(1.0)  # [B, F]
        last = perf[:, -1] * mask[:, -1:]  # [B, F]
        events = F.one_hot(batch["seq.behaviour"], self.num_events).to(perf.dtype)  # [B, W, V]
        event_share = (events * mask.unsqueeze(-1)).sum(1) / observed.clamp_min(1.0)  # [B, V]
        share = observed / mask.shape[1]
        parts = [mean, last, share, event_share]
        for prefix in self.peers:
            count = batch[f"{prefix}_count"].to(perf.dtype)  # [B, W]
            seen = (count > 0).to(perf.dtype)
            level = torch.log1p(batch[f"{prefix}_raw"]).to(perf.dtype)  # [B, W, F], 0 where no other unit
            live = batch[f"{prefix}_active"].to(perf.dtype) / count.clamp_min(1.0)  # [B, W], share of the others active
            steps = seen.sum(1, keepdim=True)
            parts += [(level * seen.unsqueeze(-1)).sum(1) / steps.clamp_min(1.0), level[:, -1], steps / seen.shape[1],
                      (live * seen).sum(1, keepdim=True) / steps.clamp_min(1.0), live[:, -1:]]
        if self.live:
            parts += [p.to(perf.dtype) for p in self.live_history(batch)]
        return torch.cat(parts, dim=1)

    @staticmethod
    def live_history(batch: dict[str, Tensor]) -> list[Tensor]:
        """[since live, since paused, changes, last live], each [B, F]; see the module docstring."""
        present = batch["seq.present"]  # [B, W, F]
        live = (batch["seq.raw"] > 0) & present
        paused = present & ~live
        window = live.shape[1]
        age = torch.arange(window, 0, -1, device=live.device).view(1, window, 1)  # steps before the row, oldest first

        def since(hit: Tensor) -> Tensor:
            return torch.where(hit, age, window + 1).amin(1).float() / (window + 1)

        changes = ((live[:, 1:] != live[:, :-1]) & present[:, 1:] & present[:, :-1]).float().sum(1) / window
        return [since(live), since(paused), changes, live[:, -1].float()]
