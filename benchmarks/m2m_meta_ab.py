"""Interleaved A/B timings of M2M's hot spots (issue 4, item 9): each optimised layer against the
implementation it replaced, forward + backward, 1 thread, same inputs, alternating runs, medians.

* meta tower level (MetaUnit [E, H, E], G = m = 2 groups): generated per-row W, applied as an
  elementwise product + sum (previous) vs the bilinear form ``MetaUnit.bilinear`` (now);
* meta attention (k = 4 experts, m = 2 tasks, K = 2): per-row generated W₁ᴱ, W₂ with batched
  matmuls (previous) vs bilinear forms (now);
* one Transformer encoder layer over T = 7 steps: ``nn.TransformerEncoderLayer`` (previous,
  CPU flash-attention kernel) vs ``msmt.layers.sequence.EncoderLayer`` (now).
Each pair is checked to give the same output before it is timed.

    python benchmarks/m2m_meta_ab.py --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from msmt.layers.meta_attention import MetaAttention
from msmt.layers.meta_unit import MetaUnit
from msmt.layers.sequence import EncoderLayer


def tower_previous(unit: MetaUnit, x, s):
    h = x.squeeze(2)
    params = unit.generate(s)
    for i, (w, b) in enumerate(params):
        h = (h.unsqueeze(-1) * w).sum(-2) + b  # [B, G, a, o] product per row
        if i < len(params) - 1:
            h = unit.act(h)
    return h.unsqueeze(2)


def attention_previous(att: MetaAttention, experts, tasks, s):
    B, k, E = experts.shape
    m = tasks.shape[0]
    params = att.meta.generate(s)
    w1, b1 = params[0][0][:, 0], params[0][1][:, 0]  # [B, E+Dt, H1]
    pre = torch.matmul(tasks, w1[:, E:]).unsqueeze(2) + torch.bmm(experts, w1[:, :E]).unsqueeze(1) + b1.view(B, 1, 1, -1)
    h = att.meta.apply(att.meta.act(pre).view(B, 1, m * k, -1), params[1:], first=1)
    alpha = (h @ att.v).view(B, m, k).softmax(-1)
    return torch.bmm(alpha, experts)


def encoder_pair(dim: int, heads: int, ff: int):
    ref = nn.TransformerEncoderLayer(dim, heads, ff, 0.0, batch_first=True)
    mine = EncoderLayer(dim, heads, ff, 0.0)
    with torch.no_grad():
        mine.qkv.weight.copy_(ref.self_attn.in_proj_weight)
        mine.qkv.bias.copy_(ref.self_attn.in_proj_bias)
    for a, b in [(mine.out, ref.self_attn.out_proj), (mine.ff1, ref.linear1), (mine.ff2, ref.linear2), (mine.norm1, ref.norm1), (mine.norm2, ref.norm2)]:
        a.load_state_dict(b.state_dict())
    return ref, mine


def cases(batch: int, scenario_dim: int, expert_dim: int, hidden: int, seq_dim: int):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    s = torch.randn(batch, scenario_dim, generator=g, requires_grad=True)
    unit = MetaUnit([expert_dim, hidden, expert_dim], scenario_dim, groups=2)
    x = torch.randn(batch, 2, 1, expert_dim, generator=g, requires_grad=True)
    yield "meta tower level", (lambda: tower_previous(unit, x, s)), (lambda: unit(x, s))
    att = MetaAttention(expert_dim, expert_dim, scenario_dim, hidden, 2, "relu")
    experts = torch.randn(batch, 4, expert_dim, generator=g, requires_grad=True)
    tasks = torch.randn(2, expert_dim, generator=g)
    yield "meta attention", (lambda: attention_previous(att, experts, tasks, s)), (lambda: att(experts, tasks, s)[0])
    ref, mine = encoder_pair(seq_dim, 2, 2 * seq_dim)
    steps = torch.randn(batch, 7, seq_dim, generator=g, requires_grad=True)
    ignore = torch.rand(batch, 7, generator=g) < 0.3
    ignore[:, -1] = False
    yield "encoder layer (T = 7)", (lambda: ref(steps, src_key_padding_mask=ignore)), (lambda: mine(steps, ignore))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--scenario-dim", type=int, default=16)
    ap.add_argument("--expert-dim", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--seq-dim", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"B = {args.batch}, s = {args.scenario_dim}, E = {args.expert_dim}, H = {args.hidden}, seq_dim = {args.seq_dim}; "
          f"fwd+bwd ms, median of {args.repeats} interleaved runs\n")
    print("| layer | previous ms | now ms | speed-up |\n|---|---:|---:|---:|")
    for name, old, new in cases(args.batch, args.scenario_dim, args.expert_dim, args.hidden, args.seq_dim):
        torch.testing.assert_close(old(), new(), atol=1e-4, rtol=1e-4)
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.repeats):
            for key, fn in (("old", old), ("new", new)):
                start = time.perf_counter()
                fn().sum().backward()
                times[key].append(time.perf_counter() - start)
        a, b = statistics.median(times["old"]) * 1e3, statistics.median(times["new"]) * 1e3
        print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
