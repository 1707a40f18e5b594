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

    python benchmarks/speed.py --levers --out docs/speed_raw.md   # the full run (1M rows); reading: docs/speed.md
    python benchmarks/speed.py --rows 100000 --repeats 3      # a smaller run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from msmt.data.io import atomic_write_text
from msmt.models import build_model
from msmt.runtime.allocator import tune_allocator
from msmt.spec.batch import iterate_batches
from msmt.spec.config import ModelConfig
from msmt.spec.dataset import DatasetSpec
from msmt.spec.fitted import FittedSchema, Vocabulary
from msmt.training.losses import task_losses
from msmt.training.optim import adamw

# field name -> vocabulary size (values; each table also has padding + OOV rows)
FIELDS = {
    "user_id": 20000, "item_id": 10000, "category": 100, "brand": 500,
    "city": 300, "device": 5, "hour": 24, "age_bucket": 8,
}
SCENARIOS = ("feed", "search", "display", "minor")
EMB, HIDDEN, TOWER, EXPERTS = 16, [256, 128], [64], 4
MODELS = ("shared_bottom", "mmoe", "ple", "esmm", "m2m")
BATCH = 1024
BF16 = "msmt bf16"  # the variant trained with train.precision=bf16 (autocast), scored likewise
ONNX = "msmt onnx"  # inference through ONNX Runtime (msmt export --format onnx; serve --backend onnx)
# msmt predict --compile [--precision bf16] [--autotune]: label -> (precision, autotune)
COMPILED_FP32, COMPILED_BF16, AUTOTUNED = "msmt compiled fp32", "msmt compiled bf16", "msmt compiled bf16 autotune"
COMPILED = {COMPILED_FP32: ("fp32", False), COMPILED_BF16: ("bf16", False), AUTOTUNED: ("bf16", True)}


# ------------------------------------------------------------------ data
def _spec(esmm: bool) -> DatasetSpec:
    tasks = [{"name": "click", "label": "click", "kind": "binary"}]
    if esmm:
        tasks.append({"name": "purchase", "label": "purchase", "kind": "binary", "product_of": ["click", "cvr"]})
    else:
        tasks.append({"name": "purchase", "label": "purchase", "kind": "binary"})
    raw = {
        "name": "speed_synth",
        "files": {"train": "in-memory"},
        "scenario": {"column": "scenario"},
        "features": {"sparse": list(FIELDS)},
        "tasks": tasks,
    }
    if esmm:
        raw["auxiliary"] = [{"name": "cvr"}]
    return DatasetSpec.model_validate(raw)


def make_data(rows: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, FittedSchema]]:
    """A seeded click/purchase world with learnable id effects and a user × item interaction."""
    rng = np.random.default_rng(seed)
    vocabs = {f: Vocabulary(tuple(f"{f}{i}" for i in range(n))) for f, n in FIELDS.items()}
    schemas = {
        kind: FittedSchema(_spec(kind == "esmm"), tuple(sorted(SCENARIOS)), vocabs, {}) for kind in ("plain", "esmm")
    }
    raw = {f: rng.integers(0, n, rows) for f, n in FIELDS.items()}
    scen = rng.choice(len(SCENARIOS), size=rows, p=[0.45, 0.3, 0.22, 0.03])
    eff = {f: rng.normal(0, 0.5, n) for f, n in FIELDS.items()}
    u, v = rng.normal(0, 0.5, (FIELDS["user_id"], 4)), rng.normal(0, 0.5, (FIELDS["item_id"], 4))
    s_bias = rng.normal(-1.0, 0.5, len(SCENARIOS))
    uv = np.einsum("nd,nd->n", u[raw["user_id"]], v[raw["item_id"]])
    logit = s_bias[scen] + sum(eff[f][raw[f]] for f in FIELDS) + 1.5 * uv
    cvr_logit = -1.0 + 2 * eff["brand"][raw["brand"]] + eff["age_bucket"][raw["age_bucket"]] - 0.5 * scen
    click = rng.random(rows) < 1 / (1 + np.exp(-logit))
    purchase = click & (rng.random(rows) < 1 / (1 + np.exp(-cvr_logit)))
    names = list(schemas["plain"].scenarios)
    scen_index = np.array([schemas["plain"].scenario_index(SCENARIOS[i]) for i in range(len(SCENARIOS))])[scen]
    assert set(names) == set(SCENARIOS)
    data = {
        "scenario": torch.from_numpy(scen_index.astype(np.int64)),
        "sparse": torch.from_numpy(np.stack([raw[f] + 2 for f in FIELDS], 1).astype(np.int64)),
        "dense": torch.zeros(rows, 0),
        "scenario_sparse": torch.zeros(rows, 0, dtype=torch.long),
        "scenario_dense": torch.zeros(rows, 0),
        "labels": torch.from_numpy(np.stack([click, purchase], 1).astype(np.float32)),
        "weight": torch.ones(rows),
    }
    return data, schemas


def split(data: dict, frac: tuple[float, float] = (0.8, 0.9)) -> tuple[dict, dict]:
    n = data["scenario"].shape[0]
    a, b = int(n * frac[0]), int(n * frac[1])
    return {k: v[:a] for k, v in data.items()}, {k: v[b:] for k, v in data.items()}


def rechub_inputs(data: dict) -> dict[str, torch.Tensor]:
    """torch-rechub's input: one [N] column per feature (the scenario is one more sparse field)."""
    cols = {f: data["sparse"][:, j].contiguous() for j, f in enumerate(FIELDS)}
    cols["scenario"] = data["scenario"].contiguous()
    return cols


