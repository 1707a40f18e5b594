"""Naive forecasts and the forecast offset against an independent pandas computation of each row's history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import model_config
from msmt.data.fit import fit_schema
from msmt.data.loading import read_data
from msmt.data.tensorize import encode_frame
from msmt.layers.naive import EPSILON_SHARE, ForecastOffset, NaiveForecast
from msmt.models import build_model
from msmt.spec.config import load_dataset_spec
from msmt.spec.errors import ConfigError
from msmt.synth.advertiser import write_advertiser


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(schema, validation frame, its batch with history from the training rows, training frame)."""
    out = write_advertiser(tmp_path_factory.mktemp("naive"), advertisers=25, days=30, seed=11)
    spec = load_dataset_spec(out / "dataset.yaml")
    train, val = read_data(out / "train.csv", spec), read_data(out / "validation.csv", spec)
    schema = fit_schema(train, spec)
    return schema, val, encode_frame(val, schema, context=train), train


def reference(frame: pd.DataFrame, context: pd.DataFrame, column: str, method: str, window: int, indicator: bool) -> np.ndarray:
    """Each row's naive forecast from its unit's earlier rows, the slow obvious way (NaN: no history)."""
    rows = pd.concat([context, frame], ignore_index=True)
    by_unit = {key: part.set_index("day")[column] for key, part in rows.groupby(["advertiser_id", "scenario"])}
    out = []
    for _, row in frame.iterrows():
        series = by_unit[(row["advertiser_id"], row["scenario"])]
        past = series[(series.index < row["day"]) & (series.index >= row["day"] - window)].sort_index()
        if indicator:
            past = (past > 0).astype(float)
        if past.empty:
            out.append(np.nan)
        elif method == "last":
            out.append(past.iloc[-1])
        elif method == "mean":
            out.append(past.mean())
        else:
            week = row["day"] - 7
            out.append(past.loc[week] if week in past.index else past.mean())
    return np.array(out, dtype=float)


@pytest.mark.parametrize("method", ["last", "mean", "weekday"])
def test_naive_forecasts_equal_a_row_by_row_reference(world, method):
    schema, val, batch, train = world
    rows = slice(0, 400)
    values, has = NaiveForecast(schema, method)(batch)
    window = schema.panel.window
    for task, column, indicator in [("impressions", "impressions", False), ("cost", "cost", False), ("active", "cost", True)]:
        expected = reference(val.iloc[rows], train, column, method, window, indicator)
        got = values[task][rows].numpy()
        seen = ~np.isnan(expected)
        assert seen.any() and (~seen).any() or seen.all()
        np.testing.assert_array_equal(has[task][rows].numpy(), seen)
        np.testing.assert_allclose(got[seen], expected[seen], rtol=1e-5)
        # without history: the task's training mean in the row's scenario
        prior = train.groupby("scenario")[task].mean()
        np.testing.assert_allclose(got[~seen], prior[val.iloc[rows]["scenario"].to_numpy()[~seen]].to_numpy(), rtol=1e-5)


