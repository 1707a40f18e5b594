"""The forecasting study's long table keeps each run's test and validation splits apart."""

import json

import numpy as np
import pandas as pd
import pytest

from msmt.experiments.bench import train_missing
from msmt.experiments.forecasting import Study, Variant, study_records, summarise
from msmt.spec.errors import ConfigError


def _block(value: float, rows: int) -> dict:
    cell = {"clicks": {"nmae": value, "rows": rows}}
    return {"rows": rows, "overall": cell, "scenarios": {"search": {"clicks": {"nmae": value + 1, "rows": rows}}}}


def test_records_carry_the_validation_split_beside_the_test_split(tmp_path):
    runs = {}
    for seed, (val, test) in enumerate([(0.2, 0.3), (0.4, 0.5)]):
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"val": _block(val, 10), "test": _block(test, 20)}))
        runs[("m2m", seed)] = run
    only_val = tmp_path / "val_only"
    only_val.mkdir()
    (only_val / "metrics.json").write_text(json.dumps({"val": _block(0.9, 10)}))
    runs[("naive_mean", 0)] = only_val
    study = Study(tmp_path / "experiment.yaml", tmp_path, [0, 1], [Variant("m2m", ())])
    records = study_records(study, runs)
    overall = records[records["scenario"] == "overall"].set_index(["variant", "seed", "split"])["value"]
    assert overall[("m2m", 0, "val")] == 0.2 and overall[("m2m", 0, "test")] == 0.3
    assert overall[("m2m", 1, "val")] == 0.4 and overall[("m2m", 1, "test")] == 0.5
    assert overall[("naive_mean", 0, "val")] == 0.9  # a run without a test split: its validation split, once
    assert len(records[records["variant"] == "naive_mean"]) == 2  # overall + one scenario
    means = summarise(records).set_index(["variant", "split", "scenario"])["mean"]
    assert abs(means[("m2m", "val", "overall")] - 0.3) < 1e-12 and abs(means[("m2m", "test", "overall")] - 0.4) < 1e-12
    assert abs(means[("m2m", "test", "search")] - 1.4) < 1e-12
    assert set(records[records["variant"] == "m2m"]["rows"]) == {10, 20}


def test_cells_are_the_mean_and_population_std_over_seeds():
    """Three seeds whose median is not their mean: a cell is mean ± std (ddof = 0) over the seeds."""
    values = [0.1, 0.2, 0.9]
    records = pd.DataFrame([dict(variant="m2m", seed=s, split="test", scenario="overall", task="clicks", metric="nmae",
                                 value=v, rows=10) for s, v in enumerate(values)])
    cell = summarise(records).iloc[0]
    assert cell["mean"] == pytest.approx(np.mean(values)) and cell["std"] == pytest.approx(np.std(values))
    assert cell["seeds"] == 3 and cell["rows"] == 10


def test_study_defaults_apply_to_every_run_and_a_variant_own_setting_wins(tmp_path):
    """``Study.defaults`` (``benchmarks/forecasting.py --default``) come first, so ``train.epochs=60`` reaches the
    trained models while the naive forecasters keep their own ``train.epochs=2``; empty defaults leave every
    run's overrides as they were (its finished runs stay reusable)."""
    from msmt.experiments.forecasting import main_variants
    from msmt.spec.config import load_experiment
    from msmt.synth.simple import write_simple

    config = write_simple(tmp_path / "data", rows=200, seed=0) / "experiment.yaml"
    variants = {v.name: v for v in main_variants()}
    plain = Study(config, tmp_path, [0], list(variants.values()))
    budget = Study(config, tmp_path, [0], list(variants.values()), defaults=("train.epochs=60",))
    for name, epochs in (("naive_mean", 2), ("mmoe+history", 60), ("m2m", 60)):
        assert load_experiment(config, budget.overrides(variants[name], 0)).train.epochs == epochs, name
        assert budget.overrides(variants[name], 0)[1:] == plain.overrides(variants[name], 0)


def test_cross_section_twins_add_the_channel_and_m2m_alone_the_scenario_dropout(tmp_path):
    """``cross_section_variants``: every trained main variant once more with
    ``panel.cross_section_keys: [scenario]`` (its name + ``CROSS_SECTION``), M2M also with
    ``model.m2m.scenario_dropout``; the naive forecasters have no twin."""
    from msmt.experiments.forecasting import CROSS_SECTION, cross_section_variants, main_variants
    from msmt.spec.config import load_experiment
    from msmt.synth.advertiser import write_advertiser

    config = write_advertiser(tmp_path / "data", advertisers=12, days=20, seed=0) / "experiment.yaml"
    twins = {v.name: v for v in cross_section_variants(0.3)}
    trained = [v for v in main_variants() if not v.name.startswith("naive_")]
    assert sorted(twins) == sorted(v.name + CROSS_SECTION for v in trained)
    for v in trained:
        cfg = load_experiment(config, list(twins[v.name + CROSS_SECTION].overrides))
        assert cfg.dataset.panel.cross_section_keys == ("scenario",) and cfg.model.name == load_experiment(config, list(v.overrides)).model.name
        dropout = [o for o in twins[v.name + CROSS_SECTION].overrides if o.startswith("model.m2m.scenario_dropout")]
        assert dropout == (["model.m2m.scenario_dropout=0.3"] if v.name == "m2m" else [])
        if v.name == "m2m":
            assert cfg.model.params().scenario_dropout == 0.3
    assert load_experiment(config, list(main_variants()[-1].overrides)).dataset.panel.cross_section_keys == ()