# ------------------------------------------------------------------ models
def schema_of(name: str, schemas: dict) -> FittedSchema:
    """ESMM's schema declares the purchase = click × cvr funnel; every other model uses the plain one."""
    return schemas["esmm" if name == "esmm" else "plain"]


def msmt_model(name: str, schemas: dict) -> torch.nn.Module:
    extra = {
        "mmoe": {"mmoe": {"num_experts": EXPERTS}},
        "ple": {"ple": {"num_levels": 1, "task_experts": 1, "shared_experts": 2}},
        "m2m": {"m2m": {"num_experts": EXPERTS}},
    }.get(name, {})
    cfg = ModelConfig(name=name, embedding_dim=EMB, hidden_dims=HIDDEN, tower_dims=TOWER, **extra)
    return build_model(schema_of(name, schemas), cfg)


def rechub_model(name: str) -> torch.nn.Module | None:
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


def onnx_runner(name: str, schemas: dict, batch: dict, threads: int):
    """An (untrained) msmt model exported by msmt.scoring.export and loaded in ONNX Runtime with ``threads``."""
    import tempfile

    from msmt.scoring.export import OnnxRunner, write_onnx

    torch.manual_seed(0)
    model = msmt_model(name, schemas).eval()
    path = Path(tempfile.mkdtemp()) / f"{name}.onnx"
    write_onnx(model, batch, path)
    return OnnxRunner(path, threads=threads, spin=False)  # spinning threads would slow the next measurement


def compiled_predictor(name: str, schemas: dict, batch: dict, precision: str, autotune: bool = False):
    """An (untrained) msmt model behind msmt.scoring.compiled.CompiledPredictor, compiled by one warm-up call."""
    from msmt.scoring.compiled import CompiledPredictor

    torch.manual_seed(0)
    predictor = CompiledPredictor(msmt_model(name, schemas), BATCH, precision, autotune=autotune)
    predictor(batch)
    return predictor


# ------------------------------------------------------------------ steps
def msmt_optimizer(model):
    """The trainer's optimiser (fused AdamW, msmt.training.optim), with Adam's settings: lr 1e-3, no decay."""
    return adamw(model.parameters(), lr=1e-3, weight_decay=0.0)


def msmt_step(model, opt, tasks, bf16: bool = False):
    """One step as msmt's trainer takes it; ``bf16``: ``train.precision=bf16`` (autocast forward)."""

    def step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(batch)
        losses = task_losses(tasks, {t: v.float() for t, v in out.items()}, batch["labels"], batch["weight"])
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return step


def rechub_step(model, opt, esmm: bool):
    bce = torch.nn.BCELoss()

    def step(x, y):
        p = model(x)  # probabilities; ESMM: [cvr, ctr, ctcvr]
        cols = (1, 2) if esmm else (0, 1)
        loss = bce(p[:, cols[0]], y[:, 0]) + bce(p[:, cols[1]], y[:, 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def msmt_batches(data, n, seed=0):
    out = []
    for b in iterate_batches(data, BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed)):
        if b["scenario"].shape[0] == BATCH:
            out.append(b)
        if len(out) >= n:
            break
    return out


def rechub_batches(cols, labels, n, seed=0):
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    out = []
    for i in range(n):
        idx = order[i * BATCH : (i + 1) * BATCH]
        out.append(({k: v[idx] for k, v in cols.items()}, labels[idx]))
    return out


def timed(fn, items, warmup: int = 3) -> tuple[float, float]:
    """(samples per wall-clock second, samples per CPU second of this process).

    The CPU-time rate is less disturbed by other users of a shared machine (it still includes
    cache and hyper-thread interference).
    """
    for it in items[:warmup]:
        fn(it)
    start, cpu = time.perf_counter(), time.process_time()
    for it in items:
        fn(it)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return len(items) * BATCH / wall, len(items) * BATCH / cpu


class _Pair:
    """Two optimisers stepped together: SparseAdam for sparse-gradient tables, Adam for the rest."""

    def __init__(self, model):
        sparse = [p for n, p in model.named_parameters() if n.endswith("table.weight")]
        dense = [p for n, p in model.named_parameters() if not n.endswith("table.weight")]
        self.opts = [torch.optim.SparseAdam(sparse, lr=1e-3), adamw(dense, lr=1e-3, weight_decay=0.0)]

    def zero_grad(self, set_to_none=True):
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self):
        for o in self.opts:
            o.step()


class SeparateExperts(torch.nn.Module):
    """MMoE's experts before ExpertBank: k independent MLPs, each with its own first GEMM, stacked."""

    def __init__(self, bank):
        super().__init__()
        h = bank.width
        self.mlps = torch.nn.ModuleList()
        for j, deeper in enumerate(bank.deeper):
            first = torch.nn.Linear(bank.first.in_features, h)
            with torch.no_grad():
                first.weight.copy_(bank.first.weight[j * h : (j + 1) * h])
                first.bias.copy_(bank.first.bias[j * h : (j + 1) * h])
            self.mlps.append(torch.nn.Sequential(first, torch.nn.ReLU(inplace=True), deeper))

    def forward(self, x):
        return torch.stack([m(x) for m in self.mlps], dim=1)


