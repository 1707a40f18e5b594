"""The forecasting study's long table keeps each run's test and validation splits apart."""

import json

import numpy as np
import pandas as pd
import pytest

from msmt.experiments.forecasting import Study, Variant, study_records, summarise


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
