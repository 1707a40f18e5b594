"""The speed benchmark's msmt models and what is timed on them: the trainer's step, training
epochs, test AUC, and the ONNX / TorchInductor scorers.

Sizes: embedding 16, experts / bottom [256, 128], towers [64], MMoE and M2M with 4 experts, PLE
one level with 1 task expert + 2 shared experts (torch-rechub's models get the same sizes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from msmt.experiments.speed.data import BATCH
from msmt.models import build_model
from msmt.models.base import MultiTaskModel
from msmt.spec.batch import Batch, iterate_batches
from msmt.spec.config import ModelConfig
from msmt.spec.dataset import Task
from msmt.spec.fitted import FittedSchema
from msmt.training.losses import batch_losses
from msmt.training.optim import adamw

EMB, HIDDEN, TOWER, EXPERTS = 16, [256, 128], [64], 4
MODELS = ("shared_bottom", "mmoe", "ple", "esmm", "m2m")
# the model zoo's additions, timed next to MMoE with ``benchmarks/speed.py --models mmoe <these>``
ZOO = ("pepnet", "apg", "hmoe", "m3oe", "aitm", "escm2")
FUNNEL_MODELS = ("esmm", "escm2", "aitm")  # trained on the schema that declares the funnel
BF16 = "msmt bf16"  # the variant trained with train.precision=bf16 (autocast), scored likewise
ONNX = "msmt onnx"  # inference through ONNX Runtime (msmt export --format onnx; serve --backend onnx)
# msmt predict --compile [--precision bf16] [--autotune]: label -> (precision, autotune)
COMPILED_FP32, COMPILED_BF16, AUTOTUNED = "msmt compiled fp32", "msmt compiled bf16", "msmt compiled bf16 autotune"
COMPILED = {COMPILED_FP32: ("fp32", False), COMPILED_BF16: ("bf16", False), AUTOTUNED: ("bf16", True)}
_OWN_SECTION = {
    "mmoe": {"mmoe": {"num_experts": EXPERTS}},
    "ple": {"ple": {"num_levels": 1, "task_experts": 1, "shared_experts": 2}},
    "m2m": {"m2m": {"num_experts": EXPERTS}},
    "hmoe": {"hmoe": {"num_experts": EXPERTS}},
    "m3oe": {"m3oe": {"num_experts": EXPERTS}},
}


def schema_of(name: str, schemas: dict[str, FittedSchema]) -> FittedSchema:
    """The ESMM family's schema declares the purchase = click × cvr funnel; every other model uses the plain one."""
    return schemas["esmm" if name in FUNNEL_MODELS else "plain"]


def speed_model(name: str, schemas: dict[str, FittedSchema]) -> MultiTaskModel:
    """The registered model ``name`` at the benchmark's sizes (initialised from torch's RNG)."""
    cfg = ModelConfig(name=name, embedding_dim=EMB, hidden_dims=HIDDEN, tower_dims=TOWER, **_OWN_SECTION.get(name, {}))
    return build_model(schema_of(name, schemas), cfg)


def optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The trainer's optimiser (fused AdamW, msmt.training.optim), with Adam's settings: lr 1e-3, no decay."""
    return adamw(list(model.parameters()), lr=1e-3, weight_decay=0.0)


def batch_loss(model: nn.Module, batch: Batch, tasks: tuple[Task, ...], bf16: bool = False) -> Tensor:
    """Sum of the task losses of one batch; ``bf16``: the forward under ``torch.autocast(bfloat16)``
    (``train.precision=bf16``), the losses in float32."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(batch)
    return sum(batch_losses(tasks, {t: v.float() for t, v in out.items()}, batch).values())


def train_step(model: nn.Module, opt, tasks: tuple[Task, ...], bf16: bool = False):
    """``step(batch)``: forward, loss, backward and optimiser step, as msmt's trainer takes it."""

    def step(batch: Batch) -> None:
        loss = batch_loss(model, batch, tasks, bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def train_epochs(model: MultiTaskModel, train: Batch, epochs: int, bf16: bool = False, seed: int = 0) -> None:
    """``epochs`` shuffled passes over ``train`` (epoch e shuffled with seed ``seed + e``), batch BATCH."""
    model.train()
    step = train_step(model, optimizer(model), model.schema.spec.tasks, bf16=bf16)
    for ep in range(epochs):
        for b in iterate_batches(train, BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed + ep)):
            step(b)


@torch.inference_mode()
def held_out_auc(model: MultiTaskModel, test: Batch, bf16: bool = False, compiled: str | None = None) -> tuple[float, float]:
    """(click AUC, purchase AUC) of ``model`` on ``test`` from its raw outputs; ``bf16``: scored
    under autocast; ``compiled``: a label of :data:`COMPILED` (scored by its CompiledPredictor)."""
    model.eval()
    if compiled is not None:
        from msmt.scoring.compiled import CompiledPredictor

        precision, autotune = COMPILED[compiled]
        forward = CompiledPredictor(model, 8192, precision, autotune=autotune)
    else:

        def forward(b: Batch) -> dict[str, Tensor]:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return {t: v.float() for t, v in model(b).items()}

    preds = []
    for b in iterate_batches(test, 8192):
        out = forward(b)
        preds.append(torch.stack([out["click"], out["purchase"]], 1))
    p, y = torch.cat(preds).numpy(), test["labels"].numpy()
    return roc_auc_score(y[:, 0], p[:, 0]), roc_auc_score(y[:, 1], p[:, 1])


def onnx_runner(name: str, schemas: dict[str, FittedSchema], batch: Batch, threads: int):
    """An (untrained, seed 0) msmt model exported by msmt.scoring.export and loaded in ONNX Runtime
    with ``threads``: ``runner(batch) -> {task: [B] ndarray}``."""
    from msmt.scoring.export import OnnxRunner, write_onnx

    torch.manual_seed(0)
    model = speed_model(name, schemas).eval()
    path = Path(tempfile.mkdtemp()) / f"{name}.onnx"
    write_onnx(model, batch, path)
    return OnnxRunner(path, threads=threads, spin=False)  # spinning threads would slow the next measurement


def compiled_predictor(name: str, schemas: dict[str, FittedSchema], batch: Batch, precision: str, autotune: bool = False):
    """An (untrained, seed 0) msmt model behind msmt.scoring.compiled.CompiledPredictor, compiled by one warm-up call."""
    from msmt.scoring.compiled import CompiledPredictor

    torch.manual_seed(0)
    predictor = CompiledPredictor(speed_model(name, schemas), BATCH, precision, autotune=autotune)
    predictor(batch)
    return predictor
