"""``train.lr_schedule``: the learning rate of every optimiser step against the closed-form cosine, and
a cosine run interrupted after a checkpoint and resumed ends where an uninterrupted one ends."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import TINY_THREE_EPOCHS, TINY_THREE_EPOCHS_STEPS, encoded, model_config, run_main
from msmt.experiments.run import run_experiment
from msmt.models import build_model
from msmt.spec.config import ConfigError, LossConfig, TrainConfig, load_experiment
from msmt.training.checkpoint import CHECKPOINT
from msmt.training.loop import fit
from msmt.training.optim import cosine_factor

SETTINGS = [*TINY_THREE_EPOCHS, "train.lr=0.004", "train.lr_schedule=cosine", "train.lr_min=0.0004"]
STEPS = TINY_THREE_EPOCHS_STEPS


def test_the_cosine_factor_in_closed_form():
    assert cosine_factor(0, 100, 0.1) == pytest.approx(1.0)
    assert cosine_factor(50, 100, 0.1) == pytest.approx(0.55)  # halfway: the mean of 1 and the floor
    assert cosine_factor(25, 100, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_factor(100, 100, 0.1) == pytest.approx(0.1) == cosine_factor(130, 100, 0.1)  # held at the floor


def _record_step_rates(monkeypatch) -> list[float]:
    rates = []
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return rates


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_each_step_runs_at_the_scheduled_rate(tiny_dir, tmp_path, monkeypatch, schedule):
    rates = _record_step_rates(monkeypatch)
    run_experiment(load_experiment(tiny_dir / "experiment.yaml", [*SETTINGS, f"train.lr_schedule={schedule}"]), tmp_path / "run")
    assert len(rates) == STEPS
    if schedule == "constant":
        assert rates == [0.004] * STEPS
    else:  # step k (from 0) runs at lr · factor(k): 0.004 at the first, near 0.0004 at the last
        assert rates == pytest.approx([0.004 * cosine_factor(k, STEPS, 0.1) for k in range(STEPS)], rel=1e-9)
        assert rates[-1] < 0.0005


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_a_cosine_run_interrupted_and_resumed_ends_like_an_uninterrupted_one(tiny_dir, tmp_path, monkeypatch):
    settings = [*SETTINGS, "train.checkpoint_every=7", "model.dropout=0.1"]
    run_experiment(load_experiment(tiny_dir / "experiment.yaml", settings), tmp_path / "reference")
    count, original = [0], torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        count[0] += 1
        if count[0] == 40:  # after the checkpoint of step 35
            raise Interrupted
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    run = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        run_experiment(load_experiment(tiny_dir / "experiment.yaml", settings), run)
    monkeypatch.undo()
    assert (run / CHECKPOINT).exists() and not (run / "metrics.json").exists()
    assert run_main("train", "--resume", run, "--quiet") == 0  # the schedule continues from step 35, not from lr
    assert json.loads((run / "metrics.json").read_text()) == json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert (run / "history.csv").read_text() == (tmp_path / "reference" / "history.csv").read_text()


def test_lr_min_above_lr_is_rejected_naming_the_key(tiny_dir):
    with pytest.raises(ConfigError, match="lr_min"):
        load_experiment(tiny_dir / "experiment.yaml", ["train.lr=0.001", "train.lr_min=0.01"])


def test_the_schedule_counts_the_partial_last_batch_of_each_epoch(tiny_schema, tiny_train, monkeypatch):
    """100 rows in batches of 32: 4 steps per epoch (the last one of 4 rows), so 2 epochs are 8 steps
    and the cosine runs over 8, reaching lr_min only after the last step."""
    rates = _record_step_rates(monkeypatch)
    frame = tiny_train.iloc[:100].reset_index(drop=True)
    data = encoded(frame, tiny_schema)
    model = build_model(tiny_schema, model_config("shared_bottom"))
    tc = TrainConfig(epochs=2, batch_size=32, lr=0.01, lr_schedule="cosine", lr_min=0.001, patience=2, progress=False)
    fit(model, tc, LossConfig(), data, data, frame)
    assert rates == pytest.approx([0.01 * cosine_factor(k, 8, 0.1) for k in range(8)], rel=1e-9)
