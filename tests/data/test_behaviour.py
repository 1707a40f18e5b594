"""``dataset.behaviour`` (msmt.data.behaviour): each row's key's earlier outcomes as dense features,
against a per-row loop, causal (a row never sees its own, a same-time or a later label), and the
same numbers whether the earlier rows come from the frame, the context or a run's later split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from msmt.api import encode_for_scoring, load_run, train
from msmt.data.behaviour import behaviour_priors, behaviour_values
from msmt.data.fit import fit_schema
from msmt.data.tensorize import encode_frame
from msmt.spec.config import dataset_spec_from
from msmt.spec.errors import ConfigError

TASKS = [{"name": "click", "label": "click", "kind": "binary"},
         {"name": "dwell", "label": "dwell", "kind": "count", "scenarios": ["a"]},
         {"name": "score", "label": "score", "kind": "regression"}]


def _spec(tmp_path, length=3, prior=2.0, tasks=("click", "dwell"), **extra):
    raw = {"files": {"train": "x.csv"}, "scenario": {"column": "scenario"},
           "features": {"sparse": ["user"], "dense": ["age"]}, "tasks": TASKS,
           "behaviour": {"key": "user", "time": "t", "tasks": list(tasks), "length": length, "prior": prior}, **extra}
    return dataset_spec_from(raw, tmp_path / "dataset.yaml")


def _frame(n=120, seed=0, t0=0):
    rng = np.random.default_rng(seed)
    scenario = rng.choice(["a", "b"], n)
    return pd.DataFrame({
        "user": rng.choice(["u0", "u1", "u2", "u3"], n), "t": t0 + rng.integers(0, 25, n),  # many ties in time
        "scenario": scenario, "age": rng.normal(30, 5, n), "click": rng.integers(0, 2, n),
        "dwell": np.where(scenario == "a", rng.poisson(3, n), np.nan), "score": rng.normal(0, 1, n),
    })


def _loop(rows: pd.DataFrame, history: pd.DataFrame, spec, priors) -> np.ndarray:
    """The definition, row by row: the key's rows with an earlier time, the latest `length` of them."""
    b = spec.behaviour
    out = []
    for _, row in rows.iterrows():
        earlier = history[(history.user == row.user) & (history.t < row.t)].sort_values("t", kind="stable").tail(b.length)
        feats = []
        for name in b.tasks:
            y = earlier[spec.task(name).label]
            if name == "dwell":
                y = y[earlier.scenario == "a"]
            y = y.dropna()
            feats.append((y.sum() + b.prior * priors[name]) / (len(y) + b.prior) if len(y) + b.prior > 0 else priors[name])
        out.append([*feats, len(earlier)])
    return np.array(out, dtype=np.float64)