class StackedExperts(torch.nn.Module):
    """M2M's experts before ExpertBank: [k, in, out] weights, the first layer one GEMM, deeper
    layers one batched matmul over the expert axis (``einsum("bki,kio->bko")``)."""

    def __init__(self, bank):
        super().__init__()
        k, h = bank.k, bank.width
        ws = [bank.first.weight.detach().view(k, h, -1).transpose(1, 2)]
        bs = [bank.first.bias.detach().view(k, h)]
        for linears in zip(*[[m for m in d.net if isinstance(m, torch.nn.Linear)] for d in bank.deeper]):
            ws.append(torch.stack([lin.weight.detach().t() for lin in linears]))
            bs.append(torch.stack([lin.bias.detach() for lin in linears]))
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(w.contiguous()) for w in ws)
        self.biases = torch.nn.ParameterList(torch.nn.Parameter(b.contiguous()) for b in bs)

    def forward(self, x):
        k, i, o = self.weights[0].shape
        x = torch.relu((x @ self.weights[0].permute(1, 0, 2).reshape(i, k * o)).view(-1, k, o) + self.biases[0])
        for w, b in zip(self.weights[1:], self.biases[1:]):
            x = torch.relu(torch.einsum("bki,kio->bko", x, w) + b)
        return x


def two_lookups(encoder):
    """FeatureEncoder.embed_fields before this round: the sparse features and the scenario id in two
    lookups (two dense table gradients), then concatenated (no multi-valued features here)."""

    def embed_fields(batch):
        S = encoder.num_sparse
        sparse = encoder.table(batch["sparse"] + encoder.offsets[:S])
        scenario = encoder.table(batch["scenario"] + encoder.offsets[-1]).unsqueeze(1)
        return torch.cat([sparse, scenario], dim=1)

    return embed_fields


def lever_variant(model, lever: str):
    """A measured-but-not-adopted change applied to a built msmt model: returns (model, optimiser)."""
    if lever == "sparse embedding grads":
        model.encoder.table.sparse = True
        return model, _Pair(model)
    if lever == "separate expert MLPs":  # the previous MMoE experts (same weights, same math)
        model.experts = SeparateExperts(model.experts)
        return model, msmt_optimizer(model)
    if lever == "stacked experts":  # the previous M2M experts (same weights, same math)
        model.experts = StackedExperts(model.experts)
        return model, msmt_optimizer(model)
    if lever == "two embedding lookups":  # the previous FeatureEncoder (same table, same math)
        model.encoder.embed_fields = two_lookups(model.encoder)
        return model, msmt_optimizer(model)
    if lever == "out-of-place ReLU":  # MLP's ReLUs as before this round
        for mod in model.modules():
            if isinstance(mod, torch.nn.ReLU):
                mod.inplace = False
        return model, msmt_optimizer(model)
    if lever == "torch.compile":  # the training forward compiled by TorchInductor (default mode), warmed up here
        return torch.compile(model), msmt_optimizer(model)
    raise ValueError(lever)


# model -> [(lever, precision)]: the previous expert layouts are timed in both precisions because
# ExpertBank's gain is in bfloat16
LEVERS = {
    "shared_bottom": [("sparse embedding grads", "fp32"), ("two embedding lookups", "fp32"), ("two embedding lookups", "bf16")],
    "mmoe": [
        ("sparse embedding grads", "fp32"), ("separate expert MLPs", "fp32"), ("separate expert MLPs", "bf16"),
        ("stacked experts", "fp32"), ("stacked experts", "bf16"), ("two embedding lookups", "fp32"),
        ("two embedding lookups", "bf16"), ("out-of-place ReLU", "fp32"), ("out-of-place ReLU", "bf16"),
        ("torch.compile", "fp32"), ("torch.compile", "bf16"),
    ],
    "m2m": [("stacked experts", "fp32"), ("stacked experts", "bf16"), ("torch.compile", "fp32")],
}


def lever_impl(lever: str, precision: str) -> str:
    return f"{'msmt' if precision == 'fp32' else BF16} + {lever}"


def split_impl(impl: str) -> tuple[str, str | None]:
    """'msmt bf16 + stacked experts' -> ('msmt bf16', 'stacked experts'); 'msmt' -> ('msmt', None)."""
    base, _, lever = impl.partition(" + ")
    return base, lever or None


def pipeline_rate(batches, steps: int, step, warmup: int = 2) -> float:
    """Training samples/s with the loader in the loop: ``step`` on ``warmup`` then ``steps`` items of ``batches``."""
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    start = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    return steps * BATCH / (time.perf_counter() - start)


def msmt_loader_rate(train: dict, steps: int, step, seed: int = 0) -> float:
    """Training through msmt's own input pipeline (``iterate_batches`` over the split, as the trainer does)."""
    return pipeline_rate(iterate_batches(train, BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed)), steps, step)


def rechub_loader_rate(cols, labels, steps: int, model, opt, esmm: bool) -> float:
    """Training through torch-rechub's own input pipeline (TorchDataset + DataLoader, as DataGenerator builds it)."""
    from torch.utils.data import DataLoader
    from torch_rechub.utils.data import TorchDataset

    x = {k: v.numpy() for k, v in cols.items()}
    loader = DataLoader(TorchDataset(x, labels.numpy()), batch_size=BATCH, shuffle=True, num_workers=0)
    step = rechub_step(model, opt, esmm)
    return pipeline_rate(loader, steps, lambda b: step(b[0], b[1].float()))


# ------------------------------------------------------------------ quality
def train_epochs(impl, name, model, train, epochs, schemas, seed=0):
    model.train()
    if impl.startswith("msmt"):
        opt = msmt_optimizer(model)
        tasks = schema_of(name, schemas).spec.tasks
        step = msmt_step(model, opt, tasks, bf16=impl == BF16)
        for ep in range(epochs):
            for b in iterate_batches(train, BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed + ep)):
                step(b)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = rechub_step(model, opt, name == "esmm")
        cols, y = rechub_inputs(train), train["labels"]
        for ep in range(epochs):
            order = torch.randperm(y.shape[0], generator=torch.Generator().manual_seed(seed + ep))
            for s in range(0, y.shape[0], BATCH):
                idx = order[s : s + BATCH]
                step({k: v[idx] for k, v in cols.items()}, y[idx])


