"""Scoring a run's new scenario with another ``model.unseen_scenario_correction`` w is the same as
training it with that w: the option acts only on rows of a scenario training never saw, so the
held-out scan (``benchmarks/held_out_scenario.py --unseen-corrections``) and the forecasting
study's ``m2m (w = 1)`` row need no run of their own."""

import json

import numpy as np
import pytest

from msmt.experiments.bench import train_missing
from msmt.experiments.forecasting import (
    WHOLE_CORRECTION,
    Study,
    main_variants,
    new_scenario_blocks,
    new_scenario_blocks_by_correction,
    score_with_unseen_correction,
    study_records,
)
from msmt.rundir.layout import load_run
from msmt.spec.config import load_experiment
from msmt.synth.advertiser import write_advertiser

TINY = ("train.epochs=2", "train.batch_size=256", "train.num_threads=1", "train.progress=false", "train.seed=3",
        "model.name=m2m")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(the world's new_scenario.csv, {w: an M2M run trained with model.unseen_scenario_correction=w}),
    a world whose test period outlasts the new scenario's 7 unscored launch days."""
    root = tmp_path_factory.mktemp("unseen_scoring")
    config = write_advertiser(root / "data", advertisers=14, days=50, seed=5) / "experiment.yaml"
    trained = {w: root / f"w{w:g}" for w in (1.0, 0.5)}
    train_missing(config, [([*TINY, f"model.unseen_scenario_correction={w:g}"], d) for w, d in trained.items()], log=lambda _: None)
    return config.parent / "new_scenario.csv", trained


def _nmae(blocks: dict) -> dict:
    return {k: {t: b["overall"][t]["nmae"] for t in ("impressions", "clicks", "cost")} for k, b in blocks.items()}


def test_a_run_scored_with_w_equals_the_run_trained_with_w(runs):
    new, trained = runs
    same_weights = [load_run(d).model.state_dict() for d in trained.values()]
    for key, value in same_weights[0].items():  # training never sees an unseen scenario's row: the same weights
        assert np.array_equal(value.numpy(), same_weights[1][key].numpy()), key
    as_trained = {w: _nmae(new_scenario_blocks(d, new)) for w, d in trained.items()}
    rescored = _nmae(new_scenario_blocks(trained[1.0], new, unseen_correction=0.5))
    assert rescored == as_trained[0.5]
    assert _nmae(new_scenario_blocks(trained[0.5], new, unseen_correction=1.0)) == as_trained[1.0]
    assert as_trained[0.5][0] == as_trained[1.0][0]  # K = 0: no row has history of its own, f stays whole
    for k in (3, 7):
        assert as_trained[0.5][k] != as_trained[1.0][k], k  # with history the correction is shrunk
    together = new_scenario_blocks_by_correction(trained[0.5], new, [1.0, None, 0.25])  # one encoding for every w
    assert _nmae(together[1.0]) == as_trained[1.0] and _nmae(together[None]) == as_trained[0.5]  # None: the run's own w
    assert _nmae(together[0.25]) == _nmae(new_scenario_blocks(trained[1.0], new, unseen_correction=0.25))


def test_study_gives_m2m_runs_alone_the_correction_and_scores_them_also_with_the_whole_one(runs, tmp_path):
    new, trained = runs
    variants = {v.name: v for v in main_variants()}
    plain = Study(tmp_path / "experiment.yaml", tmp_path, [3], list(variants.values()))
    shrunk = Study(tmp_path / "experiment.yaml", tmp_path, [3], list(variants.values()), unseen_correction=0.5)
    config = new.parent / "experiment.yaml"
    for name, v in variants.items():
        w = load_experiment(config, shrunk.overrides(v, 3)).model.unseen_scenario_correction
        assert w == (0.5 if name == "m2m" else 1.0), name
        assert [o for o in shrunk.overrides(v, 3) if "unseen" not in o] == plain.overrides(v, 3)  # w = 1: runs as before
    study = Study(config, tmp_path, [3], [variants["m2m"]], new_scenario=new, unseen_correction=0.5)
    records = study_records(study, {("m2m", 3): trained[0.5]})
    cell = records[(records["scenario"] == "overall") & (records["metric"] == "nmae")].set_index(["variant", "split", "task"])["value"]
    whole = _nmae(new_scenario_blocks(trained[1.0], new))
    shrunk_nmae = _nmae(new_scenario_blocks(trained[0.5], new))
    for k in (0, 3, 7):
        for task in ("impressions", "clicks", "cost"):
            assert cell[("m2m", f"new K={k}", task)] == shrunk_nmae[k][task]
            assert cell[("m2m" + WHOLE_CORRECTION, f"new K={k}", task)] == whole[k][task]
    cache = json.loads((trained[0.5] / "new_scenario_w1.json").read_text())
    assert _nmae({int(k): b for k, b in cache.items()}) == whole
    plain_records = study_records(Study(config, tmp_path, [3], [variants["m2m"]], new_scenario=new), {("m2m", 3): trained[1.0]})
    assert "m2m" + WHOLE_CORRECTION not in set(plain_records["variant"])


def test_scoring_with_a_correction_refuses_a_value_outside_0_1_and_a_model_without_an_offset(runs, tmp_path):
    _, trained = runs
    model = load_run(trained[1.0]).model
    with pytest.raises(ValueError, match="outside"):
        score_with_unseen_correction(model, 1.5, "here")
    model.forecast = None
    with pytest.raises(ValueError, match="here: the model has no forecast offset"):
        score_with_unseen_correction(model, 0.5, "here")

