"""Training throughput of M2M vs MMoE (issue 4, item 9) and a profile of where M2M's time goes.

Same data (the in-memory toy advertiser panel, msmt.data.toy_panel), same batch size, comparable
hidden sizes (experts [64, 32] for both, k = 4 experts, embedding 8). Every configuration is run
``--repeats`` times, interleaved (repeat-major order) because the machine is shared, with 1 and
2 intra-op threads. Reports samples/s (median, mean ± std over repeats) and writes a Markdown
file with the tables and the torch.profiler breakdown.

    python benchmarks/m2m_speed.py --out docs/results/m2m_speed.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from msmt.config import ModelConfig
from msmt.data.io import atomic_write_text
from msmt.data.tensorize import iterate_batches
from msmt.data.toy_panel import make_toy_panel, without_panel
from msmt.losses import task_losses
from msmt.models import build_model

PROFILE = ["industry", "size_tier", "budget_level"]
# M2M's default sizes before the speed work (issue 4, item 9), measured for comparison
PREVIOUS = {"scenario_dim": 32, "tower_levels": 2, "seq_dim": 32, "seq_ff_dim": 64}


def configs() -> dict[str, tuple[ModelConfig, bool]]:
    """name -> (model config, whether the data carries the panel history)."""
    common = dict(embedding_dim=8, hidden_dims=[64, 32], tower_dims=[16])
    return {
        "mmoe": (ModelConfig(name="mmoe", **common, mmoe={"num_experts": 4}), False),
        "m2m (no panel)": (ModelConfig(name="m2m", **common, m2m={"num_experts": 4, "profile_features": PROFILE}), False),
        "m2m (panel, transformer)": (ModelConfig(name="m2m", **common, m2m={"num_experts": 4, "profile_features": PROFILE}), True),
        "m2m (no panel, previous sizes)": (ModelConfig(name="m2m", **common, m2m={"num_experts": 4, "profile_features": PROFILE, **PREVIOUS}), False),
        "m2m (panel, previous sizes)": (ModelConfig(name="m2m", **common, m2m={"num_experts": 4, "profile_features": PROFILE, **PREVIOUS}), True),
    }


def train_throughput(model, data, tasks, batch_size: int, steps: int, warmup: int = 3) -> float:
    """Samples/s of forward + loss + backward + AdamW step: batch size / the median step time over
    ``steps`` timed batches (the median, not the mean, so that a step slowed by another process on
    the shared machine does not count)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = list(iterate_batches(data, batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)))
    batches = [b for b in batches if b["scenario"].shape[0] == batch_size]
    model.train()

    def step(b):
        losses = task_losses(tasks, model(b), b["labels"], b["weight"])
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    for i in range(warmup):
        step(batches[i % len(batches)])
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(batches[i % len(batches)])
        times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def profile_m2m(model, data, tasks, batch_size: int, steps: int = 20) -> tuple[str, str]:
    """(per-module forward table, per-op table) from torch.profiler over ``steps`` training steps."""
    from torch.profiler import ProfilerActivity, profile, record_function

    ranges = {}

    def pre(name):
        def hook(module, args):
            ranges[name] = record_function(f"m2m.{name}")
            ranges[name].__enter__()

        return hook

    def post(name):
        def hook(module, args, out):
            ranges.pop(name).__exit__(None, None, None)

        return hook

    handles = []
    for name, child in model.named_children():
        handles += [child.register_forward_pre_hook(pre(name)), child.register_forward_hook(post(name))]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = next(iterate_batches(data, batch_size))
    model.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("forward"):
                out = model(batch)
            losses = task_losses(tasks, out, batch["labels"], batch["weight"])
            opt.zero_grad(set_to_none=True)
            with record_function("backward"):
                sum(losses.values()).backward()
            with record_function("optimizer"):
                opt.step()
    for h in handles:
        h.remove()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mods = sorted((e for e in events if e.key.startswith("m2m.") or e.key in ("forward", "backward", "optimizer")), key=lambda e: -e.cpu_time_total)
    rows = ["| range | CPU ms / step | share of profiled time |", "|---|---:|---:|"]
    rows += [f"| {e.key} | {e.cpu_time_total / 1000 / steps:.2f} | {e.cpu_time_total / total:.0%} |" for e in mods]
    ops = sorted((e for e in events if not e.key.startswith("m2m.") and e.key not in ("forward", "backward", "optimizer")), key=lambda e: -e.self_cpu_time_total)[:15]
    op_rows = ["| op | self CPU ms / step | share | calls / step |", "|---|---:|---:|---:|"]
    op_rows += [f"| `{e.key}` | {e.self_cpu_time_total / 1000 / steps:.2f} | {e.self_cpu_time_total / total:.0%} | {e.count / steps:.0f} |" for e in ops]
    return "\n".join(rows), "\n".join(op_rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    toy = make_toy_panel(rows=args.rows, seed=0)
    plain = without_panel(toy)
    tasks = toy.schema.spec.tasks
    cfgs = configs()
    results: dict[tuple[str, int], list[float]] = {}
    params = {}
    for rep in range(args.repeats):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, (cfg, with_panel) in cfgs.items():
                data = toy if with_panel else plain
                torch.manual_seed(rep)
                model = build_model(data.schema, cfg)
                params[name] = sum(p.numel() for p in model.parameters())
                sps = train_throughput(model, data.batch, tasks, args.batch_size, args.steps)
                results.setdefault((name, threads), []).append(sps)
                print(f"rep {rep} threads {threads} {name}: {sps:,.0f} samples/s", file=sys.stderr)

    lines = [
        "| model | threads | parameters | samples/s median | mean ± std | vs MMoE (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for threads in args.threads:
        base = statistics.median(results[("mmoe", threads)])
        for name in cfgs:
            v = results[(name, threads)]
            med = statistics.median(v)
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            lines.append(f"| {name} | {threads} | {params[name]:,} | {med:,.0f} | {statistics.mean(v):,.0f} ± {sd:,.0f} | {med / base:.0%} |")
    table = "\n".join(lines)
    print(table)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    m2m = build_model(toy.schema, cfgs["m2m (panel, transformer)"][0])
    mod_table, op_table = profile_m2m(m2m, toy.batch, tasks, args.batch_size)
    print(mod_table)
    print(op_table)
    if args.out:
        cmd = "python benchmarks/m2m_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
        text = (
            f"Command: `{cmd}` (torch {torch.__version__}, {args.rows} rows, batch {args.batch_size}, "
            f"{args.steps} timed steps after 3 warm-up steps, {args.repeats} interleaved repeats).\n\n"
            f"## Training throughput\n\n{table}\n\n"
            f"## Where M2M's time goes (1 thread, batch {args.batch_size}, 20 steps)\n\n"
            f"Forward ranges per module (inclusive), and the whole backward / optimiser step:\n\n{mod_table}\n\n"
            f"Top operators by self CPU time (forward and backward):\n\n{op_table}\n"
        )
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
