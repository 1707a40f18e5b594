"""Early stopping on the monitored measure and gradient clipping, through the one trainer.

The validation labels are made to disagree with the training ones, so the monitored measure
worsens as training proceeds: the best epoch is then an early one, training stops ``patience``
epochs after it, and the model handed back holds that epoch's weights (its validation measure
is the best one of the history). The direction is the measure's: AUC higher, NMAE and loss lower.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import encoded, model_config
from msmt.evaluation.evaluate import evaluate_model
from msmt.models import build_model
from msmt.spec.config import LossConfig, TrainConfig
from msmt.training.loop import fit, validation_loss


@pytest.fixture(scope="module")
def split(tiny_train, tiny_schema):
    train, val = tiny_train.iloc[:1200].reset_index(drop=True), tiny_train.iloc[1200:1600].reset_index(drop=True)
    val_data = encoded(val, tiny_schema)
    names = tiny_schema.spec.task_names
    labels = val_data["labels"]
    labels[:, names.index("click")] = 1 - labels[:, names.index("click")]  # the opposite of what training teaches
    labels[:, names.index("purchase")] = 1 - labels[:, names.index("purchase")]
    dwell = labels[:, names.index("dwell")]
    labels[:, names.index("dwell")] = (dwell.max() - dwell).round()
    return encoded(train, tiny_schema), val_data, val


@pytest.mark.parametrize("monitor,column,higher", [("click.auc", "val_click_auc", True), ("dwell.nmae", "val_dwell_nmae", False),
                                                   ("loss", "val_loss", False)])
def test_early_stopping_keeps_the_best_epoch_of_the_monitored_measure(tiny_schema, split, monitor, column, higher):
    train_data, val_data, val = split
    torch.manual_seed(0)
    model = build_model(tiny_schema, model_config("shared_bottom"))
    tc = TrainConfig(epochs=12, batch_size=128, lr=0.02, patience=2, monitor=monitor, progress=False)
    result = fit(model, tc, LossConfig(), train_data, val_data, val)
    values = np.array([row[column] for row in result.history])
    best = int(np.argmax(values) if higher else np.argmin(values)) + 1
    assert result.best_epoch == best, values
    assert result.best_value == pytest.approx(values[best - 1])
    assert len(result.history) == best + tc.patience < tc.epochs, values  # stopped `patience` epochs after the best
    # the model handed back is the best epoch's, not the last one's
    if monitor == "loss":
        now = validation_loss(model, val_data, 8192)["loss"]
    else:
        task, _, measure = monitor.partition(".")
        now = evaluate_model(model, val, val_data)["overall"][task][measure]
    assert now == pytest.approx(values[best - 1], rel=1e-5)
    assert now != pytest.approx(values[-1], rel=1e-5)


def test_gradient_clipping_bounds_the_applied_gradient(tiny_schema, tiny_train):
    """``train.max_grad_norm`` c: the gradient the optimiser applies has global norm min(‖g‖, c)."""
    frame = tiny_train.iloc[:256].reset_index(drop=True)
    data = encoded(frame, tiny_schema)
    for c in (1e-3, None):
        torch.manual_seed(0)
        model = build_model(tiny_schema, model_config("shared_bottom"))
        fit(model, TrainConfig(epochs=1, batch_size=256, max_grad_norm=c, progress=False), LossConfig(), data, data, frame)
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
        if c is None:
            assert float(norm) > 100 * 1e-3  # unclipped, it is far above the bound
        else:
            assert float(norm) == pytest.approx(c, rel=1e-4)


def test_patience_counts_the_epochs_since_the_last_improvement(tiny_schema, split, monkeypatch):
    """A scripted monitored value (lower is better): best at epochs 1 and 3, worse after. With patience 2
    training stops 2 epochs after the last improvement (epoch 5), not after 2 non-improving epochs in all."""
    import msmt.training.loop as loop

    train_data, val_data, val = split
    script = iter([1.0, 2.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    real = loop._validate

    def scripted(*args):
        losses, metrics, _, _ = real(*args)
        return losses, metrics, next(script), False

    monkeypatch.setattr(loop, "_validate", scripted)
    small = {k: v[:128] for k, v in train_data.items()}
    val_small, val_rows = {k: v[:100] for k, v in val_data.items()}, val.iloc[:100]
    model = build_model(tiny_schema, model_config("shared_bottom"))
    tc = TrainConfig(epochs=7, batch_size=128, patience=2, progress=False)
    result = fit(model, tc, LossConfig(), small, val_small, val_rows)
    assert result.best_epoch == 3
    assert len(result.history) == 5


def test_without_selection_every_epoch_runs_and_the_last_is_kept(tiny_schema, split):
    """``fit(select=False)`` (the refit's): the monitored measure worsens, yet no epoch stops
    training and the model handed back is the last epoch's, not the best one's."""
    train_data, val_data, val = split
    torch.manual_seed(0)
    model = build_model(tiny_schema, model_config("shared_bottom"))
    tc = TrainConfig(epochs=6, batch_size=128, lr=0.02, patience=1, progress=False)
    result = fit(model, tc, LossConfig(), train_data, val_data, val, select=False)
    losses = np.array([row["val_loss"] for row in result.history])
    assert len(losses) == tc.epochs and result.best_epoch == tc.epochs
    assert int(np.argmin(losses)) + 1 < tc.epochs  # selection would have kept an earlier epoch
    assert validation_loss(model, val_data, 8192)["loss"] == pytest.approx(losses[-1], rel=1e-5)
