"""``train.ema_epochs``: the moving average of the weights against one computed by hand from the
weights the optimiser stepped, and validation and early stopping on the average (a resumed run:
``test_resume.py``).

The independent computation: a run without the average records its weights after every optimiser
step; the average must leave that trajectory alone, so the run with it steps the same weights, and
its stored model must equal ``w̄₁ = w₁, w̄ₜ = d·w̄ₜ₋₁ + (1 − d)·wₜ`` over those recorded weights with
``d = 1 − 1 / (ema_epochs × steps per epoch)``.
"""

from __future__ import annotations

import pytest
import torch

from helpers import encoded, model_config
from msmt.models import build_model
from msmt.spec.config import LossConfig, TrainConfig
from msmt.training.averaging import ema_decay
from msmt.training.loop import fit, validation_loss

ROWS, BATCH = 1200, 200  # 6 optimiser steps per epoch
STEPS_PER_EPOCH = ROWS // BATCH


@pytest.fixture(scope="module")
def split(tiny_train, tiny_schema):
    train, val = tiny_train.iloc[:ROWS].reset_index(drop=True), tiny_train.iloc[ROWS:ROWS + 400].reset_index(drop=True)
    return encoded(train, tiny_schema), encoded(val, tiny_schema), val


def _fit(schema, split, record: list | None = None, select: bool = True, **tc):
    """(model, FitResult) of a fresh MMoE (dropout: the global RNG must be drawn alike with and without
    the average); ``record``: the trained weights after each optimiser step are appended to it."""
    train_data, val_data, val = split
    torch.manual_seed(0)
    model = build_model(schema, model_config("mmoe", dropout=0.1))
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if record is not None:
            record.append({k: v.detach().clone() for k, v in model.named_parameters()})
        return out

    torch.optim.AdamW.step = step
    try:
        settings = dict(epochs=4, batch_size=BATCH, lr=0.02, patience=10, progress=False) | tc
        return model, fit(model, TrainConfig(**settings), LossConfig(), train_data, val_data, val, select=select)
    finally:
        torch.optim.AdamW.step = original


def _by_hand(trajectory: list[dict], decay: float) -> dict:
    average = {k: v.clone() for k, v in trajectory[0].items()}
    for weights in trajectory[1:]:
        for k, v in weights.items():
            average[k] = decay * average[k] + (1 - decay) * v
    return average


def test_the_decay_has_a_time_constant_of_ema_epochs():
    assert ema_decay(2.0, 50) == pytest.approx(0.99)
    assert ema_decay(0.5, 1) == 0.0  # shorter than a step: the last weights


def test_the_stored_weights_are_the_moving_average_of_the_trained_ones(tiny_schema, split):
    plain, averaged = [], []
    _, ref = _fit(tiny_schema, split, plain, select=False)
    model, result = _fit(tiny_schema, split, averaged, select=False, ema_epochs=1.5)
    assert len(plain) == 4 * STEPS_PER_EPOCH
    for before, after in zip(plain, averaged, strict=True):  # the optimiser's trajectory is untouched
        for name, value in before.items():
            assert torch.equal(after[name], value), name
    expected = _by_hand(plain, 1 - 1 / (1.5 * STEPS_PER_EPOCH))
    for name, value in model.named_parameters():
        assert torch.allclose(value, expected[name], atol=1e-6, rtol=1e-5), name
    last = plain[-1]
    assert any(not torch.allclose(last[name], expected[name], atol=1e-4) for name in last)  # the average is not the last weights
    # every epoch's validation scored the average: the last epoch's loss is the stored model's
    train_data, val_data, val = split
    assert result.history[-1]["val_loss"] == pytest.approx(validation_loss(model, val_data, 8192)["loss"], rel=1e-6)
    assert result.history[-1]["val_loss"] != pytest.approx(ref.history[-1]["val_loss"], rel=1e-4)


def test_early_stopping_selects_and_keeps_the_best_average(tiny_schema, split):
    model, result = _fit(tiny_schema, split, epochs=8, patience=2, ema_epochs=1.0, lr=0.05)
    losses = [row["val_loss"] for row in result.history]
    assert result.best_epoch == min(range(len(losses)), key=losses.__getitem__) + 1
    train_data, val_data, val = split
    assert validation_loss(model, val_data, 8192)["loss"] == pytest.approx(losses[result.best_epoch - 1], rel=1e-6)


def test_a_naive_forecaster_keeps_its_fitted_scale(tmp_path):
    """The naive forecasters' scale is fitted in a few epochs, shorter than the average's time constant: with
    ``ema_epochs`` their stored weights are the fit's own, equal to a run without it, and the fit moved them
    (an average started at the first step would still sit near the unfitted scale, log s = 0)."""
    from msmt.data.fit import fit_schema
    from msmt.data.loading import read_data
    from msmt.data.tensorize import encode_frame
    from msmt.spec.config import load_dataset_spec
    from msmt.synth.advertiser import write_advertiser

    out = write_advertiser(tmp_path, advertisers=20, days=30, seed=3)
    spec = load_dataset_spec(out / "dataset.yaml")
    train, val = read_data(out / "train.csv", spec), read_data(out / "validation.csv", spec)
    schema = fit_schema(train, spec)
    data = (encode_frame(train, schema), encode_frame(val, schema, context=train), val)

    def trained(name: str, **tc) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(schema, model_config(name))
        fit(model, TrainConfig(**(dict(epochs=2, batch_size=64, lr=0.02, patience=10, progress=False) | tc)), LossConfig(), *data)
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    plain, averaged = trained("naive_mean"), trained("naive_mean", ema_epochs=3.0)
    assert all(torch.equal(averaged[n], plain[n]) for n in plain)
    assert plain["log_scale"].abs().max() > 0.02  # the fit moved the scale: an average towards its start would differ
    # the same average on a network does change its stored weights (the averaging is on for the run)
    network, reference = trained("mmoe", ema_epochs=3.0), trained("mmoe")
    assert any(not torch.equal(network[n], reference[n]) for n in reference)
