"""The forecasting study's long table keeps each run's test and validation splits apart."""

import json

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