def test_refit_twins_are_the_trained_variants_with_the_refit(tmp_path):
    """``refit_variants``: each trained variant once more with ``train.refit`` (its name + ``REFIT``),
    the rest of its config the same; the naive forecasters have no twin."""
    from msmt.experiments.forecasting import REFIT, main_variants, refit_variants
    from msmt.spec.config import load_experiment
    from msmt.synth.advertiser import write_advertiser

    config = write_advertiser(tmp_path / "data", advertisers=12, days=20, seed=0) / "experiment.yaml"
    twins = {v.name: v for v in refit_variants(main_variants())}
    trained = [v for v in main_variants() if not v.name.startswith("naive_")]
    assert sorted(twins) == sorted(v.name + REFIT for v in trained)
    for v in trained:
        plain, refit = (load_experiment(config, list(x.overrides)).to_dict() for x in (v, twins[v.name + REFIT]))
        assert not plain["train"]["refit"] and refit["train"]["refit"]
        refit["train"]["refit"] = False
        assert refit == plain


def test_a_twin_with_the_channel_is_scored_on_the_new_scenario_too(tmp_path):
    """``study_records`` scores the new scenario for M2M, the ``+history`` models and their twins (the
    channel's, a training option's: read back from each run's ``new_scenario.json`` cache), not for the
    other variants."""
    from msmt.experiments.forecasting import CROSS_SECTION

    runs = {}
    for name in ("m2m", "m2m" + CROSS_SECTION, "mmoe+history" + CROSS_SECTION, "m2m +ema3", "m2m w/o meta tower"):
        run = tmp_path / name.replace(" ", "_").replace("/", "-")
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"test": _block(0.3, 20)}))
        (run / "new_scenario.json").write_text(json.dumps({"3": _block(0.6, 5)}))  # written after metrics.json: current
        runs[(name, 0)] = run
    study = Study(tmp_path / "experiment.yaml", tmp_path, [0], [], new_scenario=tmp_path / "new_scenario.csv")
    records = study_records(study, runs)
    scored = set(records[records["split"] == "new K=3"]["variant"])
    assert scored == {"m2m", "m2m" + CROSS_SECTION, "mmoe+history" + CROSS_SECTION, "m2m +ema3"}


@pytest.mark.slow
def test_a_failed_run_raises_without_training_the_runs_not_yet_started(tiny_dir, tmp_path):
    """``train_missing`` with two jobs: a run that fails in its worker (a naive forecast offset on data
    without a panel) raises its error, and of the twelve runs queued behind it at most the few already
    handed to a worker train."""
    config = tiny_dir / "experiment.yaml"
    slow = ["train.epochs=5", "train.patience=5", "train.batch_size=64", "train.num_threads=1"]  # each run outlasts the failure
    good = [(["model.name=shared_bottom", f"train.seed={s}", *slow], tmp_path / f"sb{s}") for s in range(12)]
    with pytest.raises(ConfigError):
        train_missing(config, [(["model.forecast=last", *slow], tmp_path / "bad"), *good], jobs=2, log=lambda _: None)
    trained = [d for _, d in good if (d / "metrics.json").exists()]
    assert len(trained) <= 6, trained  # without the cancel all 12 train before the error surfaces


@pytest.mark.slow
def test_study_trains_the_same_runs_with_two_jobs_and_reuses_them(tiny_dir, tmp_path):
    """``Study.jobs`` (``--jobs``): worker processes train exactly the runs one process trains (each
    run's ``metrics.json`` equal), a second ``train()`` trains nothing, a run whose files are gone
    is the only one trained again, and the log says why each run is trained."""
    config = tiny_dir / "experiment.yaml"
    variants = [Variant("sb", ("model.name=shared_bottom",)), Variant("mmoe", ("model.name=mmoe",))]
    fast = ("train.epochs=1", "train.batch_size=256", "train.num_threads=1")
    logs: list[str] = []
    serial = Study(config, tmp_path / "serial", [0, 1], variants, fast, log=logs.append)
    parallel = Study(config, tmp_path / "parallel", [0, 1], variants, fast, log=logs.append, jobs=2)
    one = serial.train()
    assert logs == [f"training {one[(v.name, s)]} (new)" for s in (0, 1) for v in variants]  # seed-major, one at a time
    logs.clear()
    assert serial.train() == one and logs == []  # finished: reused
    two = parallel.train()
    assert logs[0] == "4 runs to train, 2 at a time (4 new)" and len(logs) == 5
    assert one.keys() == two.keys() == {(v.name, s) for v in variants for s in (0, 1)}
    for key in one:
        assert json.loads((one[key] / "metrics.json").read_text()) == json.loads((two[key] / "metrics.json").read_text()), key
    logs.clear()
    assert parallel.train() == two and logs == []  # every run finished: none trained, nothing logged
    (two[("mmoe", 1)] / "metrics.json").unlink()
    parallel.train()
    assert logs == [f"training {two[('mmoe', 1)]} (new)"]  # one run to train: no pool, the others reused
    logs.clear()
    for key in (("sb", 0), ("mmoe", 1)):  # trained by another source: the pool's line says so, with an example
        record = json.loads((two[key] / "provenance.json").read_text())
        (two[key] / "provenance.json").write_text(json.dumps({**record, "source_sha256": "0" * 64}))
    parallel.train()
    assert logs[0] == f"2 runs to train, 2 at a time (2 other code, e.g. {two[('sb', 0)]}: other code)", logs
