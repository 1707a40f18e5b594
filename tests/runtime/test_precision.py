"""Trainer speed levers that must not change the maths: fused AdamW and bf16 autocast."""

from __future__ import annotations

import copy

import pytest
import torch

from msmt.experiments.run import run_experiment
from msmt.spec.config import TrainConfig, load_experiment
from msmt.training.optim import build_optimizers

FAST = ["train.epochs=2", "train.batch_size=128", "train.progress=false", "train.num_threads=1"]


def test_fused_adamw_equals_the_reference_update():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Flatten(), torch.nn.Linear(16, 3))
    reference = copy.deepcopy(model)
    (opt,) = build_optimizers(model, [], TrainConfig(lr=0.01, weight_decay=0.1), distributed=False)
    assert opt.defaults["fused"] is True
    ref = torch.optim.AdamW(reference.parameters(), lr=0.01, weight_decay=0.1, foreach=False)  # the per-tensor loop
    x = torch.randint(0, 50, (32, 2))
    for _ in range(5):
        for m, o in ((model, opt), (reference, ref)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_runs_matmuls_in_bf16_and_learns_like_fp32(tiny_dir, tmp_path):
    seen: set[torch.dtype] = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear) and module.training:
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        bf16 = run_experiment(load_experiment(tiny_dir / "experiment.yaml", [*FAST, "train.precision=bf16"]), tmp_path / "bf16")
    finally:
        handle.remove()
    assert seen == {torch.bfloat16}  # every training-time Linear ran under autocast
    fp32 = run_experiment(load_experiment(tiny_dir / "experiment.yaml", FAST), tmp_path / "fp32")
    for task in ("click", "purchase"):
        a, b = bf16["test"]["overall"][task]["auc"], fp32["test"]["overall"][task]["auc"]
        assert a == pytest.approx(b, abs=0.02), task
    again = run_experiment(load_experiment(tiny_dir / "experiment.yaml", [*FAST, "train.precision=bf16"]), tmp_path / "bf16b")
    assert again == bf16  # still deterministic


def test_unknown_precision_is_rejected(tiny_dir):
    from msmt.spec.errors import ConfigError

    with pytest.raises(ConfigError, match="train.precision"):
        load_experiment(tiny_dir / "experiment.yaml", ["train.precision=fp8"])
