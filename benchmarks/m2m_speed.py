"""Training throughput of M2M vs MMoE (issue 4, item 9) and a profile of where M2M's time goes.

Same data for both models: the advertiser simulator's training split (``msmt synth advertiser``
with enough advertisers over 60 days, read and encoded by the training pipeline,
``msmt.experiments.run.load_in_memory``; the last ``--rows`` rows, so that every row has its
panel history), same batch size, the same hidden sizes for both models. Two size sets:
``issue9`` — the sizes of the issue-9 speed benchmark (embedding 16, experts [256, 128], towers
[64], k = 4 experts; ``benchmarks/speed.py``) — and ``small`` (embedding 8, experts [64, 32],
towers [16]), where M2M's per-row generated networks weigh most against MMoE. With the panel
history, M2M encodes it with two Transformers while MMoE reads it through
``model.history_summary`` (the same input, summarised). Each configuration runs in both
precisions (``train.precision`` fp32 and bf16) with the trainer's optimiser (fused AdamW),
``--repeats`` times, interleaved (repeat-major) because the machine is shared. Reported:
samples/s (median, mean ± std), the ratio to MMoE in the same size set, precision and input, the
training FLOPs per sample (``FlopCounterMode``) and the ratio of FLOPs — the speed ratio M2M
would reach if it ran its matmuls as efficiently as MMoE does — and a torch.profiler breakdown.

    python benchmarks/m2m_speed.py --out docs/results/m2m_speed_tables.md
    python benchmarks/m2m_speed.py --rows 3000 --steps 2 --repeats 1 --sizes small   # a smoke run
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from msmt.data.io import atomic_write_text
from msmt.experiments.run import load_in_memory
from msmt.experiments.speed.data import full_batches
from msmt.experiments.speed.limit import op_rows, train_flops
from msmt.experiments.speed.models import optimizer, train_step
from msmt.models import build_model
from msmt.runtime.allocator import tune_allocator
from msmt.spec.batch import Batch, iterate_batches, num_rows, take
from msmt.spec.config import ModelConfig, load_experiment
from msmt.spec.fitted import FittedSchema
from msmt.synth.advertiser import write_advertiser
from msmt.training.losses import task_losses

PROFILE = ["industry", "size_tier", "region", "account_age", "budget_level"]  # the advertiser profile M2M's S̃ reads
SIZES = {
    "issue9": dict(embedding_dim=16, hidden_dims=[256, 128], tower_dims=[64]),
    "small": dict(embedding_dim=8, hidden_dims=[64, 32], tower_dims=[16]),
}
DAYS = 60
TRAIN_ROWS_PER_ADVERTISER = 0.7 * DAYS * 2.5  # training days × rows per advertiser and day (≈ 2.8 known scenarios; 2.5 leaves a margin)
RANGES = ("forward", "backward", "optimizer")


def variant_options(variant: str) -> dict:
    """``"meta_hidden=8,scenario_dim=8"`` -> {"meta_hidden": 8, "scenario_dim": 8} (values read as YAML)."""
    pairs = [item.split("=", 1) for item in variant.split(",")]
    if any(len(p) != 2 or not p[0] for p in pairs):
        raise SystemExit(f"--m2m-variants: '{variant}' is not KEY=VALUE[,KEY=VALUE] (keys of model.m2m)")
    return {k.strip(): yaml.safe_load(v) for k, v in pairs}


def configs(sizes: str, variants: Sequence[str] = ()) -> dict[str, tuple[ModelConfig, bool]]:
    """name -> (model config, whether the data carries the panel history). ``variants``: extra M2M
    rows with other ``model.m2m`` options (e.g. ``meta_hidden=8``), with and without the panel."""
    common = SIZES[sizes]
    m2m = {"num_experts": 4, "profile_features": PROFILE}
    out = {
        "mmoe": (ModelConfig(name="mmoe", **common, mmoe={"num_experts": 4}), False),
        "m2m": (ModelConfig(name="m2m", **common, m2m=m2m), False),
        "mmoe + history": (ModelConfig(name="mmoe", **common, history_summary=True, mmoe={"num_experts": 4}), True),
        "m2m + panel (transformer)": (ModelConfig(name="m2m", **common, m2m=m2m), True),
    }
    for variant in variants:
        options = {**m2m, **variant_options(variant)}
        out[f"m2m [{variant}]"] = (ModelConfig(name="m2m", **common, m2m=options), False)
        out[f"m2m + panel [{variant}]"] = (ModelConfig(name="m2m", **common, m2m=options), True)
    return out


def advertiser_data(rows: int, seed: int = 0) -> dict[bool, tuple[FittedSchema, Batch]]:
    """with_panel -> (fitted schema, the last ``rows`` encoded training rows) of one simulated
    advertiser world; without the panel the same rows carry no ``seq.*`` keys."""
    advertisers = max(10, math.ceil(rows / TRAIN_ROWS_PER_ADVERTISER))
    out = {}
    with tempfile.TemporaryDirectory(prefix="msmt-m2m-speed-") as tmp:
        write_advertiser(Path(tmp), advertisers=advertisers, days=DAYS, seed=seed)
        spec = load_experiment(Path(tmp) / "experiment.yaml").dataset
        for with_panel in (True, False):
            _, schema, encoded = load_in_memory(spec if with_panel else spec.model_copy(update={"panel": None}))
            n = num_rows(encoded["train"])
            out[with_panel] = (schema, take(encoded["train"], slice(max(0, n - rows), n)))
    return out


def train_throughput(model, data: Batch, batch_size: int, steps: int, bf16: bool = False, warmup: int = 3) -> float:
    """Samples/s of forward + loss + backward + fused AdamW step (the trainer's step, msmt.training.loop):
    batch size / the median step time over ``steps`` timed batches (the median, so that a step
    slowed by another process on the shared machine does not count)."""
    step = train_step(model, optimizer(model), model.schema.spec.tasks, bf16=bf16)
    batches = full_batches(data, num_rows(data) // batch_size, batch_size=batch_size)
    model.train()
    for i in range(warmup):
        step(batches[i % len(batches)])
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(batches[i % len(batches)])
        times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def _module_ranges(model) -> list:
    """Forward hooks that open a profiler range ``m2m.<child>`` around each child module; returns the handles."""
    from torch.profiler import record_function

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
    return handles


def profile_m2m(model, data: Batch, batch_size: int, steps: int = 20) -> tuple[str, str]:
    """(per-module forward table, per-op table) from torch.profiler over ``steps`` training steps."""
    from torch.profiler import ProfilerActivity, profile, record_function

    handles = _module_ranges(model)
    opt, tasks = optimizer(model), model.schema.spec.tasks
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
    is_range = lambda e: e.key.startswith("m2m.") or e.key in RANGES  # noqa: E731
    mods = sorted(filter(is_range, events), key=lambda e: -e.cpu_time_total)
    rows = ["| range | CPU ms / step | share of profiled time |", "|---|---:|---:|"]
    rows += [f"| {e.key} | {e.cpu_time_total / 1000 / steps:.2f} | {e.cpu_time_total / total:.0%} |" for e in mods]
    ops = op_rows([e for e in events if not is_range(e)], steps, 15, total)
    return "\n".join(rows), "\n".join(ops)


def measure(args, data: dict[bool, tuple[FittedSchema, Batch]], cells: list[tuple]) -> tuple[dict, dict, dict]:
    """(samples/s per cell and repeat, parameters, training FLOPs per sample), repeat-major."""
    results: dict[tuple, list[float]] = {}
    params, flops = {}, {}
    for rep in range(args.repeats):
        for sz, prec, name in cells:
            cfg, with_panel = configs(sz, args.m2m_variants)[name]
            schema, batch = data[with_panel]
            torch.manual_seed(rep)
            model = build_model(schema, cfg)
            if (sz, name) not in flops:
                params[(sz, name)] = sum(p.numel() for p in model.parameters())
                flops[(sz, name)] = train_flops(model, next(iterate_batches(batch, args.batch_size)))
            sps = train_throughput(model, batch, args.batch_size, args.steps, bf16=prec == "bf16")
            results.setdefault((sz, prec, name), []).append(sps)
            print(f"rep {rep} {sz} {prec} {name}: {sps:,.0f} samples/s", file=sys.stderr)
    return results, params, flops


def throughput_table(cells: list[tuple], results: dict, params: dict, flops: dict) -> str:
    lines = [
        "| sizes | precision | model | parameters | train MFLOP / sample | samples/s median | mean ± std "
        "| vs MMoE (same input) | FLOP ratio (MMoE / model) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for sz, prec, name in cells:
        base_name = "mmoe + history" if "panel" in name or "history" in name else "mmoe"
        v, base = results[(sz, prec, name)], results[(sz, prec, base_name)]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        ratio = statistics.median(a / b for a, b in zip(v, base))  # per-repeat ratio: both measured in one repeat
        fr = flops[(sz, base_name)] / flops[(sz, name)]
        lines.append(
            f"| {sz} | {prec} | {name} | {params[(sz, name)]:,} | {flops[(sz, name)] / 1e6:.2f} | {statistics.median(v):,.0f} "
            f"| {statistics.mean(v):,.0f} ± {sd:,.0f} | **{ratio:.0%}** | {fr:.0%} |"
        )
    return "\n".join(lines)


def page(args, argv, tuned: bool, table: str, profiles: list[tuple[str, str, str]]) -> str:
    cmd = "python benchmarks/m2m_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (
        f"Command: `{cmd.strip()}` (torch {torch.__version__}, {args.rows} rows, batch {args.batch_size}, "
        f"{args.threads} threads, {args.steps} timed steps after 3 warm-up steps, {args.repeats} interleaved repeats; "
        f"ratios are medians of per-repeat ratios; glibc allocator thresholds raised as by the msmt command: {tuned}).\n\n"
        "Sizes: " + "; ".join(f"`{k}` = {v}" for k, v in SIZES.items() if k in args.sizes) + ". "
        "\"vs MMoE (same input)\": M2M without the panel against MMoE, M2M with the panel against MMoE "
        "reading the same panel through `history_summary`.\n\n"
        f"## Training throughput\n\n{table}\n"
    )
    for sz, mod_table, op_table in profiles:
        text += (
            f"\n## Where M2M's time goes (`{sz}` sizes, with the panel, fp32, {args.threads} threads, batch {args.batch_size}, 20 steps)\n\n"
            f"Forward ranges per module (inclusive), and the whole backward / optimiser step:\n\n{mod_table}\n\n"
            f"Top operators by self CPU time (forward and backward):\n\n{op_table}\n"
        )
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    ap.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    ap.add_argument("--m2m-variants", nargs="*", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                    help="extra M2M rows with other model.m2m options, e.g. meta_hidden=8 scenario_dim=8")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tuned = tune_allocator()  # as the msmt command does at start (msmt.runtime.allocator)
    torch.set_num_threads(args.threads)
    data = advertiser_data(args.rows, seed=0)
    cells = [(sz, prec, name) for sz in args.sizes for prec in args.precisions for name in configs(sz, args.m2m_variants)]
    table = throughput_table(cells, *measure(args, data, cells))
    print(table)
    profiles = []
    for sz in args.sizes:
        torch.manual_seed(0)
        m2m = build_model(data[True][0], configs(sz)["m2m + panel (transformer)"][0])
        mod_table, op_table = profile_m2m(m2m, data[True][1], args.batch_size)
        profiles.append((sz, mod_table, op_table))
        print(mod_table)
        print(op_table)
    if args.out:
        atomic_write_text(args.out, page(args, argv, tuned, table, profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
