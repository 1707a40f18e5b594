"""Speed benchmark (issue 9): msmt vs torch-rechub, side by side in one run, plus the CPU ceiling.

Models: Shared-Bottom, MMoE, PLE, ESMM (both libraries) and M2M (msmt only; torch-rechub has no
M2M). Same synthetic data (``--rows`` rows, 9 categorical fields including the scenario, two
binary tasks click ⊇ purchase), same embedding dim, same expert/tower widths, same optimiser
(Adam, lr 1e-3), batch 1024, 2 intra-op threads. Measurements are interleaved (repeat-major:
every model and library once per repeat) and summarised by their median because the machine is
shared; the load average is recorded before and after.

Reported per model and library:
* training samples/s (forward + loss + backward + Adam step) on pre-sliced tensor batches, and
  for torch-rechub also with its own input pipeline (``DataGenerator``-style ``DataLoader`` over
  ``TorchDataset``), the way its examples train;
* inference rows/s (eval mode, batch 1024; msmt under ``torch.inference_mode``);
* peak memory of 20 training steps (RSS high-water mark minus the RSS before building the model,
  in a fresh subprocess per model);
* test AUC after ``--epochs`` epochs on the same 80/10/10 split with the same seed;
* FLOPs per training sample (``torch.utils.flop_counter.FlopCounterMode``), a GEMM
  microbenchmark of this CPU at each model's dense-layer shapes (FLOP-weighted), the resulting ceiling in samples/s,
  msmt's fraction of it, and a ``torch.profiler`` breakdown of one msmt model's training step;
* the loader alone (``iterate_batches``) in rows/s.

msmt's side (data, models, levers, FLOP counting, timing) is :mod:`msmt.experiments.speed`;
torch-rechub's side, the child processes and the tables are here.

    python benchmarks/speed.py --levers --out docs/speed_raw.md   # the full run (1M rows); reading: docs/speed.md
    python benchmarks/speed.py --rows 100000 --repeats 3      # a smaller run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from msmt.data.io import atomic_write_text
from msmt.experiments.speed.data import BATCH, FIELDS, SCENARIOS, feature_columns, full_batches, head, make_data, split
from msmt.experiments.speed.levers import LEVERS, lever_impl, lever_variant, split_impl
from msmt.experiments.speed.limit import effective_rate, gemm_rates, linear_shapes, profile_step, train_flops
from msmt.experiments.speed.models import (
    AUTOTUNED,
    BF16,
    COMPILED,
    COMPILED_BF16,
    COMPILED_FP32,
    EMB,
    EXPERTS,
    HIDDEN,
    MODELS,
    ONNX,
    TOWER,
    compiled_predictor,
    held_out_auc,
    onnx_runner,
    optimizer,
    schema_of,
    speed_model,
    train_epochs,
    train_step,
)
from msmt.experiments.speed.timing import loader_alone, loader_rate, med, pipeline_rate, ratio, timed
from msmt.runtime.allocator import tune_allocator

# ------------------------------------------------------------------ torch-rechub's side


def rechub_model(name: str) -> torch.nn.Module | None:
    """torch-rechub's model ``name`` at msmt's sizes (None: torch-rechub has no such model)."""
    from torch_rechub.basic.features import SparseFeature
    from torch_rechub.models.multi_task import ESMM, MMOE, PLE, SharedBottom

    feats = [SparseFeature(f, n + 2, embed_dim=EMB) for f, n in FIELDS.items()]
    feats.append(SparseFeature("scenario", len(SCENARIOS) + 1, embed_dim=EMB))
    mlp = {"dims": HIDDEN, "activation": "relu", "dropout": 0.0}
    tower = {"dims": TOWER, "activation": "relu", "dropout": 0.0}
    types = ["classification", "classification"]
    if name == "shared_bottom":
        return SharedBottom(feats, types, mlp, [tower, tower])
    if name == "mmoe":
        return MMOE(feats, types, EXPERTS, mlp, [tower, tower])
    if name == "ple":
        return PLE(feats, types, 1, 1, 2, mlp, [tower, tower])
    if name == "esmm":  # towers = hidden + tower dims, like msmt's ESMM
        dims = {"dims": HIDDEN + TOWER, "activation": "relu", "dropout": 0.0}
        return ESMM(feats[: len(FIELDS) // 2], feats[len(FIELDS) // 2 :], dims, dims)
    return None


def rechub_step(model, opt, esmm: bool):
    """``step(x, y)``: BCE on both tasks' probabilities, backward, Adam step."""
    bce = torch.nn.BCELoss()

    def step(x, y):
        p = model(x)  # probabilities; ESMM: [cvr, ctr, ctcvr]
        cols = (1, 2) if esmm else (0, 1)
        loss = bce(p[:, cols[0]], y[:, 0]) + bce(p[:, cols[1]], y[:, 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def rechub_batches(cols, labels, n, seed=0) -> list[tuple[dict, torch.Tensor]]:
    """The first ``n`` (columns, labels) batches of one shuffled pass."""
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    out = []
    for i in range(n):
        idx = order[i * BATCH : (i + 1) * BATCH]
        out.append(({k: v[idx] for k, v in cols.items()}, labels[idx]))
    return out


def rechub_loader_rate(cols, labels, steps: int, model, opt, esmm: bool) -> float:
    """Training through torch-rechub's own input pipeline (TorchDataset + DataLoader, as DataGenerator builds it)."""
    from torch.utils.data import DataLoader
    from torch_rechub.utils.data import TorchDataset

    x = {k: v.numpy() for k, v in cols.items()}
    loader = DataLoader(TorchDataset(x, labels.numpy()), batch_size=BATCH, shuffle=True, num_workers=0)
    step = rechub_step(model, opt, esmm)
    return pipeline_rate(loader, steps, lambda b: step(b[0], b[1].float()))


def rechub_train_epochs(name: str, model, train: dict, epochs: int, seed: int = 0) -> None:
    """``epochs`` passes, shuffled and batched as msmt's (epoch e with seed ``seed + e``), Adam lr 1e-3."""
    model.train()
    step = rechub_step(model, torch.optim.Adam(model.parameters(), lr=1e-3), name == "esmm")
    cols, y = feature_columns(train), train["labels"]
    for ep in range(epochs):
        order = torch.randperm(y.shape[0], generator=torch.Generator().manual_seed(seed + ep))
        for s in range(0, y.shape[0], BATCH):
            idx = order[s : s + BATCH]
            step({k: v[idx] for k, v in cols.items()}, y[idx])


@torch.inference_mode()
def rechub_auc(name: str, model, test: dict) -> tuple[float, float]:
    """(click AUC, purchase AUC) of torch-rechub's probabilities on ``test``."""
    model.eval()
    cols, preds = feature_columns(test), []
    for s in range(0, test["labels"].shape[0], 8192):
        p = model({k: v[s : s + 8192] for k, v in cols.items()})
        preds.append(p[:, 1:] if name == "esmm" else p)
    p, y = torch.cat(preds).numpy(), test["labels"].numpy()
    return roc_auc_score(y[:, 0], p[:, 0]), roc_auc_score(y[:, 1], p[:, 1])


# ------------------------------------------------------------------ child processes


def _rss_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def memory_child(impl: str, name: str) -> None:
    """Print the RSS high-water mark of 20 training steps, in MB above the RSS before the model."""
    torch.set_num_threads(2)
    data, schemas = make_data(30 * BATCH, seed=0)
    if impl == "msmt":
        batches = full_batches(data, 20)
    else:
        batches = rechub_batches(feature_columns(data), data["labels"], 20)
    before = _rss_kb("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    torch.manual_seed(0)
    if impl == "msmt":
        model = speed_model(name, schemas)
        step = train_step(model, optimizer(model), schema_of(name, schemas).spec.tasks)
        for b in batches:
            step(b)
    else:
        model = rechub_model(name)
        step = rechub_step(model, torch.optim.Adam(model.parameters(), lr=1e-3), name == "esmm")
        for b in batches:
            step(*b)
    print(json.dumps({"peak_mb": (_rss_kb("VmHWM:") - before) / 1024}))


def allocator_child(name: str, precision: str, steps: int) -> None:
    """Train ``steps`` steps in this fresh process; print samples/s and minor page faults per step."""
    import resource

    tuned = tune_allocator()  # what the msmt command does at start; MSMT_TUNE_ALLOCATOR=0 turns it off
    torch.set_num_threads(2)
    data, schemas = make_data((steps + 5) * BATCH, seed=0)
    batches = full_batches(data, steps + 5)
    torch.manual_seed(0)
    model = speed_model(name, schemas).train()
    step = train_step(model, optimizer(model), schema_of(name, schemas).spec.tasks, bf16=precision == "bf16")
    for b in batches[:5]:
        step(b)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rate, _ = timed(step, batches[5:], warmup=0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    loader = loader_alone(data, passes=5)  # msmt's loader alone over the same rows, 5 shuffled passes
    print(json.dumps({"rate": rate, "faults": faults, "tuned": tuned, "loader": loader}))


def run_child(args: list[str], **env: str) -> dict:
    """This script in a fresh process with ``args`` (a hidden ``--_…`` mode): the JSON of its last line."""
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True,
        env={**os.environ, "OMP_NUM_THREADS": "2", **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_memory(impl: str, name: str) -> float:
    return run_child(["--_memory", impl, name])["peak_mb"]


def allocator_rates(name: str, precision: str, steps: int, tune: bool) -> dict:
    return run_child(["--_alloc", name, precision, str(steps)], MSMT_TUNE_ALLOCATOR="1" if tune else "0")


# ------------------------------------------------------------------ measurements


@dataclass
class Inputs:
    """The data every measurement uses: splits, pre-sliced batches for both libraries."""

    schemas: dict
    train: dict
    test: dict
    cols: dict  # torch-rechub's columns of the training split
    labels: torch.Tensor
    mb: list  # msmt batches
    rb: list  # torch-rechub batches
    steps: int


@dataclass
class Results:
    """Every measurement; rates are lists over repeats (per repeat: (wall, CPU) pairs or floats)."""

    tuned: bool
    load_before: tuple
    load_after: tuple = ()
    loader: list = field(default_factory=list)  # rows/s of the loader alone
    train: dict = field(default_factory=dict)  # (model, variant) -> [(wall rate, cpu rate)]
    infer: dict = field(default_factory=dict)
    pipe: dict = field(default_factory=dict)  # (model, variant) -> [samples/s through the own loader]
    params: dict = field(default_factory=dict)
    mem: dict = field(default_factory=dict)  # (model, variant) -> peak MB
    alloc: dict = field(default_factory=dict)  # (model, precision, tuned) -> [{"rate", "faults", "loader"}]
    alloc_models: list = field(default_factory=list)
    auc: dict = field(default_factory=dict)  # (model, variant) -> (click AUC, purchase AUC)
    n_quality: int = 0
    flops: dict = field(default_factory=dict)
    gemm: dict = field(default_factory=dict)
    gemm_bf16: dict = field(default_factory=dict)
    profile: str = ""


def build_inputs(rows: int, steps: int) -> Inputs:
    t0 = time.perf_counter()
    data, schemas = make_data(rows, seed=0)
    train, test = split(data)
    cols, labels = feature_columns(train), train["labels"]
    inputs = Inputs(schemas, train, test, cols, labels, full_batches(train, steps + 3), rechub_batches(cols, labels, steps + 3), steps)
    print(f"data: {rows:,} rows in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return inputs


def implementations(models: list[str]) -> dict[str, list[str]]:
    """model -> the variants timed in every repeat: msmt, msmt bf16 and torch-rechub where it has the model."""
    return {name: ["msmt", BF16] + (["rechub"] if rechub_model(name) is not None else []) for name in models}


def _log_rate(rep: int, name: str, impl: str, sps, ips=None) -> None:
    line = f"rep {rep} {name:14s} {impl:30s} train {sps[0]:9,.0f}/s (cpu {sps[1]:9,.0f})"
    print(line + (f" infer {ips[0]:9,.0f}/s" if ips is not None else ""), file=sys.stderr)


def measure_msmt(name: str, impl: str, inp: Inputs, res: Results, scorers: dict, rep: int) -> None:
    """One repeat of an msmt variant: training rate, own-loader rate, inference rates (eager; the
    adopted model also no_grad, ONNX and compiled). A lever variant is timed in training only."""
    torch.manual_seed(rep)
    model = speed_model(name, inp.schemas)
    res.params.setdefault((name, impl), sum(p.numel() for p in model.parameters()))
    opt = optimizer(model)
    base_impl, lever = split_impl(impl)
    if lever:
        model, opt = lever_variant(model, lever)
    model.train()
    tasks, bf16 = schema_of(name, inp.schemas).spec.tasks, base_impl == BF16
    batches = inp.mb[: inp.steps]
    sps = timed(train_step(model, opt, tasks, bf16=bf16), batches)
    if impl in ("msmt", BF16):
        res.pipe.setdefault((name, impl), []).append(loader_rate(inp.train, inp.steps // 2, train_step(model, opt, tasks, bf16=bf16), seed=rep))
    res.train.setdefault((name, impl), []).append(sps)
    if lever:  # training levers: inference is measured on the adopted model only
        _log_rate(rep, name, impl, sps)
        return
    model.eval()
    if impl == "msmt":
        with torch.no_grad():
            res.infer.setdefault((name, "msmt no_grad"), []).append(timed(model, batches))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ips = timed(model, batches)
    if impl == "msmt":
        res.infer.setdefault((name, ONNX), []).append(timed(scorers[(name, ONNX)], batches))
        for label in COMPILED:
            res.infer.setdefault((name, label), []).append(timed(scorers[(name, label)], batches))
    res.infer.setdefault((name, impl), []).append(ips)
    _log_rate(rep, name, impl, sps, ips)


def measure_rechub(name: str, inp: Inputs, res: Results, rep: int) -> None:
    """One repeat of torch-rechub's model: training rate, inference rate, own-DataLoader rate."""
    torch.manual_seed(rep)
    model = rechub_model(name)
    res.params.setdefault((name, "rechub"), sum(p.numel() for p in model.parameters()))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = rechub_step(model, opt, name == "esmm")
    sps = timed(lambda b: step(*b), inp.rb[: inp.steps])
    model.eval()
    with torch.no_grad():
        ips = timed(lambda b: model(b[0]), inp.rb[: inp.steps])
    model.train()
    res.pipe.setdefault((name, "rechub"), []).append(rechub_loader_rate(inp.cols, inp.labels, inp.steps // 2, model, opt, name == "esmm"))
    res.train.setdefault((name, "rechub"), []).append(sps)
    res.infer.setdefault((name, "rechub"), []).append(ips)
    _log_rate(rep, name, "rechub", sps, ips)


def measure_throughput(models: list[str], impls: dict, levers: bool, repeats: int, threads: int, inp: Inputs, res: Results) -> None:
    """Every variant of every model once per repeat (repeat-major, so that load hits all alike)."""
    for rep in range(repeats):
        res.loader.append(loader_alone(inp.train, seed=rep))
    variants = {name: impls[name] + ([lever_impl(*lv) for lv in LEVERS.get(name, [])] if levers else []) for name in models}
    scorers = {(name, ONNX): onnx_runner(name, inp.schemas, inp.mb[0], threads) for name in models}
    scorers |= {(name, label): compiled_predictor(name, inp.schemas, inp.mb[0], *COMPILED[label]) for name in models for label in COMPILED}
    print(f"compiled {len(scorers) - len(models)} predictors", file=sys.stderr)
    for rep in range(repeats):
        for name in models:
            for impl in variants[name]:
                if impl == "rechub":
                    measure_rechub(name, inp, res, rep)
                else:
                    measure_msmt(name, impl, inp, res, scorers, rep)


def measure_memory(models: list[str], impls: dict, res: Results) -> None:
    for name in models:
        for impl in impls[name]:
            if impl != BF16:
                res.mem[(name, impl)] = peak_memory(impl, name)


def measure_allocator(models: list[str], repeats: int, steps: int, res: Results) -> None:
    """Default against tuned glibc malloc, in fresh processes, alternated (MMoE and M2M only)."""
    res.alloc_models = [n for n in ("mmoe", "m2m") if n in models]
    for rep in range(repeats):
        for name in res.alloc_models:
            for precision in ("fp32", "bf16"):
                for tune in (False, True):
                    res.alloc.setdefault((name, precision, tune), []).append(allocator_rates(name, precision, steps, tune))
        print(f"allocator rep {rep} done", file=sys.stderr)


def measure_quality(models: list[str], impls: dict, quality_rows: int, epochs: int, inp: Inputs, res: Results) -> None:
    """Test AUC of every variant after ``epochs`` on the first ``quality_rows`` training rows; the
    fp32 msmt model is also scored compiled (bf16, with and without autotune)."""
    for name in models:
        for impl in impls[name]:
            torch.manual_seed(0)
            start = time.perf_counter()
            if impl == "rechub":
                model = rechub_model(name)
                rechub_train_epochs(name, model, head(inp.train, res.n_quality), epochs)
                res.auc[(name, impl)] = rechub_auc(name, model, inp.test)
            else:
                model = speed_model(name, inp.schemas)
                train_epochs(model, head(inp.train, res.n_quality), epochs, bf16=impl == BF16)
                res.auc[(name, impl)] = held_out_auc(model, inp.test, bf16=impl == BF16)
            if impl == "msmt":
                for label in (COMPILED_BF16, AUTOTUNED):
                    res.auc[(name, label)] = held_out_auc(model, inp.test, compiled=label)
            print(f"quality {name} {impl}: AUC {res.auc[(name, impl)]} ({time.perf_counter() - start:.0f}s)", file=sys.stderr)


def measure_limit(models: list[str], inp: Inputs, res: Results) -> None:
    """FLOPs per training sample and this CPU's GEMM rate at each model's shapes; a profile of MMoE's step."""
    shapes = {}
    for name in models:
        model = speed_model(name, inp.schemas)
        res.flops[name] = train_flops(model, inp.mb[0])
        shapes[name] = linear_shapes(model)
    all_shapes = {sh for v in shapes.values() for sh in v}
    rates32, rates16 = gemm_rates(all_shapes), gemm_rates(all_shapes, dtype=torch.bfloat16)
    res.gemm = {name: effective_rate(shapes[name], rates32) for name in models}
    res.gemm_bf16 = {name: effective_rate(shapes[name], rates16) for name in models}
    model = speed_model("mmoe", inp.schemas)
    res.profile = profile_step(train_step(model, optimizer(model), inp.schemas["plain"].spec.tasks), inp.mb)


# ------------------------------------------------------------------ report


def _fmt_load(load) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


def header_lines(args, cmd: str, res: Results) -> list[str]:
    return [
        "# Speed: msmt vs torch-rechub",
        "",
        f"Command: `{cmd.strip()}` (torch {torch.__version__}, torch-rechub "
        f"{_version('torch-rechub')}, {args.threads} threads, batch {BATCH}, {args.rows:,} rows, "
        f"{args.repeats} interleaved repeats of {args.steps} steps; medians).",
        f"Load average (1/5/15 min) before: {_fmt_load(res.load_before)}; after: {_fmt_load(res.load_after)} "
        f"(the 2-core machine is shared, so absolute numbers move; ratios are within one repeat's conditions).",
        f"Sizes: embedding {EMB} for 9 fields (8 features + the scenario), experts / bottom {HIDDEN}, towers "
        f"{TOWER}, MMoE {EXPERTS} experts, PLE 1 level with 1 task expert + 2 shared experts, ESMM towers "
        f"{HIDDEN + TOWER}. torch-rechub's MLP adds BatchNorm1d after every hidden Linear (its design; msmt has none "
        "so that a row's output does not depend on its batch).",
        "",
    ]


def throughput_table(models: list[str], impls: dict, res: Results) -> list[str]:
    lines = [
        "## Throughput",
        "",
        "| model | msmt train/s | rechub train/s | ratio | ratio (CPU time) | msmt train/s, own loader "
        "| rechub train/s, own DataLoader | ratio | msmt infer/s | rechub infer/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in models:
        mt, mi, mp = res.train[(name, "msmt")], res.infer[(name, "msmt")], res.pipe[(name, "msmt")]
        if "rechub" in impls[name]:
            rt, ri, rp = res.train[(name, "rechub")], res.infer[(name, "rechub")], res.pipe[(name, "rechub")]
            lines.append(
                f"| {name} | {med(mt, 0):,.0f} | {med(rt, 0):,.0f} | **{ratio(mt, rt):.2f}×** | {ratio(mt, rt, 1):.2f}× "
                f"| {med(mp):,.0f} | {med(rp):,.0f} | **{ratio(mp, rp):.1f}×** | {med(mi, 0):,.0f} | {med(ri, 0):,.0f} | **{ratio(mi, ri):.2f}×** |"
            )
        else:
            lines.append(f"| {name} | {med(mt, 0):,.0f} | — | — | — | {med(mp):,.0f} | — | — | {med(mi, 0):,.0f} | — | — |")
    return lines + [
        "",
        "Ratios are medians of per-repeat ratios (msmt and torch-rechub measured back to back in each repeat). "
        "\"rechub train/s\" feeds torch-rechub's model the same pre-sliced tensor batches as msmt (model cost "
        "only); \"own loader\" / \"own DataLoader\": each library trains through its own input pipeline over the "
        "shuffled training split (msmt: `iterate_batches`, as its trainer; torch-rechub: `TorchDataset` + "
        "`DataLoader`, the pipeline of its examples and `MTLTrainer`). "
        "\"CPU time\": samples per CPU-second of the process instead of per wall-clock second.",
        "",
    ]


def bf16_table(models: list[str], impls: dict, res: Results) -> list[str]:
    train, infer, pipe = res.train, res.infer, res.pipe
    rows = []
    for name in models:
        row = f"| {name} | {med(train[(name, BF16)], 0):,.0f} | {ratio(train[(name, BF16)], train[(name, 'msmt')]):.2f}× | "
        if "rechub" in impls[name]:
            row += (
                f"**{ratio(train[(name, BF16)], train[(name, 'rechub')]):.2f}×** | **{ratio(pipe[(name, BF16)], pipe[(name, 'rechub')]):.1f}×** | "
                f"{med(infer[(name, BF16)], 0):,.0f} | **{ratio(infer[(name, BF16)], infer[(name, 'rechub')]):.2f}×** |"
            )
        else:
            row += f"— | — | {med(infer[(name, BF16)], 0):,.0f} | — |"
        rows.append(row)
    per_repeat = "; ".join(
        f"{name} " + ", ".join(f"{a / b:.2f}×" for a, b in zip(pipe[(name, BF16)], pipe[(name, "rechub")]))
        for name in models
        if "rechub" in impls[name]
    )
    return [
        "### With `train.precision=bf16`",
        "",
        "The same msmt models trained with their forward passes under `torch.autocast(bfloat16)` (matmuls in "
        "bfloat16; weights, gradients, losses and the fused AdamW update in float32) and scored likewise; "
        "torch-rechub as above (float32, its only mode). AUC in the quality table below.",
        "",
        "| model | msmt bf16 train/s | vs msmt fp32 | vs rechub | own loaders: msmt bf16 vs rechub | msmt bf16 infer/s | vs rechub |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Own loaders, msmt bf16 vs rechub, per repeat: " + per_repeat + ".",
        "",
    ]


def m2m_line(models: list[str], res: Results) -> list[str]:
    """Issue 4's target line (M2M's training rate against MMoE's), when both models ran."""
    if not {"m2m", "mmoe"} <= set(models):
        return []
    m2m, mmoe = res.train[("m2m", "msmt")], res.train[("mmoe", "msmt")]
    return [
        f"M2M against MMoE (issue 4's target: ≥ 50% of MMoE's training samples/s at comparable hidden sizes), "
        f"median of per-repeat ratios: **{ratio(m2m, mmoe):.0%}** in float32, "
        f"**{ratio(res.train[('m2m', BF16)], res.train[('mmoe', BF16)]):.0%}** in bfloat16 "
        f"(per repeat, fp32: {', '.join(f'{a[0] / b[0]:.0%}' for a, b in zip(m2m, mmoe))}).",
        "",
    ]


def onnx_table(models: list[str], impls: dict, threads: int, res: Results) -> list[str]:
    infer = res.infer
    return [
        "### Inference through ONNX Runtime",
        "",
        f"The same msmt models exported with `msmt.scoring.export` (what `msmt export --format onnx` writes and `msmt serve "
        f"--backend onnx` runs), scored by onnxruntime with {threads} intra-op threads on the same batches.",
        "",
        "| model | msmt ONNX infer/s | vs msmt torch | vs rechub |",
        "|---|---:|---:|---:|",
        *[
            f"| {name} | {med(infer[(name, ONNX)], 0):,.0f} | {ratio(infer[(name, ONNX)], infer[(name, 'msmt')]):.2f}× | "
            + (f"**{ratio(infer[(name, ONNX)], infer[(name, 'rechub')]):.2f}×** |" if "rechub" in impls[name] else "— |")
            for name in models
        ],
        "",
    ]


def _compiled_row(name: str, has_rechub: bool, res: Results) -> str:
    infer, auc = res.infer, res.auc
    vs_rechub = lambda label: f"**{ratio(infer[(name, label)], infer[(name, 'rechub')]):.2f}×** | " if has_rechub else "— | "  # noqa: E731
    return (
        f"| {name} | {med(infer[(name, COMPILED_FP32)], 0):,.0f} | {ratio(infer[(name, COMPILED_FP32)], infer[(name, 'msmt')]):.2f}× "
        f"| {med(infer[(name, COMPILED_BF16)], 0):,.0f} | {ratio(infer[(name, COMPILED_BF16)], infer[(name, BF16)]):.2f}× | "
        + vs_rechub(COMPILED_BF16)
        + f"{med(infer[(name, AUTOTUNED)], 0):,.0f} | {ratio(infer[(name, AUTOTUNED)], infer[(name, COMPILED_BF16)]):.2f}× | "
        + vs_rechub(AUTOTUNED)
        + " | ".join(f"{auc[(name, label)][0]:.4f} / {auc[(name, label)][1]:.4f}" if (name, label) in auc else "—" for label in (COMPILED_BF16, AUTOTUNED))
        + " |"
    )


def compiled_table(models: list[str], impls: dict, threads: int, res: Results) -> list[str]:
    return [
        "### Inference compiled by TorchInductor (`msmt predict --compile`)",
        "",
        "The same msmt models behind `msmt.scoring.compiled.CompiledPredictor`: `torch.compile` with Inductor's freezing "
        "(weights folded into the graph and pre-packed for oneDNN, element-wise work fused), one graph for the "
        f"batch shape, compiled before timing; {threads} threads, same batches. `--autotune`: Inductor's "
        "max-autotune GEMM selection (its generated C++ GEMM kernels, with AMX/AVX-512 micro-kernels and the bias and "
        "activation fused, timed against oneDNN per matmul). AUC: the fp32-trained model of the quality table scored "
        "this way in bf16.",
        "",
        "| model | compiled fp32 infer/s | vs eager fp32 | compiled bf16 infer/s | vs eager bf16 | vs rechub "
        "| compiled bf16 `--autotune` infer/s | vs compiled bf16 | vs rechub | AUC click / purchase, compiled bf16 | same, `--autotune` |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[_compiled_row(name, "rechub" in impls[name], res) for name in models],
        "",
    ]


def loader_line(models: list[str], res: Results) -> list[str]:
    loader = res.loader
    return [
        f"Loader alone (`iterate_batches`, shuffled, whole training split): **{med(loader):,.0f} rows/s** "
        f"(median of {len(loader)}), i.e. "
        + ", ".join(f"{name} {med(loader) / med(res.train[(name, 'msmt')], 0):.0f}×" for name in models)
        + " the msmt training rate.",
        "",
    ]


def levers_table(models: list[str], res: Results) -> list[str]:
    lines = [
        "## Levers (measured in the same interleaved loop)",
        "",
        "Each variant against msmt as adopted, in the same precision (\"msmt bf16 + …\": against msmt bf16). "
        "\"separate expert MLPs\" and \"stacked experts\" are the expert layers MMoE and M2M used before "
        "`ExpertBank`, loaded with the same weights; \"two embedding lookups\" and \"out-of-place ReLU\" are the "
        "input encoder and MLP activations before this round (same math).",
        "",
        "| model | variant | train/s | per CPU-s | vs msmt (wall) | vs msmt (CPU time) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (name, impl), v in res.train.items():
        base_impl, lever = split_impl(impl)
        if lever:
            base = res.train[(name, base_impl)]
            lines.append(f"| {name} | {impl} | {med(v, 0):,.0f} | {med(v, 1):,.0f} | {ratio(v, base):.2f}× | {ratio(v, base, 1):.2f}× |")
    for name in models:
        a, b = res.infer[(name, "msmt")], res.infer[(name, "msmt no_grad")]
        lines.append(
            f"| {name} | inference: `inference_mode` vs `no_grad` | {med(a, 0):,.0f} | {med(a, 1):,.0f} | {ratio(a, b):.2f}× | {ratio(a, b, 1):.2f}× |"
        )
    return [*lines, ""]


def allocator_table(repeats: int, steps: int, res: Results) -> list[str]:
    def col(name, precision, tuned, key):
        return [r[key] for r in res.alloc[(name, precision, tuned)]]

    rows = [
        f"| {name} | {precision} | {med(col(name, precision, False, 'rate')):,.0f} "
        f"| {med(col(name, precision, True, 'rate')):,.0f} "
        f"| **{ratio(col(name, precision, True, 'rate'), col(name, precision, False, 'rate')):.2f}×** "
        f"| {med(col(name, precision, False, 'faults')):,.0f} | {med(col(name, precision, True, 'faults')):,.0f} "
        f"| {med(col(name, precision, False, 'loader')):,.0f} / {med(col(name, precision, True, 'loader')):,.0f} |"
        for name in res.alloc_models
        for precision in ("fp32", "bf16")
    ]
    return [
        "## Allocator (`msmt.runtime.allocator.tune_allocator`)",
        "",
        f"glibc malloc's mmap and trim thresholds raised (what the `msmt` command does at start; {'in force' if res.tuned else 'NOT in force'} "
        f"for both libraries in the measurements above) against glibc's defaults (`MSMT_TUNE_ALLOCATOR=0`): "
        f"fresh processes, alternated, {repeats} each, {steps} training steps after 5 warm-up steps.",
        "",
        "| model | precision | default train/s | tuned train/s | ratio | default page faults / step | tuned page faults / step | loader alone, default / tuned rows/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def quality_table(models: list[str], epochs: int, res: Results) -> list[str]:
    lines = [
        "## Quality, parameters and memory",
        "",
        f"Test AUC after {epochs} epoch(s) on the first {res.n_quality:,} training rows, scored on the same test "
        "split (the last 10% of rows; seed 0; Adam lr 1e-3; equal batches and shuffling for both libraries).",
        "",
        "| model | msmt AUC click / purchase | msmt bf16 AUC click / purchase | rechub AUC click / purchase | msmt params | rechub params | msmt peak MB | rechub peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    a = lambda v: f"{v[0]:.4f} / {v[1]:.4f}"  # noqa: E731
    n = lambda v: f"{v:,}"  # noqa: E731
    mb = lambda v: f"{v:.0f}"  # noqa: E731
    for name in models:
        def cell(impl, table, fmt):
            v = table.get((name, impl))
            return "—" if v is None else fmt(v)

        lines.append(
            f"| {name} | {cell('msmt', res.auc, a)} | {cell(BF16, res.auc, a)} | {cell('rechub', res.auc, a)} | {cell('msmt', res.params, n)} "
            f"| {cell('rechub', res.params, n)} | {cell('msmt', res.mem, mb)} | {cell('rechub', res.mem, mb)} |"
        )
    return [*lines, "", "Peak MB: RSS high-water mark of 20 training steps minus RSS before building the model, in a fresh process.", ""]


def limit_table(models: list[str], threads: int, res: Results) -> list[str]:
    lines = [
        "## The limit",
        "",
        f"GEMM microbenchmark at each model's dense-layer shapes (the forward, dX and dW products of every "
        f"Linear at batch {BATCH}, {threads} threads, best of 3 windows): the model's GEMM rate is the "
        "FLOP-weighted rate of its own GEMMs (Σ flops / Σ flops/rate), and its ceiling = that rate / the "
        "training FLOPs per sample (`FlopCounterMode`: every matmul, including batched ones, whose rate is "
        "taken to be the dense layers' — optimistic for M2M's per-row products). The ceiling is what the "
        "step would reach if it did nothing but these GEMMs back to back.",
        "",
        "| model | train MFLOP / sample | GEMM rate fp32 / bf16 GFLOP/s | fp32 ceiling samples/s | msmt fp32 samples/s | fraction | bf16 ceiling | msmt bf16 samples/s | fraction |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in models:
        flops, gemm, gemm16 = res.flops[name], res.gemm[name], res.gemm_bf16[name]
        ceil, ceil16 = gemm / flops, gemm16 / flops
        mt, mb16 = med(res.train[(name, "msmt")], 0), med(res.train[(name, BF16)], 0)
        lines.append(
            f"| {name} | {flops / 1e6:.2f} | {gemm / 1e9:.0f} / {gemm16 / 1e9:.0f} | {ceil:,.0f} | {mt:,.0f} "
            f"| {mt / ceil:.0%} | {ceil16:,.0f} | {mb16:,.0f} | {mb16 / ceil16:.0%} |"
        )
    return [
        *lines,
        "",
        f"Where an MMoE training step's time goes (`torch.profiler`, 20 steps, {threads} threads):",
        "",
        res.profile,
        "",
    ]


def report(args, cmd: str, impls: dict, res: Results) -> str:
    """The Markdown page: every table in order."""
    models = args.models
    lines = [
        *header_lines(args, cmd, res),
        *throughput_table(models, impls, res),
        *bf16_table(models, impls, res),
        *m2m_line(models, res),
        *onnx_table(models, impls, args.threads, res),
        *compiled_table(models, impls, args.threads, res),
        *loader_line(models, res),
        *levers_table(models, res),
        *allocator_table(args.repeats, args.steps, res),
        *quality_table(models, args.epochs, res),
        *limit_table(models, args.threads, res),
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="timed training steps per measurement")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs before the test AUC")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--quality-rows", type=int, default=200_000, help="training rows for the AUC comparison")
    ap.add_argument("--levers", action="store_true", help="also time the candidate speed-ups (sparse grads, stacked experts)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--_memory", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_alloc", nargs=3, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._alloc:
        allocator_child(args._alloc[0], args._alloc[1], int(args._alloc[2]))
        return 0
    tuned = tune_allocator()  # as the msmt command does; in force for both libraries in this process
    if args._memory:
        memory_child(*args._memory)
        return 0

    torch.set_num_threads(args.threads)
    res = Results(tuned=tuned, load_before=os.getloadavg())
    inp = build_inputs(args.rows, args.steps)
    impls = implementations(args.models)
    measure_throughput(args.models, impls, args.levers, args.repeats, args.threads, inp, res)
    if not args.skip_memory:
        measure_memory(args.models, impls, res)
    measure_allocator(args.models, args.repeats, args.steps, res)
    res.n_quality = min(args.quality_rows, inp.train["scenario"].shape[0])
    if not args.skip_quality:
        measure_quality(args.models, impls, args.quality_rows, args.epochs, inp, res)
    measure_limit(args.models, inp, res)
    res.load_after = os.getloadavg()

    cmd = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(args, cmd, impls, res)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
