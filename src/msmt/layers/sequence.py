"""Panel-history encoders for M2M (Zhang et al., WSDM 2022, "Leaving No One Behind", eq. 1-2).

Each row carries its own trailing window of past steps: a behaviour event per step and a vector of
performance metrics per step. Each sequence is embedded, given a learned position embedding and
encoded by multi-head self-attention over **that row's own T positions** (the time axis, never
the batch axis), with padded / missing steps masked out of the keys, then pooled:
F_seq = pool(MH(X_b)) ⊕ pool(MH(X_p)).

Two encoders (``model.m2m.sequence_encoder``):

* ``recency`` (the default): pre-norm layers (x ← x + MH(LN(x)); x ← x + FF(LN(x)); a final LN),
  the performance steps read their raw levels log1p(x) besides the standardised values
  (``seq.raw``), and pooling keeps recency: an attention pool over the observed steps with a
  learned query, concatenated with the most recent step's vector, so yesterday's state reaches
  the output directly instead of being averaged with 13 older days;
* ``mean_pool``: post-norm layers and a mean over the observed steps (msmt 0.1's encoder).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from msmt.spec.batch import peer_channels
from msmt.spec.fitted import PanelEncoding


class EncoderLayer(nn.Module):
    """One post-norm Transformer encoder layer over each row's own T steps (Vaswani et al., 2017):
    x ← LN(x + Drop(MH(x))); x ← LN(x + Drop(W₂ Drop(relu(W₁ x)))), MH as in MODELS.md
    (head_i = softmax(X W_iQ (X W_iK)ᵀ / √d_h + mask) X W_iV, concatenated, times Wᴴ).

    The same computation as ``nn.TransformerEncoderLayer(batch_first=True)``, written with plain
    batched matmuls: for the short windows of a panel (T ≈ 7–28) this is several times faster on
    CPU than the fused flash-attention kernel, forward and backward (docs/results/m2m_speed.md).
    Shapes: ``forward(x [B, T, d], ignore [B, T] bool, True = masked key) -> [B, T, d]``.
    """

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, norm_first: bool = False):
        super().__init__()
        self.heads = heads
        self.norm_first = norm_first
        self.qkv = nn.Linear(dim, 3 * dim)  # W^Q, W^K, W^V of all heads in one matmul
        self.out = nn.Linear(dim, dim)  # Wᴴ
        self.ff1 = nn.Linear(dim, ff_dim)
        self.ff2 = nn.Linear(ff_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def attend(self, x: Tensor, ignore: Tensor) -> Tensor:
        """Multi-head self-attention over each row's steps, heads concatenated and projected ([B, T, d])."""
        B, T, d = x.shape
        h = self.heads
        # one copy to a contiguous [3, B, h, T, d_h]: bmm on the permuted (strided) view is ~100x slower on CPU
        q, k, v = self.qkv(x).view(B, T, 3, h, d // h).permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # each [B, h, T, d_h]
        # scores laid out [B, h, key, query]: the softmax over keys then runs on dim -2, which CPU
        # kernels vectorise over the query axis (a softmax over a last dim of size T ≈ 7 is ~4x slower)
        scores = k @ q.transpose(-1, -2) * (d // h) ** -0.5  # [B, h, T_key, T_query]
        scores = scores.masked_fill(ignore[:, None, :, None], float("-inf"))
        attn = self.dropout(scores.softmax(-2))
        mixed = (attn.transpose(-1, -2) @ v).transpose(1, 2).reshape(B, T, d)  # heads concatenated
        return self.dropout(self.out(mixed))

    def feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.ff2(self.dropout(torch.relu(self.ff1(x)))))

    def forward(self, x: Tensor, ignore: Tensor) -> Tensor:
        if self.norm_first:  # pre-norm (Xiong et al., 2020): the residual stream is never normalised
            x = x + self.attend(self.norm1(x), ignore)
            return x + self.feed_forward(self.norm2(x))
        x = self.norm1(x + self.attend(x, ignore))
        return self.norm2(x + self.feed_forward(x))


ENCODERS = ("recency", "mean_pool")


class SequenceEncoder(nn.Module):
    """[B, T, d] step embeddings + [B, T] observed-mask -> [B, out_dim] pooled encoding.

    ``recency``: out_dim = 2d, [attention pool over the observed steps ⊕ the last step's vector];
    ``mean_pool``: out_dim = d, the mean over the observed steps. Rows with no observed step pool
    to the zero vector (their padding is still unmasked inside the self-attention so that softmax
    never sees an all-masked row, which would give NaN). ``use_transformer=False`` is the paper's
    "w/o Transformer" ablation: position-embedded steps are pooled directly.
    """

    def __init__(
        self, length: int, dim: int, heads: int, layers: int, ff_dim: int, dropout: float, use_transformer: bool,
        kind: str = "mean_pool",
    ):
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"sequence encoder '{kind}' (expected one of {list(ENCODERS)})")
        self.recency = kind == "recency"
        self.position = nn.Parameter(torch.randn(length, dim) * 0.02)  # [T, d]
        n = layers if use_transformer else 0
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ff_dim, dropout, norm_first=self.recency) for _ in range(n))
        if self.recency:
            self.final_norm = nn.LayerNorm(dim)
            self.query = nn.Parameter(torch.zeros(dim))  # attention pool: softmax_j(q · x_j / √d) over observed j
        self.out_dim = 2 * dim if self.recency else dim

    def forward(self, steps: Tensor, mask: Tensor) -> Tensor:
        x = steps + self.position  # [B, T, d]
        if len(self.layers):
            empty = ~mask.any(dim=1, keepdim=True)  # [B, 1]
            ignore = ~mask & ~empty  # True = ignore this key
            for layer in self.layers:
                x = layer(x, ignore)
        weight = mask.unsqueeze(-1).to(x.dtype)  # [B, T, 1]
        if not self.recency:
            return (x * weight).sum(1) / weight.sum(1).clamp_min(1.0)
        x = self.final_norm(x)
        scores = (x @ self.query) * x.shape[-1] ** -0.5  # [B, T]
        scores = scores.masked_fill(~mask, float("-inf"))
        attn = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # a row with nothing observed: all zero
        pooled = (attn.unsqueeze(-1) * x).sum(1)  # [B, d]
        return torch.cat([pooled, x[:, -1]], dim=1)  # the most recent step, observed or not