@torch.inference_mode()
def test_auc(impl, name, model, test) -> tuple[float, float]:
    model.eval()
    preds = []
    if impl in COMPILED:  # the model trained in fp32, scored through msmt.scoring.compiled
        from msmt.scoring.compiled import CompiledPredictor

        precision, autotune = COMPILED[impl]
        predictor = CompiledPredictor(model, 8192, precision, autotune=autotune)
        for b in iterate_batches(test, 8192):
            out = predictor(b)
            preds.append(torch.stack([out["click"], out["purchase"]], 1))
    elif impl.startswith("msmt"):
        for b in iterate_batches(test, 8192):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=impl == BF16):
                out = {t: v.float() for t, v in model(b).items()}
            preds.append(torch.stack([out["click"], out["purchase"]], 1))
    else:
        cols = rechub_inputs(test)
        for s in range(0, test["labels"].shape[0], 8192):
            p = model({k: v[s : s + 8192] for k, v in cols.items()})
            preds.append(p[:, 1:] if name == "esmm" else p)
    p = torch.cat(preds).numpy()
    y = test["labels"].numpy()
    return roc_auc_score(y[:, 0], p[:, 0]), roc_auc_score(y[:, 1], p[:, 1])


# ------------------------------------------------------------------ memory (subprocess)
def _rss_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def memory_child(impl: str, name: str) -> None:
    torch.set_num_threads(2)
    data, schemas = make_data(30 * BATCH, seed=0)
    if impl == "msmt":
        batches = msmt_batches(data, 20)
    else:
        batches = rechub_batches(rechub_inputs(data), data["labels"], 20)
    before = _rss_kb("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    torch.manual_seed(0)
    if impl == "msmt":
        model = msmt_model(name, schemas)
        step = msmt_step(model, msmt_optimizer(model), schema_of(name, schemas).spec.tasks)
        for b in batches:
            step(b)
    else:
        model = rechub_model(name)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = rechub_step(model, opt, name == "esmm")
        for b in batches:
            step(*b)
    print(json.dumps({"peak_mb": (_rss_kb("VmHWM:") - before) / 1024}))


def run_child(args: list[str], **env: str) -> dict:
    """This script in a fresh process with ``args`` (a hidden ``--_…`` mode): the JSON of its last line."""
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True,
        env={**os.environ, "OMP_NUM_THREADS": "2", **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_memory(impl: str, name: str) -> float:
    return run_child(["--_memory", impl, name])["peak_mb"]


# ------------------------------------------------------------------ allocator (subprocesses)
def allocator_child(name: str, precision: str, steps: int) -> None:
    """Train ``steps`` steps in this fresh process; print samples/s and minor page faults per step."""
    import resource

    tuned = tune_allocator()  # what the msmt command does at start; MSMT_TUNE_ALLOCATOR=0 turns it off
    torch.set_num_threads(2)
    data, schemas = make_data((steps + 5) * BATCH, seed=0)
    batches = msmt_batches(data, steps + 5)
    torch.manual_seed(0)
    model = msmt_model(name, schemas).train()
    step = msmt_step(model, msmt_optimizer(model), schema_of(name, schemas).spec.tasks, bf16=precision == "bf16")
    for b in batches[:5]:
        step(b)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rate, _ = timed(step, batches[5:], warmup=0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    start = time.perf_counter()  # msmt's loader alone over the same rows, 5 shuffled passes
    for p in range(5):
        for _ in iterate_batches(data, BATCH, shuffle=True, generator=torch.Generator().manual_seed(p)):
            pass
    loader = 5 * data["scenario"].shape[0] / (time.perf_counter() - start)
    print(json.dumps({"rate": rate, "faults": faults, "tuned": tuned, "loader": loader}))


def allocator_rates(name: str, precision: str, steps: int, tune: bool) -> dict:
    return run_child(["--_alloc", name, precision, str(steps)], MSMT_TUNE_ALLOCATOR="1" if tune else "0")


# ------------------------------------------------------------------ the limit
def train_flops(model, batch_or_x, step_loss) -> float:
    """FLOPs of one forward + backward per sample (FlopCounterMode counts matmuls / convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step_loss(model, batch_or_x).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / BATCH


def linear_shapes(model) -> list[tuple[int, int]]:
    """(in, out) of every dense layer's GEMM (every nn.Linear; ExpertBank's first layer is one)."""
    return [(mod.in_features, mod.out_features) for mod in model.modules() if isinstance(mod, torch.nn.Linear)]


def gemm_rates(shapes: set[tuple[int, int]], dtype: torch.dtype = torch.float32, seconds: float = 0.15) -> dict:
    """(in, out) -> FLOP/s of this CPU for the three GEMMs of a Linear layer at batch BATCH
    (y = xW, dX = dY Wᵀ, dW = Xᵀ dY), each the best of 3 timed windows after 20 warm-up calls."""
    rates = {}
    for k, n in sorted(shapes):
        m = BATCH
        per = []
        for a_shape, b_shape in [((m, k), (k, n)), ((m, n), (n, k)), ((k, m), (m, n))]:
            a, b = torch.randn(*a_shape, dtype=dtype), torch.randn(*b_shape, dtype=dtype)
            for _ in range(20):
                a @ b
            best = 0.0
            for _ in range(3):
                reps, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds / 3:
                    a @ b
                    reps += 1
                best = max(best, reps * 2 * a_shape[0] * a_shape[1] * b_shape[1] / (time.perf_counter() - start))
            per.append(best)
        rates[(k, n)] = per
    return rates


def effective_rate(shapes: list[tuple[int, int]], rates: dict) -> float:
    """FLOP-weighted GEMM rate of one model's dense layers: Σ flops / Σ (flops / rate), i.e. the rate
    at which its forward + backward GEMMs would run back to back with nothing else in between."""
    flops = seconds = 0.0
    for k, n in shapes:
        f = 2.0 * BATCH * k * n  # each of the three GEMMs has the same FLOPs
        for r in rates[(k, n)]:
            flops += f
            seconds += f / r
    return flops / seconds


def profile_step(step, items, steps: int = 20) -> str:
    from torch.profiler import ProfilerActivity, profile

    for it in items[:3]:
        step(it)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for it in items[:steps]:
            step(it)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ops = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    rows = ["| op | self CPU ms / step | share | calls / step |", "|---|---:|---:|---:|"]
    rows += [
        f"| `{e.key}` | {e.self_cpu_time_total / 1000 / steps:.2f} | {e.self_cpu_time_total / total:.0%} | {e.count / steps:.0f} |"
        for e in ops
    ]
    mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"))
    rows.append(f"\nmatmul kernels (mm/addmm/bmm/baddbmm): {mm / total:.0%} of profiled self CPU time")
    return "\n".join(rows)


# ------------------------------------------------------------------ main
def med(v, i: int | None = None):
    if i is not None:
        v = [x[i] for x in v]
    return statistics.median(v) if v else float("nan")


def main(argv: list[str] | None = None) -> int:
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
    args = ap.parse_args(argv)
    if args._alloc:
        allocator_child(args._alloc[0], args._alloc[1], int(args._alloc[2]))
        return 0
    tuned = tune_allocator()  # as the msmt command does; in force for both libraries in this process
    if args._memory:
        memory_child(*args._memory)
        return 0

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    data, schemas = make_data(args.rows, seed=0)
    train, test = split(data)
    cols, labels = rechub_inputs(train), train["labels"]
    n_steps = args.steps
    mb = msmt_batches(train, n_steps + 3)
    rb = rechub_batches(cols, labels, n_steps + 3)
    print(f"data: {args.rows:,} rows in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    # the loader alone: iterate_batches over the whole training split (shuffled), rows/s
    loader = []
    for rep in range(args.repeats):
        start = time.perf_counter()
        for _ in iterate_batches(train, BATCH, shuffle=True, generator=torch.Generator().manual_seed(rep)):
            pass
        loader.append(train["scenario"].shape[0] / (time.perf_counter() - start))

    impls = {name: ["msmt", BF16] + (["rechub"] if rechub_model(name) is not None else []) for name in args.models}
    levers = [(n, lever_impl(*lv)) for n in args.models for lv in LEVERS.get(n, [])] if args.levers else []
    onnx_runs = {name: onnx_runner(name, schemas, mb[0], args.threads) for name in args.models}
    compiled_runs = {(name, label): compiled_predictor(name, schemas, mb[0], *COMPILED[label]) for name in args.models for label in COMPILED}
    print(f"compiled {len(compiled_runs)} predictors", file=sys.stderr)
    train_r: dict = {}  # (model, variant) -> [(wall rate, cpu rate)]
    infer_r: dict = {}
    pipe_r: dict = {}
    params: dict = {}
    for rep in range(args.repeats):
        for name in args.models:
            for impl in impls[name] + [lv for n, lv in levers if n == name]:
                torch.manual_seed(rep)
                model = rechub_model(name) if impl == "rechub" else msmt_model(name, schemas)
                params.setdefault((name, impl), sum(p.numel() for p in model.parameters()))
                opt = torch.optim.Adam(model.parameters(), lr=1e-3) if impl == "rechub" else msmt_optimizer(model)
                base_impl, lever = split_impl(impl)
                if lever:
                    model, opt = lever_variant(model, lever)
                model.train()
                if impl != "rechub":
                    tasks = schema_of(name, schemas).spec.tasks
                    bf16 = base_impl == BF16
                    sps = timed(msmt_step(model, opt, tasks, bf16=bf16), mb[:n_steps])
                    if impl in ("msmt", BF16):
                        rate = msmt_loader_rate(train, n_steps // 2, msmt_step(model, opt, tasks, bf16=bf16), seed=rep)
                        pipe_r.setdefault((name, impl), []).append(rate)
                    if lever:  # training levers: inference is measured on the adopted model only
                        train_r.setdefault((name, impl), []).append(sps)
                        print(f"rep {rep} {name:14s} {impl:30s} train {sps[0]:9,.0f}/s (cpu {sps[1]:9,.0f})", file=sys.stderr)
                        continue
                    model.eval()
                    if impl == "msmt":
                        with torch.no_grad():
                            infer_r.setdefault((name, "msmt no_grad"), []).append(timed(model, mb[:n_steps]))
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        ips = timed(model, mb[:n_steps])
                    if impl == "msmt":
                        infer_r.setdefault((name, ONNX), []).append(timed(onnx_runs[name], mb[:n_steps]))
                        for label in COMPILED:
                            infer_r.setdefault((name, label), []).append(timed(compiled_runs[(name, label)], mb[:n_steps]))
                else:
                    sps = timed(lambda b: rechub_step(model, opt, name == "esmm")(*b), rb[:n_steps])
                    model.eval()
                    with torch.no_grad():
                        ips = timed(lambda b: model(b[0]), rb[:n_steps])
                    model.train()
                    pipe_r.setdefault((name, "rechub"), []).append(rechub_loader_rate(cols, labels, n_steps // 2, model, opt, name == "esmm"))
                train_r.setdefault((name, impl), []).append(sps)
                infer_r.setdefault((name, impl), []).append(ips)
                print(f"rep {rep} {name:14s} {impl:30s} train {sps[0]:9,.0f}/s (cpu {sps[1]:9,.0f}) infer {ips[0]:9,.0f}/s", file=sys.stderr)

    mem = {}
    if not args.skip_memory:
        for name in args.models:
            for impl in impls[name]:
                if impl != BF16:
                    mem[(name, impl)] = peak_memory(impl, name)

    alloc: dict = {}  # (model, precision, tuned) -> [{"rate", "faults"}]
    alloc_models = [n for n in ("mmoe", "m2m") if n in args.models]
    for rep in range(args.repeats):
        for name in alloc_models:
            for precision in ("fp32", "bf16"):
                for tune in (False, True):
                    alloc.setdefault((name, precision, tune), []).append(allocator_rates(name, precision, n_steps, tune))
        print(f"allocator rep {rep} done", file=sys.stderr)

    auc = {}
    n_q = min(args.quality_rows, train["scenario"].shape[0])
    qtrain = {k: v[:n_q] for k, v in train.items()}
    if not args.skip_quality:
        for name in args.models:
            for impl in impls[name]:
                torch.manual_seed(0)
                model = rechub_model(name) if impl == "rechub" else msmt_model(name, schemas)
                start = time.perf_counter()
                train_epochs(impl, name, model, qtrain, args.epochs, schemas)
                auc[(name, impl)] = test_auc(impl, name, model, test)
                if impl == "msmt":
                    for label in (COMPILED_BF16, AUTOTUNED):
                        auc[(name, label)] = test_auc(label, name, model, test)
                print(f"quality {name} {impl}: AUC {auc[(name, impl)]} ({time.perf_counter() - start:.0f}s)", file=sys.stderr)

    # the limit: FLOPs per training sample and this CPU's GEMM rate at the models' shapes
    def msmt_loss(model, b):
        tasks = model.schema.spec.tasks
        return sum(task_losses(tasks, model(b), b["labels"], b["weight"]).values())

    flops, model_shapes = {}, {}
    for name in args.models:
        model = msmt_model(name, schemas)
        flops[name] = train_flops(model, mb[0], msmt_loss)
        model_shapes[name] = linear_shapes(model)
    all_shapes = {sh for v in model_shapes.values() for sh in v}
    rates32, rates16 = gemm_rates(all_shapes), gemm_rates(all_shapes, dtype=torch.bfloat16)
    gemm = {name: effective_rate(model_shapes[name], rates32) for name in args.models}
    gemm_bf16 = {name: effective_rate(model_shapes[name], rates16) for name in args.models}

    model = msmt_model("mmoe", schemas)
    prof_table = profile_step(msmt_step(model, msmt_optimizer(model), schemas["plain"].spec.tasks), mb)
    load_after = os.getloadavg()

    # ------------------------------------------------------------- report
    cmd = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Speed: msmt vs torch-rechub",
        "",
        f"Command: `{cmd.strip()}` (torch {torch.__version__}, torch-rechub "
        f"{_version('torch-rechub')}, {args.threads} threads, batch {BATCH}, {args.rows:,} rows, "
        f"{args.repeats} interleaved repeats of {n_steps} steps; medians).",
        f"Load average (1/5/15 min) before: {_fmt_load(load_before)}; after: {_fmt_load(load_after)} "
        f"(the 2-core machine is shared, so absolute numbers move; ratios are within one repeat's conditions).",
        f"Sizes: embedding {EMB} for 9 fields (8 features + the scenario), experts / bottom {HIDDEN}, towers "
        f"{TOWER}, MMoE {EXPERTS} experts, PLE 1 level with 1 task expert + 2 shared experts, ESMM towers "
        f"{HIDDEN + TOWER}. torch-rechub's MLP adds BatchNorm1d after every hidden Linear (its design; msmt has none "
        "so that a row's output does not depend on its batch).",
        "",
        "## Throughput",
        "",
        "| model | msmt train/s | rechub train/s | ratio | ratio (CPU time) | msmt train/s, own loader "
        "| rechub train/s, own DataLoader | ratio | msmt infer/s | rechub infer/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(a, b, i=0):  # median over repeats of the per-repeat ratio (both measured back to back)
        return statistics.median((x[i] if isinstance(x, tuple) else x) / (y[i] if isinstance(y, tuple) else y) for x, y in zip(a, b))

    for name in args.models:
        mt, mi = train_r[(name, "msmt")], infer_r[(name, "msmt")]
        if "rechub" in impls[name]:
            rt, ri = train_r[(name, "rechub")], infer_r[(name, "rechub")]
            mp, rp = pipe_r[(name, "msmt")], pipe_r[(name, "rechub")]
            lines.append(
                f"| {name} | {med(mt, 0):,.0f} | {med(rt, 0):,.0f} | **{ratio(mt, rt):.2f}×** | {ratio(mt, rt, 1):.2f}× "
                f"| {med(mp):,.0f} | {med(rp):,.0f} | **{ratio(mp, rp):.1f}×** | {med(mi, 0):,.0f} | {med(ri, 0):,.0f} | **{ratio(mi, ri):.2f}×** |"
            )
        else:
            lines.append(f"| {name} | {med(mt, 0):,.0f} | — | — | — | {med(pipe_r[(name, 'msmt')]):,.0f} | — | — | {med(mi, 0):,.0f} | — | — |")
    lines += [
        "",
        "Ratios are medians of per-repeat ratios (msmt and torch-rechub measured back to back in each repeat). "
        "\"rechub train/s\" feeds torch-rechub's model the same pre-sliced tensor batches as msmt (model cost "
        "only); \"own loader\" / \"own DataLoader\": each library trains through its own input pipeline over the "
        "shuffled training split (msmt: `iterate_batches`, as its trainer; torch-rechub: `TorchDataset` + "
        "`DataLoader`, the pipeline of its examples and `MTLTrainer`). "
        "\"CPU time\": samples per CPU-second of the process instead of per wall-clock second.",
        "",
        "### With `train.precision=bf16`",
        "",
        "The same msmt models trained with their forward passes under `torch.autocast(bfloat16)` (matmuls in "
        "bfloat16; weights, gradients, losses and the fused AdamW update in float32) and scored likewise; "
        "torch-rechub as above (float32, its only mode). AUC in the quality table below.",
        "",
        "| model | msmt bf16 train/s | vs msmt fp32 | vs rechub | own loaders: msmt bf16 vs rechub | msmt bf16 infer/s | vs rechub |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {name} | {med(train_r[(name, BF16)], 0):,.0f} | {ratio(train_r[(name, BF16)], train_r[(name, 'msmt')]):.2f}× | "
            + (
                f"**{ratio(train_r[(name, BF16)], train_r[(name, 'rechub')]):.2f}×** | **{ratio(pipe_r[(name, BF16)], pipe_r[(name, 'rechub')]):.1f}×** | "
                f"{med(infer_r[(name, BF16)], 0):,.0f} | **{ratio(infer_r[(name, BF16)], infer_r[(name, 'rechub')]):.2f}×** |"
                if "rechub" in impls[name]
                else f"— | — | {med(infer_r[(name, BF16)], 0):,.0f} | — |"
            )
            for name in args.models
        ],
        "",
        "Own loaders, msmt bf16 vs rechub, per repeat: "
        + "; ".join(
            f"{name} " + ", ".join(f"{a / b:.2f}×" for a, b in zip(pipe_r[(name, BF16)], pipe_r[(name, "rechub")]))
            for name in args.models
            if "rechub" in impls[name]
        )
        + ".",
        "",
        *(
            [
                f"M2M against MMoE (issue 4's target: ≥ 50% of MMoE's training samples/s at comparable hidden sizes), "
                f"median of per-repeat ratios: **{ratio(train_r[('m2m', 'msmt')], train_r[('mmoe', 'msmt')]):.0%}** in float32, "
                f"**{ratio(train_r[('m2m', BF16)], train_r[('mmoe', BF16)]):.0%}** in bfloat16 "
                f"(per repeat, fp32: {', '.join(f'{a[0] / b[0]:.0%}' for a, b in zip(train_r[('m2m', 'msmt')], train_r[('mmoe', 'msmt')]))}).",
                "",
            ]
            if {"m2m", "mmoe"} <= set(args.models)
            else []
        ),
        "### Inference through ONNX Runtime",
        "",
        f"The same msmt models exported with `msmt.scoring.export` (what `msmt export --format onnx` writes and `msmt serve "
        f"--backend onnx` runs), scored by onnxruntime with {args.threads} intra-op threads on the same batches.",
        "",
        "| model | msmt ONNX infer/s | vs msmt torch | vs rechub |",
        "|---|---:|---:|---:|",
        *[
            f"| {name} | {med(infer_r[(name, ONNX)], 0):,.0f} | {ratio(infer_r[(name, ONNX)], infer_r[(name, 'msmt')]):.2f}× | "
            + (f"**{ratio(infer_r[(name, ONNX)], infer_r[(name, 'rechub')]):.2f}×** |" if "rechub" in impls[name] else "— |")
            for name in args.models
        ],
        "",
        "### Inference compiled by TorchInductor (`msmt predict --compile`)",
        "",
        "The same msmt models behind `msmt.scoring.compiled.CompiledPredictor`: `torch.compile` with Inductor's freezing "
        "(weights folded into the graph and pre-packed for oneDNN, element-wise work fused), one graph for the "
        f"batch shape, compiled before timing; {args.threads} threads, same batches. `--autotune`: Inductor's "
        "max-autotune GEMM selection (its generated C++ GEMM kernels, with AMX/AVX-512 micro-kernels and the bias and "
        "activation fused, timed against oneDNN per matmul). AUC: the fp32-trained model of the quality table scored "
        "this way in bf16.",
        "",
        "| model | compiled fp32 infer/s | vs eager fp32 | compiled bf16 infer/s | vs eager bf16 | vs rechub "
        "| compiled bf16 `--autotune` infer/s | vs compiled bf16 | vs rechub | AUC click / purchase, compiled bf16 | same, `--autotune` |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {name} | {med(infer_r[(name, COMPILED_FP32)], 0):,.0f} | {ratio(infer_r[(name, COMPILED_FP32)], infer_r[(name, 'msmt')]):.2f}× "
            f"| {med(infer_r[(name, COMPILED_BF16)], 0):,.0f} | {ratio(infer_r[(name, COMPILED_BF16)], infer_r[(name, BF16)]):.2f}× | "
            + (f"**{ratio(infer_r[(name, COMPILED_BF16)], infer_r[(name, 'rechub')]):.2f}×** | " if "rechub" in impls[name] else "— | ")
            + f"{med(infer_r[(name, AUTOTUNED)], 0):,.0f} | {ratio(infer_r[(name, AUTOTUNED)], infer_r[(name, COMPILED_BF16)]):.2f}× | "
            + (f"**{ratio(infer_r[(name, AUTOTUNED)], infer_r[(name, 'rechub')]):.2f}×** | " if "rechub" in impls[name] else "— | ")
            + " | ".join(f"{auc[(name, label)][0]:.4f} / {auc[(name, label)][1]:.4f}" if (name, label) in auc else "—" for label in (COMPILED_BF16, AUTOTUNED))
            + " |"
            for name in args.models
        ],
        "",
        f"Loader alone (`iterate_batches`, shuffled, whole training split): **{med(loader):,.0f} rows/s** "
        f"(median of {len(loader)}), i.e. "
        + ", ".join(f"{name} {med(loader) / med(train_r[(name, 'msmt')], 0):.0f}×" for name in args.models)
        + " the msmt training rate.",
        "",
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
    for (name, impl), v in train_r.items():
        base_impl, lever = split_impl(impl)
        if lever:
            base = train_r[(name, base_impl)]
            lines.append(
                f"| {name} | {impl} | {med(v, 0):,.0f} | {med(v, 1):,.0f} | {ratio(v, base):.2f}× | {ratio(v, base, 1):.2f}× |"
            )
    for name in args.models:
        a, b = infer_r[(name, "msmt")], infer_r[(name, "msmt no_grad")]
        lines.append(
            f"| {name} | inference: `inference_mode` vs `no_grad` | {med(a, 0):,.0f} | {med(a, 1):,.0f} | {ratio(a, b):.2f}× | {ratio(a, b, 1):.2f}× |"
        )
    lines += [
        "",
        "## Allocator (`msmt.runtime.allocator.tune_allocator`)",
        "",
        f"glibc malloc's mmap and trim thresholds raised (what the `msmt` command does at start; {'in force' if tuned else 'NOT in force'} "
        f"for both libraries in the measurements above) against glibc's defaults (`MSMT_TUNE_ALLOCATOR=0`): "
        f"fresh processes, alternated, {args.repeats} each, {n_steps} training steps after 5 warm-up steps.",
        "",
        "| model | precision | default train/s | tuned train/s | ratio | default page faults / step | tuned page faults / step | loader alone, default / tuned rows/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {name} | {precision} | {med([r['rate'] for r in alloc[(name, precision, False)]]):,.0f} "
            f"| {med([r['rate'] for r in alloc[(name, precision, True)]]):,.0f} "
            f"| **{ratio([r['rate'] for r in alloc[(name, precision, True)]], [r['rate'] for r in alloc[(name, precision, False)]]):.2f}×** "
            f"| {med([r['faults'] for r in alloc[(name, precision, False)]]):,.0f} | {med([r['faults'] for r in alloc[(name, precision, True)]]):,.0f} "
            f"| {med([r['loader'] for r in alloc[(name, precision, False)]]):,.0f} / {med([r['loader'] for r in alloc[(name, precision, True)]]):,.0f} |"
            for name in alloc_models
            for precision in ("fp32", "bf16")
        ],
        "",
        "## Quality, parameters and memory",
        "",
        f"Test AUC after {args.epochs} epoch(s) on the first {n_q:,} training rows, scored on the same test "
        "split (the last 10% of rows; seed 0; Adam lr 1e-3; equal batches and shuffling for both libraries).",
        "",
        "| model | msmt AUC click / purchase | msmt bf16 AUC click / purchase | rechub AUC click / purchase | msmt params | rechub params | msmt peak MB | rechub peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.models:
        def cell(impl, table, fmt):
            v = table.get((name, impl))
            return "—" if v is None else fmt(v)

        a = lambda v: f"{v[0]:.4f} / {v[1]:.4f}"  # noqa: E731
        lines.append(
            f"| {name} | {cell('msmt', auc, a)} | {cell(BF16, auc, a)} | {cell('rechub', auc, a)} | {cell('msmt', params, lambda v: f'{v:,}')} "
            f"| {cell('rechub', params, lambda v: f'{v:,}')} | {cell('msmt', mem, lambda v: f'{v:.0f}')} | {cell('rechub', mem, lambda v: f'{v:.0f}')} |"
        )
    lines += [
        "",
        "Peak MB: RSS high-water mark of 20 training steps minus RSS before building the model, in a fresh process.",
        "",
        "## The limit",
        "",
        f"GEMM microbenchmark at each model's dense-layer shapes (the forward, dX and dW products of every "
        f"Linear at batch {BATCH}, {args.threads} threads, best of 3 windows): the model's GEMM rate is the "
        "FLOP-weighted rate of its own GEMMs (Σ flops / Σ flops/rate), and its ceiling = that rate / the "
        "training FLOPs per sample (`FlopCounterMode`: every matmul, including batched ones, whose rate is "
        "taken to be the dense layers' — optimistic for M2M's per-row products). The ceiling is what the "
        "step would reach if it did nothing but these GEMMs back to back.",
        "",
        "| model | train MFLOP / sample | GEMM rate fp32 / bf16 GFLOP/s | fp32 ceiling samples/s | msmt fp32 samples/s | fraction | bf16 ceiling | msmt bf16 samples/s | fraction |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.models:
        ceil, ceil16 = gemm[name] / flops[name], gemm_bf16[name] / flops[name]
        mt, mb16 = med(train_r[(name, "msmt")], 0), med(train_r[(name, BF16)], 0)
        lines.append(
            f"| {name} | {flops[name] / 1e6:.2f} | {gemm[name] / 1e9:.0f} / {gemm_bf16[name] / 1e9:.0f} | {ceil:,.0f} | {mt:,.0f} "
            f"| {mt / ceil:.0%} | {ceil16:,.0f} | {mb16:,.0f} | {mb16 / ceil16:.0%} |"
        )
    lines += [
        "",
        f"Where an MMoE training step's time goes (`torch.profiler`, 20 steps, {args.threads} threads):",
        "",
        prof_table,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


def _fmt_load(load) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


if __name__ == "__main__":
    raise SystemExit(main())