def _tie_free(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per (user, t): which of two same-time rows is 'latest' is not defined, so the
    length cap is compared where it is (the loop's stable order vs the code's stable order)."""
    return frame.drop_duplicates(["user", "t"]).reset_index(drop=True)


@pytest.mark.parametrize("length, prior", [(3, 2.0), (1000, 0.0)])
def test_features_match_a_per_row_loop(tmp_path, length, prior):
    spec = _spec(tmp_path, length=length, prior=prior)
    frame = _tie_free(_frame()) if length < 1000 else _frame()
    priors = behaviour_priors(frame, spec)
    assert priors["dwell"] == pytest.approx(frame.loc[frame.scenario == "a", "dwell"].mean())
    got = behaviour_values(frame, spec, priors)
    np.testing.assert_allclose(got, _loop(frame, frame, spec, priors), rtol=1e-12, atol=1e-12)


def test_a_row_without_the_task_counts_as_an_earlier_row_but_not_in_the_tasks_rate(tmp_path):
    """dwell exists in scenario a only: a value written in a scenario-b row is no dwell outcome (neither in the
    rate nor in the prior), and that row still counts among the key's earlier rows."""
    spec = _spec(tmp_path, length=1000, tasks=("dwell",))
    frame = _frame()
    frame["dwell"] = np.random.default_rng(3).poisson(3, len(frame)).astype(float)  # filled in scenario b as well
    priors = behaviour_priors(frame, spec)
    assert priors["dwell"] == pytest.approx(frame.loc[frame.scenario == "a", "dwell"].mean())
    np.testing.assert_allclose(behaviour_values(frame, spec, priors), _loop(frame, frame, spec, priors), rtol=1e-12, atol=1e-12)


def test_context_and_own_rows(tmp_path):
    spec = _spec(tmp_path, length=1000)
    early, late = _frame(seed=1), _frame(seed=2, t0=20)  # overlapping times: only strictly earlier rows count
    priors = behaviour_priors(early, spec)
    both = pd.concat([early, late], ignore_index=True)
    np.testing.assert_allclose(behaviour_values(late, spec, priors, context=early), _loop(late, both, spec, priors), atol=1e-12)
    np.testing.assert_allclose(behaviour_values(late, spec, priors, context=early, own_history=False),
                               _loop(late, early, spec, priors), atol=1e-12)
    unlabelled = late.drop(columns=["click", "dwell", "score"])  # rows to score: only the context is history
    np.testing.assert_allclose(behaviour_values(unlabelled, spec, priors, context=early), _loop(late, early, spec, priors), atol=1e-12)
    fresh = behaviour_values(late.assign(user="new"), spec, priors, context=early, own_history=False)
    assert (fresh[:, :2] == [priors["click"], priors["dwell"]]).all() and (fresh[:, 2] == 0).all()  # a new key: the means


def test_a_row_never_sees_its_own_a_same_time_or_a_later_label(tmp_path):
    spec = _spec(tmp_path, length=1000)
    frame = _frame(seed=3)
    priors = behaviour_priors(frame, spec)
    base = behaviour_values(frame, spec, priors)
    i = int(np.argmax(frame.t.to_numpy() * (frame.user == "u1").to_numpy()))  # u1's latest row
    same_or_later = (frame.user == frame.user[i]) & (frame.t >= frame.t[i])
    flipped = frame.copy()
    flipped.loc[same_or_later, "click"] = 1 - flipped.loc[same_or_later, "click"]
    assert behaviour_values(flipped, spec, priors)[i].tolist() == base[i].tolist()
    earlier = (frame.user == frame.user[i]) & (frame.t < frame.t[i])
    flipped.loc[earlier, "click"] = 1 - flipped.loc[earlier, "click"]
    moved = behaviour_values(flipped, spec, priors)
    assert moved[i, 0] != base[i, 0] and moved[i, 1:].tolist() == base[i, 1:].tolist()  # click rate only
    other_users = (frame.user != frame.user[i]).to_numpy()
    assert (moved[other_users] == base[other_users]).all()


def test_dates_order_like_numbers(tmp_path):
    spec = _spec(tmp_path, length=1000)
    frame = _frame(seed=4)
    dated = frame.assign(t=(pd.Timestamp("2024-01-01") + pd.to_timedelta(frame.t, unit="D")).dt.strftime("%Y-%m-%d"))
    priors = behaviour_priors(frame, spec)
    np.testing.assert_array_equal(behaviour_values(dated, spec, priors), behaviour_values(frame, spec, priors))


def test_spec_declares_the_features_once_and_refuses_what_it_cannot_summarise(tmp_path):
    spec = _spec(tmp_path)
    names = [f.name for f in spec.features.dense]
    assert names == ["age", "behaviour.click_rate", "behaviour.dwell_rate", "behaviour.events"]
    again = type(spec).model_validate(spec.model_dump(mode="json"))  # a run's schema.json read back
    assert [f.name for f in again.features.dense] == names
    assert "behaviour.click_rate" not in spec.required_columns() and {"user", "t"} <= set(spec.required_columns())
    with pytest.raises(ConfigError, match="behaviour.tasks: 'score' is a regression task"):
        _spec(tmp_path, tasks=("click", "score"))
    with pytest.raises(ConfigError, match="behaviour.tasks: unknown task 'clik'"):
        _spec(tmp_path, tasks=("clik",))
    with pytest.raises(ConfigError, match="behaviour: not with a panel section"):
        _spec(tmp_path, panel={"keys": ["user"], "time": "t", "metrics": ["age"]})
    with pytest.raises(ConfigError, match="derived by the behaviour section"):
        dataset_spec_from({"files": {"train": "x.csv"}, "scenario": {"column": "scenario"}, "tasks": TASKS,
                           "features": {"dense": ["behaviour.mine"]}}, tmp_path / "d.yaml")


def test_encoded_rows_carry_the_standardised_features(tmp_path):
    spec = _spec(tmp_path, length=1000)
    train_rows, later = _frame(seed=5), _frame(seed=6, t0=30)
    schema = fit_schema(train_rows, spec)
    assert schema.behaviour_priors == behaviour_priors(train_rows, spec)
    batch = encode_frame(later, schema, context=train_rows)
    raw = _loop(later, pd.concat([train_rows, later]), spec, schema.behaviour_priors)
    for j, name in enumerate(spec.behaviour.feature_names):
        stats = schema.dense[name]
        x = np.log1p(raw[:, j]) if name.endswith("events") else raw[:, j]
        np.testing.assert_allclose(batch["dense"][:, 1 + j].numpy(), (x - stats.mean) / stats.std, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def behaviour_run(tiny_dir, tmp_path_factory):
    """Logistic regression on the tiny synthetic data with the users' earlier click and dwell."""
    tmp = tmp_path_factory.mktemp("behaviour_run")
    spec = yaml.safe_load((tiny_dir / "dataset.yaml").read_text())
    spec["behaviour"] = {"key": "user_id", "time": "timestamp", "tasks": ["click", "dwell"], "length": 20}
    spec["files"] = {k: str(tiny_dir / v) for k, v in spec["files"].items()}
    cfg = yaml.safe_load((tiny_dir / "experiment.yaml").read_text())
    cfg["dataset"] = spec
    cfg["model"] = {"name": "logistic_regression"}
    cfg["train"].update(epochs=1, num_threads=1)
    (tmp / "exp.yaml").write_text(yaml.safe_dump(cfg))
    train(tmp / "exp.yaml", out=tmp / "run", quiet=True)
    return load_run(tmp / "run")


def test_a_run_scores_a_file_with_context_as_its_own_test_split(behaviour_run, tiny_dir):
    """The test split's features in training (earlier splits as context) are what
    ``msmt predict --data test --context train validation`` computes, after the schema round trip."""
    run = behaviour_run
    assert set(run.schema.behaviour_priors) == {"click", "dwell"}
    _, scored = encode_for_scoring(run, tiny_dir / "test.csv", context=[tiny_dir / "train.csv", tiny_dir / "validation.csv"])
    _, alone = encode_for_scoring(run, tiny_dir / "test.csv")  # without the earlier rows: fewer events counted
    from msmt.experiments.run import load_in_memory

    _, _, encoded = load_in_memory(run.schema.spec)
    np.testing.assert_allclose(scored["dense"].numpy(), encoded["test"]["dense"].numpy(), rtol=1e-6, atol=1e-6)
    events = [f.name for f in run.schema.spec.features.dense].index("behaviour.events")
    assert (alone["dense"][:, events] < scored["dense"][:, events]).any()


def test_the_service_reads_the_users_earlier_rows_from_the_request(behaviour_run, tiny_dir):
    """POST /v1/predict with the users' earlier rows as ``context`` answers what ``msmt predict
    --data ROWS --context EARLIER`` writes; without them the users are scored as new."""
    import warnings

    from msmt.api import score
    from msmt.serving.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    run = behaviour_run
    rows = pd.read_csv(tiny_dir / "test.csv").head(12).drop(columns=["click", "purchase", "dwell"])
    earlier = pd.concat([pd.read_csv(tiny_dir / f) for f in ("train.csv", "validation.csv")], ignore_index=True)
    earlier = earlier[earlier.user_id.isin(rows.user_id)][["user_id", "timestamp", "click", "dwell"]]
    assert len(earlier) > len(rows)
    client = TestClient(create_app(run))
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
               for r in json.loads(rows.to_json(orient="records"))]
    context = json.loads(earlier.to_json(orient="records"))
    answered = client.post("/v1/predict", json={"rows": records, "context": context})
    assert answered.status_code == 200, answered.text
    frame, batch = encode_for_scoring(run, rows, context=earlier)
    expected = score(run, frame, batch)
    got = pd.DataFrame(answered.json()["predictions"])
    for task in ("click", "dwell"):
        np.testing.assert_allclose(got[task].to_numpy(), expected[task], rtol=1e-5, atol=1e-6)
    blind = pd.DataFrame(client.post("/v1/predict", json={"rows": records}).json()["predictions"])
    assert not np.allclose(blind["click"].to_numpy(), got["click"].to_numpy())  # the context moved the scores
    bad = client.post("/v1/predict", json={"rows": records, "context": [{**context[0], "dwell": -1}]})
    assert bad.status_code == 422 and "context[0].dwell" in bad.text, bad.text
    assert client.get("/v1/schema").json()["behaviour"]["labels"] == ["click", "dwell"]


def test_streaming_refuses_a_behaviour_dataset(tmp_path):
    from msmt.data.streaming import check_streamable

    with pytest.raises(ConfigError, match="train.streaming: dataset.behaviour"):
        check_streamable(_spec(tmp_path))