def test_rows_without_history_get_the_scenario_prior(world):
    schema, val, _, train = world
    alone = encode_frame(val, schema)  # no training rows as context: the first days have no history
    values, has = NaiveForecast(schema, "mean")(alone)
    first = (val["day"] == val["day"].min()).to_numpy()
    assert not has["clicks"][torch.from_numpy(first.copy())].any()
    prior = train.groupby("scenario")["clicks"].mean()
    np.testing.assert_allclose(values["clicks"].numpy()[first], prior[val["scenario"][first]].to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("method", ["last", "mean", "weekday"])
def test_a_model_with_zero_correction_is_the_naive_forecaster(world, method):
    """log λ = log(b + ε) + f(x) with f ≡ 0 reproduces the registered naive forecaster exactly."""
    schema, _, batch, _ = world
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    naive = build_model(schema, model_config(f"naive_{method}")).eval()
    for name in ("mmoe", "m2m"):
        model = build_model(schema, model_config(name, forecast=method)).eval()
        model.network = lambda b, model=model: {t: torch.zeros(b["scenario"].shape[0]) for t in model.task_names}  # f ≡ 0
        with torch.no_grad():
            got, expected = model(inputs), naive(inputs)
        for task in ("impressions", "clicks", "cost"):
            torch.testing.assert_close(got[task], expected[task], rtol=0, atol=0)
            eps = EPSILON_SHARE * schema.task_stats[task]["mean"]
            values, _ = NaiveForecast(schema, method)(inputs)
            torch.testing.assert_close(torch.exp(got[task]), values[task] + eps, rtol=1e-5, atol=1e-5)
        assert torch.equal(got["active"], torch.zeros_like(got["active"]))  # no offset on binary tasks


def test_offset_is_on_by_default_on_panel_data_and_moves_predictions_with_history(world):
    schema, _, batch, _ = world
    model = build_model(schema, model_config("mmoe")).eval()
    assert isinstance(model.forecast, ForecastOffset) and model.forecast.selects  # auto: chosen by fit_statistics
    assert set(model.forecast.chosen().values()) == {"mean"}  # before the choice: the trailing mean
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    doubled = dict(inputs, **{"seq.raw": inputs["seq.raw"] * 2})
    with torch.no_grad():
        a, b = model(inputs), model(doubled)
    values, has = NaiveForecast(schema, "mean")(inputs)
    moved = has["impressions"] & (values["impressions"] > 0)
    # mmoe reads no history itself: the offset alone moves the log-rate by log((2b + ε)/(b + ε))
    eps = EPSILON_SHARE * schema.task_stats["impressions"]["mean"]
    b_ = values["impressions"][moved]
    torch.testing.assert_close(b["impressions"][moved] - a["impressions"][moved], torch.log((2 * b_ + eps) / (b_ + eps)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b["impressions"][~has["impressions"]], a["impressions"][~has["impressions"]])
    assert build_model(schema, model_config("mmoe", forecast="none")).forecast is None


def _backtest_choice(schema, frame, batch, candidates, tasks):
    """Per task, the candidate with the smallest Σ|y − b| (b: the pandas reference, the overall
    training mean where a row has no history) — the choice computed independently."""
    out = {}
    for task in tasks:
        column = schema.spec.history_of(schema.spec.task(task))
        y = frame[schema.spec.task(task).label].to_numpy(float)
        errors = []
        for method in candidates:
            b = reference(frame, batch["_context"], column, method, schema.panel.window, False)
            b = np.where(np.isnan(b), schema.task_stats[task]["mean"], b)
            errors.append(np.abs(y - b).sum())
        out[task] = candidates[int(np.argmin(errors))]
    return out


def test_auto_offset_chooses_per_task_the_naive_forecast_that_backtests_best(world):
    """``model.forecast: auto``: fit_statistics picks, per count task, the naive forecast with the
    smallest absolute error on the labelled batches — equal to a pandas backtest of each candidate."""
    schema, val, batch, train = world
    rows = val.iloc[:300].reset_index(drop=True)
    labelled = encode_frame(rows, schema, context=train)
    model = build_model(schema, model_config("mmoe"))
    assert model.fits_statistics
    model.fit_statistics([labelled])
    offset = model.forecast
    expected = _backtest_choice(schema, rows, dict(labelled, _context=train), offset.candidates, offset.tasks)
    assert offset.chosen() == expected


def test_auto_offset_follows_labels_that_equal_one_naive_forecast(world):
    """Labels planted as exactly the last value: every count task chooses ``last``, and the
    offset then reproduces that forecaster (f ≡ 0 gives naive_last + ε)."""
    schema, val, batch, train = world
    data = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    last, has = NaiveForecast(schema, "last", prior="overall")(data)
    model = build_model(schema, model_config("mmoe")).eval()
    for task in model.forecast.tasks:
        data["labels"][:, schema.spec.task_names.index(task)] = last[task]
    model.fit_statistics([data])
    assert set(model.forecast.chosen().values()) == {"last"}
    offsets = model.forecast.offsets(data)
    for i, task in enumerate(model.forecast.tasks):
        torch.testing.assert_close(torch.exp(offsets[task]), last[task] + model.forecast.epsilon[i], rtol=1e-5, atol=1e-5)


def test_each_count_tasks_offset_is_its_own_naive_forecast_whatever_the_task_order(world):
    """The offset reads every candidate in one pass over the history: with the binary task first in
    the task order (its column ahead of the count tasks'), each count task's offset under each
    candidate choice is still log(b + ε) of that task's own naive forecast by that candidate."""
    schema, val, _, train = world
    spec = schema.spec
    active = next(t for t in spec.tasks if t.name == "active")
    reordered = spec.model_copy(update={"tasks": [active, *(t for t in spec.tasks if t.name != "active")]})
    schema = fit_schema(train, reordered)
    inputs = encode_frame(val, schema, context=train, with_labels=False)
    offset = build_model(schema, model_config("mmoe")).forecast
    assert offset.tasks == ["impressions", "clicks", "cost"] and len(offset.candidates) == 3
    for c, method in enumerate(offset.candidates):
        offset.choice.fill_(c)
        with torch.no_grad():
            got = offset.offsets(inputs)
        values, _ = NaiveForecast(schema, method, prior="overall")(inputs)
        for i, task in enumerate(offset.tasks):
            torch.testing.assert_close(got[task], torch.log(values[task] + offset.epsilon[i]), rtol=0, atol=0)


@pytest.mark.parametrize("w", [0.0, 0.5])
def test_an_unseen_scenarios_rows_with_history_keep_w_of_the_correction(world, w):
    """``model.unseen_scenario_correction`` w: log λ = log(b + ε) + w f(x) on the rows of a scenario
    training never saw (index 0) that have their own history, log(b + ε) + f(x) everywhere else
    (known scenarios; rows without history, whose b is only the overall mean); binary heads untouched.
    The network's f is a fixed random vector per row, so each row is checked against the formula."""
    schema, val, batch, train = world
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    alone = encode_frame(val, schema, with_labels=False)  # no context: the first days have no history
    data = {k: torch.cat([inputs[k], alone[k]]) for k in alone}
    B = data["scenario"].shape[0]
    data["scenario"] = data["scenario"].clone()
    data["scenario"][::3] = 0  # every third row: a scenario training never saw
    f = {t: torch.randn(B, generator=torch.Generator().manual_seed(i)) for i, t in enumerate(schema.spec.task_names)}
    model = build_model(schema, model_config("mmoe", forecast="mean", unseen_scenario_correction=w)).eval()
    plain = build_model(schema, model_config("mmoe", forecast="mean")).eval()
    for m in (model, plain):
        m.network = lambda b, f=f: dict(f)
    with torch.no_grad():
        got, whole = model(data), plain(data)
    values, has = NaiveForecast(schema, "mean", prior="overall")(data)
    unseen = data["scenario"] == 0
    for i, task in enumerate(model.forecast.tasks):
        shrunk = unseen & has[task]
        assert shrunk.any() and (unseen & ~has[task]).any() and (~unseen & has[task]).any()
        offset = torch.log(values[task] + model.forecast.epsilon[i])
        torch.testing.assert_close(got[task][shrunk], offset[shrunk] + w * f[task][shrunk])
        torch.testing.assert_close(got[task][~shrunk], whole[task][~shrunk], rtol=0, atol=0)
        torch.testing.assert_close(whole[task], offset + f[task])
    torch.testing.assert_close(got["active"], f["active"], rtol=0, atol=0)


def test_unseen_scenario_correction_needs_a_forecast_offset(world):
    schema = world[0]
    with pytest.raises(ConfigError, match="model.unseen_scenario_correction"):
        build_model(schema, model_config("mmoe", forecast="none", unseen_scenario_correction=0.5))
    assert build_model(schema, model_config("mmoe", forecast="none")).forecast is None  # the default: nothing to refuse
    # a naive forecaster is the naive forecast itself, with no correction to shrink: it ignores the key (a run's
    # naive baselines are built from the run's own model config)
    assert build_model(schema, model_config("naive_mean", unseen_scenario_correction=0.5)).forecast is None


def test_auto_offset_ignores_the_labels_of_rows_without_the_task(world):
    """Observed rows' labels are the last value, the (more numerous) unobserved rows' labels the
    trailing mean: only the observed rows count, so every count task still chooses ``last``."""
    schema, val, batch, train = world
    data = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    last, _ = NaiveForecast(schema, "last", prior="overall")(data)
    mean, _ = NaiveForecast(schema, "mean", prior="overall")(data)
    n = data["labels"].shape[0]
    observed = torch.arange(n) < n // 4
    mask = torch.ones_like(data["labels"], dtype=torch.bool)
    model = build_model(schema, model_config("mmoe")).eval()
    for task in model.forecast.tasks:
        i = schema.spec.task_names.index(task)
        assert (last[task] != mean[task]).sum() > n // 4  # the two forecasts differ on most rows
        data["labels"][:, i] = torch.where(observed, last[task], mean[task])
        mask[:, i] = observed
    data["task_mask"] = mask.to(batch["task_mask"].dtype) if "task_mask" in batch else mask
    model.fit_statistics([data])
    assert set(model.forecast.chosen().values()) == {"last"}


def test_the_chosen_offset_is_saved_with_the_weights_and_an_older_run_loads_as_the_mean(world, tmp_path):
    from safetensors.torch import save_file

    from msmt.rundir.layout import _load_weights

    schema, val, batch, train = world
    model = build_model(schema, model_config("mmoe"))
    model.forecast.choice.fill_(1)  # "last"
    again = build_model(schema, model_config("mmoe"))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "new.safetensors"))
    _load_weights(again, tmp_path / "new.safetensors")
    assert set(again.forecast.chosen().values()) == {"last"}
    del state["forecast.choice"]  # written before the choice existed
    save_file(state, str(tmp_path / "old.safetensors"))
    _load_weights(again, tmp_path / "old.safetensors")
    assert set(again.forecast.chosen().values()) == {"mean"}


