"""``train.tensorboard``: every epoch's history row reaches TensorBoard's event file with the same
values, and the restored epoch is recorded."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import encoded, model_config
from msmt.models import build_model
from msmt.spec.config import LossConfig, TrainConfig
from msmt.spec.errors import ConfigError
from msmt.training.loop import fit
from msmt.training.tensorboard import scalar_tag


def test_scalar_tags_group_losses_metrics_and_weights():
    assert scalar_tag("train_loss") == "loss/train"
    assert scalar_tag("val_loss") == "loss/val"
    assert scalar_tag("train_click_loss") == "loss_train/click"
    assert scalar_tag("val_dwell_loss") == "loss_val/dwell"
    assert scalar_tag("val_click_auc") == "val/click_auc"
    assert scalar_tag("weight_click") == "weight/click"


def test_every_epoch_of_the_history_is_in_the_event_file(tiny_schema, tiny_train, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_schema, model_config("mmoe"))
    data = encoded(tiny_train, tiny_schema)
    tc = TrainConfig(epochs=3, batch_size=64, progress=False, tensorboard=True, patience=5)
    result = fit(model, tc, LossConfig(), data, data, tiny_train, run_dir=tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert len(result.history) == 3
    for key in ("train_loss", "val_loss", "val_click_loss", "val_click_auc"):
        written = [(e.step, e.value) for e in events.Scalars(scalar_tag(key))]
        assert [step for step, _ in written] == [row["epoch"] for row in result.history]
        assert [value for _, value in written] == pytest.approx([row[key] for row in result.history], rel=1e-6)
    assert [e.value for e in events.Scalars("best_epoch")] == [result.best_epoch]


def test_off_by_default_writes_nothing(tiny_schema, tiny_train, tmp_path):
    model = build_model(tiny_schema, model_config("mmoe"))
    data = encoded(tiny_train, tiny_schema)
    fit(model, TrainConfig(epochs=1, batch_size=64, progress=False), LossConfig(), data, data, tiny_train, run_dir=tmp_path)
    assert not (tmp_path / "tensorboard").exists()


def test_without_the_package_the_setting_is_refused_naming_the_key(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises((ConfigError, ValueError), match="tensorboard"):
        TrainConfig(tensorboard=True)