class PanelEncoder(nn.Module):
    """Behaviour + performance histories -> [B, 2d] (``seq.*`` batch keys, see docs/architecture.md).

    Args:
        panel: the schema's :class:`~msmt.spec.fitted.PanelEncoding`: ``window`` W, ``metrics``
            (F names), ``events`` (event vocabulary; indices 0 = padding, 1 = OOV, 2.. = events).
        length: how many of the most recent steps to use (T ≤ W); None = all W.
    Input keys: ``seq.behaviour`` [B, W] int64, ``seq.performance`` [B, W, F] float32,
    ``seq.mask`` [B, W] bool (True = observed); ``recency`` also ``seq.raw`` [B, W, F] float32 and
    ``seq.present`` [B, W, F] bool; with ``panel.group_keys`` the performance steps also read the
    group channel, log1p of ``seq.group_raw`` [B, W, F], ``seq.group_count`` and
    ``seq.group_active`` [B, W] (the advertiser's other scenarios, and how many of them were
    live), and with ``panel.cross_section_keys`` the same three ``seq.cross_*`` (the scenario's
    other advertisers); a step counts as observed when the unit or any of its peers has a row. Output: [B, out_dim] (2·d for
    ``mean_pool``, 4·d for ``recency``).
    """

    def __init__(
        self, panel: PanelEncoding, length: int | None, dim: int, heads: int, layers: int, ff_dim: int, dropout: float,
        use_transformer: bool, kind: str = "mean_pool",
    ):
        super().__init__()
        window = int(panel.window)
        self.length = window if length is None else min(int(length), window)
        self.raw_levels = kind == "recency"  # log1p(raw) and presence per metric beside the standardised values
        # the peer channels (group, cross-section): log1p of the other units' sums, count and active count per step
        self.peers = [prefix for prefix, _ in peer_channels(panel)]
        F = len(panel.metrics)
        self.behaviour = nn.Embedding(len(panel.events) + 2, dim, padding_idx=0)
        self.performance = nn.Linear(F * (3 if self.raw_levels else 1) + (F + 2) * len(self.peers), dim)
        args = (self.length, dim, heads, layers, ff_dim, dropout, use_transformer, kind)
        self.encode_behaviour = SequenceEncoder(*args)
        self.encode_performance = SequenceEncoder(*args)
        self.out_dim = self.encode_behaviour.out_dim + self.encode_performance.out_dim

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        t = self.length
        mask = batch["seq.mask"][:, -t:]  # the T most recent steps; [B, T]
        # what a step without a row holds never matters: padding id, zero values (the recency
        # pool reads the last step even when it is missing: "no row yesterday" is information)
        b = self.encode_behaviour(self.behaviour(batch["seq.behaviour"][:, -t:] * mask), mask)
        perf = batch["seq.performance"][:, -t:] * mask.unsqueeze(-1)  # [B, T, F]
        if self.raw_levels:
            present = batch["seq.present"][:, -t:].to(perf.dtype)
            perf = torch.cat([perf, torch.log1p(batch["seq.raw"][:, -t:].clamp_min(0.0)), present], dim=-1)  # [B, T, 3F]
        for prefix in self.peers:  # the other units: a step counts as observed when the unit or its peers have a row
            count, active = batch[f"{prefix}_count"][:, -t:], batch[f"{prefix}_active"][:, -t:]  # [B, T] each
            peers = torch.log1p(torch.cat([batch[f"{prefix}_raw"][:, -t:], count.unsqueeze(-1), active.unsqueeze(-1)], dim=-1))  # [B, T, F+2]
            perf = torch.cat([perf, peers.to(perf.dtype)], dim=-1)
            mask = mask | (count > 0)
        p = self.encode_performance(self.performance(perf), mask)
        return torch.cat([b, p], dim=1)