def _candidates(schema, data, offset):
    """[B, T, C] each candidate naive forecast of the offset's tasks (the overall prior without history)."""
    per = [NaiveForecast(schema, m, prior="overall")(data)[0] for m in offset.candidates]
    return torch.stack([torch.stack([p[t] for t in offset.tasks], 1) for p in per], -1)


def test_blend_offset_is_a_per_row_softmax_mix_of_the_naive_forecasts(world):
    """``model.forecast: blend``: b = Σ_c softmax(a + V z)_c b_c with z_c = log(b_c + ε) − log(b_mean + ε),
    checked against the same formula in NumPy with a random gate; a row's offset does not depend
    on its batch-mates."""
    schema, _, batch, _ = world
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    model = build_model(schema, model_config("mmoe", forecast="blend")).eval()
    offset = model.forecast
    assert offset.blends and not model.fits_statistics and len(offset.candidates) == 3
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        offset.gate_bias.copy_(torch.randn(offset.gate_bias.shape, generator=generator))
        offset.gate_weight.copy_(torch.randn(offset.gate_weight.shape, generator=generator))
        got = offset.offsets(inputs)
        alone = offset.offsets({k: v[7:8] for k, v in inputs.items()})
    b = _candidates(schema, inputs, offset).double().numpy()  # [B, T, C]
    eps = offset.epsilon.double().numpy()[None, :, None]
    z = np.log(b + eps) - np.log(b[..., [offset.candidates.index("mean")]] + eps)
    logits = offset.gate_bias.detach().double().numpy()[None] + np.einsum("btc,tcd->btd", z, offset.gate_weight.detach().double().numpy())
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    expected = np.log((w * b).sum(-1) + eps[..., 0])  # [B, T]
    assert (w.max(-1) < 0.999).mean() > 0.5  # a real mix, not one candidate
    for i, task in enumerate(offset.tasks):
        np.testing.assert_allclose(got[task].double().numpy(), expected[:, i], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(alone[task], got[task][7:8])
    assert offset.chosen()["clicks"].startswith("blend of")


def test_blend_gate_learns_to_follow_the_naive_forecast_the_labels_equal(world):
    """Labels planted as exactly the last value: training only the gate (f ≡ 0) by the Poisson
    loss moves each task's weight onto ``last`` from the plain average it starts at."""
    schema, _, batch, _ = world
    data = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    model = build_model(schema, model_config("mmoe", forecast="blend"))
    offset = model.forecast
    last = _candidates(schema, data, offset)[..., offset.candidates.index("last")]  # [B, T]
    optimiser = torch.optim.Adam([offset.gate_bias, offset.gate_weight], lr=0.1)

    def loss():
        rates = torch.stack([offset.offsets(data)[t] for t in offset.tasks], 1)  # log λ, f ≡ 0
        scale = last.mean(0)  # per task: comparable losses
        return ((torch.exp(rates) - last * rates) / scale).mean()

    start = loss().item()
    for _ in range(150):
        optimiser.zero_grad()
        value = loss()
        value.backward()
        optimiser.step()
    assert loss().item() < start - 0.05
    with torch.no_grad():
        b = _candidates(schema, data, offset)
        z = torch.log(b + offset.epsilon[None, :, None]) - torch.log(b[..., [offset.candidates.index("mean")]] + offset.epsilon[None, :, None])
        weights = torch.softmax(offset.gate_bias + torch.einsum("btc,tcd->btd", z, offset.gate_weight), -1).mean(0)  # [T, C]
    assert (weights[:, offset.candidates.index("last")] > 0.8).all(), weights


def backtest_reference(
    frame: pd.DataFrame, context: pd.DataFrame, column: str, window: int, days: int, eps: float, keys=("advertiser_id", "scenario")
) -> np.ndarray:
    """[N, 3] each row's mean |log(x_d + ε) − log(forecast_d + ε)| of the naive forecasts (mean, last,
    weekday) over the last ``days`` days of its window, each day forecast from the observed days of
    the window before it, the slow obvious way (0 where no day qualifies)."""
    rows = pd.concat([context, frame], ignore_index=True)
    by_unit = {key: part.set_index("day")[column] for key, part in rows.groupby(list(keys))}
    out = np.zeros((len(frame), 3))
    for n, (_, row) in enumerate(frame.iterrows()):
        series = by_unit[tuple(row[k] for k in keys)]
        start = row["day"] - window
        errors = []
        for day in range(row["day"] - days, row["day"]):
            before = series[(series.index >= start) & (series.index < day)].sort_index()
            if day not in series.index or before.empty:
                continue
            mean = before.mean()
            weekday = before.loc[day - 7] if day - 7 in before.index else mean
            errors.append([abs(np.log(series.loc[day] + eps) - np.log(f + eps)) for f in (mean, before.iloc[-1], weekday)])
        if errors:
            out[n] = np.mean(errors, axis=0)
    return out


@pytest.mark.parametrize("days", [7, 3])
def test_backtest_errors_equal_a_day_by_day_reference(world, days):
    """``blend_backtest``'s gate input: every candidate's recent error on the row's own series, against
    the unit's rows in pandas; a row's errors do not depend on its batch-mates."""
    schema, val, batch, train = world
    rows = slice(0, 300)
    model = build_model(schema, model_config("mmoe", forecast="blend_backtest", backtest_days=days)).eval()
    offset = model.forecast
    assert offset.candidates == ["mean", "last", "weekday"]
    got = offset.errors(batch)[rows].double().numpy()  # [N, T, C]
    alone = offset.errors({k: v[5:6] for k, v in batch.items()})
    torch.testing.assert_close(alone, offset.errors(batch)[5:6])
    for i, task in enumerate(offset.tasks):
        expected = backtest_reference(val.iloc[rows], train, task, schema.panel.window, days, float(offset.epsilon[i]))
        assert (expected > 0).mean() > 0.5 and (expected == 0).any()  # most rows have a backtest, some none
        np.testing.assert_allclose(got[:, i], expected, rtol=1e-4, atol=1e-5, err_msg=task)


def test_backtest_days_beyond_the_window_is_refused(world):
    schema = world[0]
    with pytest.raises(ConfigError, match="model.backtest_days"):
        build_model(schema, model_config("mmoe", forecast="blend_backtest", backtest_days=schema.panel.window + 1))


def test_blend_backtest_gate_is_the_blend_plus_the_errors_term(world):
    """b = Σ_c softmax(a + V z + U e)_c b_c, in NumPy with a random gate and the reference's errors."""
    schema, val, batch, train = world
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weight")}
    model = build_model(schema, model_config("mmoe", forecast="blend_backtest")).eval()
    offset = model.forecast
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in (offset.gate_bias, offset.gate_weight, offset.error_weight):
            p.copy_(torch.randn(p.shape, generator=generator))
        got = offset.offsets(inputs)
    rows = slice(0, 200)
    b = _candidates(schema, inputs, offset)[rows].double().numpy()  # [N, T, C]
    eps = offset.epsilon.double().numpy()[None, :, None]
    e = np.stack([backtest_reference(val.iloc[rows], train, t, schema.panel.window, 7, float(offset.epsilon[i])) for i, t in enumerate(offset.tasks)], 1)
    z = np.log(b + eps) - np.log(b[..., [offset.candidates.index("mean")]] + eps)
    gate = lambda name: getattr(offset, name).detach().double().numpy()  # noqa: E731
    logits = gate("gate_bias")[None] + np.einsum("btc,tcd->btd", z, gate("gate_weight")) + np.einsum("btc,tcd->btd", e, gate("error_weight"))
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    for i, task in enumerate(offset.tasks):
        np.testing.assert_allclose(got[task][rows].double().numpy(), np.log((w * b).sum(-1) + eps[..., 0])[:, i], rtol=1e-4, atol=1e-4)


def test_blend_backtest_gate_learns_to_follow_each_rows_recently_best_naive_forecast(world):
    """Labels planted per row as the candidate with the smallest recent backtest error: training the
    gate (f ≡ 0) by the Poisson loss, the backtest blend fits them far better than the blend, whose
    gate cannot see which candidate has been right lately, and puts most weight on that candidate."""
    schema, _, batch, _ = world
    data = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    losses = {}
    for method in ("blend", "blend_backtest"):
        torch.manual_seed(0)
        offset = build_model(schema, model_config("mmoe", forecast=method)).forecast
        probe = offset if offset.backtests else build_model(schema, model_config("mmoe", forecast="blend_backtest")).forecast
        errors = probe.errors(data)  # [B, T, C]
        b = _candidates(schema, data, offset)  # [B, T, C]
        keep = errors.sum(-1) > 0  # rows with a backtest
        best = errors.masked_fill(errors == 0, float("inf")).argmin(-1, keepdim=True)
        target = b.gather(-1, best).squeeze(-1)  # [B, T]
        params = [p for p in offset.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(params, lr=0.1)

        def loss(offset=offset, target=target, keep=keep):
            rates = torch.stack([offset.offsets(data)[t] for t in offset.tasks], 1)
            return (((torch.exp(rates) - target * rates) / target.mean(0)) * keep).sum() / keep.sum()

        floor = (((target + offset.epsilon) - target * torch.log(target + offset.epsilon)) / target.mean(0) * keep).sum() / keep.sum()
        for _ in range(200):
            optimiser.zero_grad()
            loss().backward()
            optimiser.step()
        losses[method] = (loss() - floor).item()  # excess over the labels' own rate
        if offset.backtests:
            with torch.no_grad():
                z = torch.log(b + offset.epsilon[None, :, None]) - torch.log(b[..., :1] + offset.epsilon[None, :, None])
                logits = offset.gate_bias + torch.einsum("btc,tcd->btd", z, offset.gate_weight) + torch.einsum("btc,tcd->btd", errors, offset.error_weight)
                weight = torch.softmax(logits, -1).gather(-1, best).squeeze(-1)[keep]
            assert weight.mean() > 0.6, weight.mean()
    assert losses["blend_backtest"] < 0.5 * losses["blend"], losses


# --------------------------------------------------------------------------- a hand-built panel

# unit -> (scenario, {day: spend}); every unit is scored at day 10, window 7 (days 3..9)
HAND = {
    "u1": ("a", {d: float(d) for d in range(10)}),  # every day: last 9, mean 6, weekday (day 3) 3
    "u2": ("b", {3: 4.0, 5: 0.0, 9: 2.0}),  # last 2, mean 2, weekday 4; indicator rate 2/3
    "u3": ("a", {5: 1.0, 8: 3.0, 9: 5.0}),  # day 3 missing, yesterday seen: weekday falls back to the mean 3
    "u4": ("b", {1: 7.0, 4: 6.0, 6: 0.0}),  # day 1 outside the window; last observed (day 6) is 0; mean 3
    "u5": ("a", {1: 3.0}),  # nothing in the window: the scenario's training mean
}
WANT = {  # (last, mean, weekday) of spend; of the indicator spend > 0
    "spend": {"u1": (9, 6, 3), "u2": (2, 2, 4), "u3": (5, 3, 3), "u4": (0, 3, 3)},
    "active": {"u1": (1, 1, 1), "u2": (1, 2 / 3, 1), "u3": (1, 1, 1), "u4": (0, 0.5, 0.5)},
}


def hand_scored_rows() -> pd.DataFrame:
    """Every unit of :data:`HAND` at day 10 (spend unknown)."""
    return pd.DataFrame({"unit": list(HAND), "scenario": [s for s, _ in HAND.values()], "day": 10, "spend": 0.0})


@pytest.fixture(scope="module")
def hand():
    from msmt.spec.dataset import DatasetSpec

    rows = [{"unit": u, "scenario": s, "day": d, "spend": v} for u, (s, days) in HAND.items() for d, v in days.items()]
    train = pd.DataFrame(rows)
    train["active"] = (train["spend"] > 0).astype(float)
    train["buy"] = np.where(train["scenario"] == "a", train["day"] % 3 == 0, train["day"] % 2 == 0).astype(float)  # no history
    spec = DatasetSpec.model_validate({
        "files": {"train": "in-memory"}, "scenario": {"column": "scenario"}, "features": {"sparse": ["unit"]},
        "tasks": [{"name": "spend", "label": "spend", "kind": "count"},
                  {"name": "active", "label": "active", "kind": "binary", "history": "spend"},
                  {"name": "buy", "label": "buy", "kind": "binary"}],
        "panel": {"keys": ["unit"], "time": "day", "window": 7, "metrics": ["spend"]},
    })
    schema = fit_schema(train, spec)
    score = hand_scored_rows()
    score["active"], score["buy"] = 0.0, 0.0
    return schema, train, encode_frame(score, schema, context=train, with_labels=False)


@pytest.mark.parametrize("k,method", list(enumerate(["last", "mean", "weekday"])))
def test_naive_forecasts_of_a_hand_built_panel_with_gaps(hand, k, method):
    schema, train, batch = hand
    values, has = NaiveForecast(schema, method)(batch)
    for task in ("spend", "active"):
        got = values[task].numpy()
        np.testing.assert_allclose(got[:4], [WANT[task][u][k] for u in ["u1", "u2", "u3", "u4"]], rtol=1e-6, err_msg=task)
        assert has[task].tolist() == [True, True, True, True, False]
        assert got[4] == pytest.approx(train.loc[train["scenario"] == "a", task].mean())


def test_naive_forecaster_model_at_start(hand):
    """count: log(b + ε), ε = 1% of the training mean; binary: logit(clip(r, 0.02, 0.98)); a task
    without history: the logit of its training mean in the row's scenario."""
    schema, train, batch = hand
    torch.manual_seed(0)
    model = build_model(schema, model_config("naive_last")).eval()
    with torch.no_grad():
        out = {t: v.numpy() for t, v in model(batch).items()}
    last = np.array([WANT["spend"][u][0] for u in ["u1", "u2", "u3", "u4"]], dtype=float)
    eps = EPSILON_SHARE * train["spend"].mean()
    np.testing.assert_allclose(out["spend"][:4], np.log(last + eps), rtol=1e-5)
    r = np.clip([WANT["active"][u][0] for u in ["u1", "u2", "u3", "u4"]], 0.02, 0.98)
    np.testing.assert_allclose(out["active"][:4], np.log(r / (1 - r)), rtol=1e-5)
    buy = train.groupby("scenario")["buy"].mean()
    assert 0 < buy["a"] < 1 and 0 < buy["b"] < 1 and buy["a"] != buy["b"]
    np.testing.assert_allclose(1 / (1 + np.exp(-out["buy"])), buy[[s for s, _ in HAND.values()]].to_numpy(), rtol=1e-5)


def test_naive_forecaster_applies_its_fitted_parameters(hand):
    """Off their start values the fitted parameters enter as the closed form says: count
    log(b + ε) + log s, binary a + c · logit(clip(r, 0.02, 0.98)) (Platt), a task without history
    the link of its scenario's training mean plus a shift (naive_mean, the hand-built panel)."""
    schema, train, batch = hand
    model = build_model(schema, model_config("naive_mean")).eval()
    i = {t: k for k, t in enumerate(model.task_names)}
    with torch.no_grad():
        model.log_scale[i["spend"]] = 0.4
        model.bias[i["active"]], model.slope[i["active"]] = -0.3, 1.7
        model.bias[i["buy"]] = 0.25
        out = {t: v.numpy() for t, v in model(batch).items()}
    units = ["u1", "u2", "u3", "u4"]
    mean = np.array([WANT["spend"][u][1] for u in units], dtype=float)
    np.testing.assert_allclose(out["spend"][:4], np.log(mean + EPSILON_SHARE * train["spend"].mean()) + 0.4, rtol=1e-5)
    r = np.clip([WANT["active"][u][1] for u in units], 0.02, 0.98)
    np.testing.assert_allclose(out["active"][:4], -0.3 + 1.7 * np.log(r / (1 - r)), rtol=1e-5)
    buy = train.groupby("scenario")["buy"].mean()[[s for s, _ in HAND.values()]].to_numpy()
    np.testing.assert_allclose(out["buy"], np.log(buy / (1 - buy)) + 0.25, rtol=1e-5)


def test_naive_forecaster_of_a_regression_task_is_its_scaled_shifted_naive_value(hand):
    """A regression task with a history: b · exp(log s) + shift, on the hand-built panel's trailing means."""
    from msmt.spec.dataset import DatasetSpec

    _, train, _ = hand
    spec = DatasetSpec.model_validate({
        "files": {"train": "in-memory"}, "scenario": {"column": "scenario"}, "features": {"sparse": ["unit"]},
        "tasks": [{"name": "spend", "label": "spend", "kind": "regression"}],
        "panel": {"keys": ["unit"], "time": "day", "window": 7, "metrics": ["spend"]},
    })
    schema = fit_schema(train, spec)
    model = build_model(schema, model_config("naive_mean")).eval()
    with torch.no_grad():
        model.log_scale[0], model.bias[0] = 0.4, 0.2
        out = model(encode_frame(hand_scored_rows(), schema, context=train, with_labels=False))["spend"].numpy()
    mean = np.array([WANT["spend"][u][1] for u in ["u1", "u2", "u3", "u4"]], dtype=float)
    np.testing.assert_allclose(out[:4], mean * np.exp(0.4) + 0.2, rtol=1e-5)


def test_backtest_errors_of_a_hand_built_panel_with_gaps(hand):
    """Only days the unit has a value for, with one before them in the window, are backtested: u2's
    days 5 and 9, u3's 8 and 9, u4's day 6 (its day 4 has nothing before it in the window), none of u1's first."""
    schema, train, batch = hand
    offset = build_model(schema, model_config("mmoe", forecast="blend_backtest")).forecast
    assert offset.tasks == ["spend"]
    eps = float(offset.epsilon[0])
    got = offset.errors(batch)[:, 0].double().numpy()  # [5 units, C]
    expected = backtest_reference(hand_scored_rows(), train, "spend", 7, 7, eps, keys=("unit",))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    gap = abs(np.log(eps) - np.log(6 + eps))  # u4 on day 6: 0 against every forecast of 6
    np.testing.assert_allclose(got[3], [gap] * 3, rtol=1e-5)
    assert (got[4] == 0).all()  # u5: nothing in the window
