"""Panel-history encoders for M2M (Zhang et al., WSDM 2022, "Leaving No One Behind", eq. 1-2).

Each row carries its own trailing window of past steps: a behaviour event per step and a vector of
performance metrics per step. Each sequence is embedded, given a learned position embedding and
encoded by multi-head self-attention over **that row's own T positions** (the time axis, never
the batch axis), with padded / missing steps masked out of the keys, then mean-pooled over the
observed steps:  F_seq = pool(MH(X_b)) ⊕ pool(MH(X_p)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SequenceEncoder(nn.Module):
    """[B, T, d] step embeddings + [B, T] observed-mask -> [B, d] pooled encoding.

    Rows with no observed step get the zero vector (their padding is still unmasked inside the
    attention so that softmax never sees an all-masked row, which would give NaN; the pooling
    then ignores every position). ``use_transformer=False`` is the paper's "w/o Transformer"
    ablation: position-embedded steps are pooled directly.
    """

    def __init__(self, length: int, dim: int, heads: int, layers: int, ff_dim: int, dropout: float, use_transformer: bool):
        super().__init__()
        self.position = nn.Parameter(torch.randn(length, dim) * 0.02)  # [T, d]
        self.encoder: nn.TransformerEncoder | None = None
        if use_transformer:
            layer = nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, steps: Tensor, mask: Tensor) -> Tensor:
        x = steps + self.position  # [B, T, d]
        if self.encoder is not None:
            empty = ~mask.any(dim=1, keepdim=True)  # [B, 1]
            x = self.encoder(x, src_key_padding_mask=~mask & ~empty)  # True = ignore this key
        weight = mask.unsqueeze(-1).to(x.dtype)  # [B, T, 1]
        return (x * weight).sum(1) / weight.sum(1).clamp_min(1.0)


class PanelEncoder(nn.Module):
    """Behaviour + performance histories -> [B, 2d] (``seq.*`` batch keys, see docs/architecture.md).

    Args:
        panel: ``FittedSchema.extra["panel"]``: ``window`` W, ``metrics`` (F names), ``events``
            (event vocabulary; indices 0 = padding, 1 = OOV, 2.. = events).
        length: how many of the most recent steps to use (T ≤ W); None = all W.
    Input keys: ``seq.behaviour`` [B, W] int64, ``seq.performance`` [B, W, F] float32,
    ``seq.mask`` [B, W] bool (True = observed).
    """

    def __init__(self, panel: dict, length: int | None, dim: int, heads: int, layers: int, ff_dim: int, dropout: float, use_transformer: bool):
        super().__init__()
        window = int(panel["window"])
        self.length = window if length is None else min(int(length), window)
        self.behaviour = nn.Embedding(len(panel["events"]) + 2, dim, padding_idx=0)
        self.performance = nn.Linear(len(panel["metrics"]), dim)
        args = (self.length, dim, heads, layers, ff_dim, dropout, use_transformer)
        self.encode_behaviour = SequenceEncoder(*args)
        self.encode_performance = SequenceEncoder(*args)
        self.out_dim = 2 * dim

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        t = self.length
        mask = batch["seq.mask"][:, -t:]  # the T most recent steps; [B, T]
        b = self.encode_behaviour(self.behaviour(batch["seq.behaviour"][:, -t:]), mask)
        p = self.encode_performance(self.performance(batch["seq.performance"][:, -t:]), mask)
        return torch.cat([b, p], dim=1)
