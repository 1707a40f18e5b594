"""Scoring panel data: history from several --context files, and a warning (with the number of
rows) when the given rows cannot supply a row's history window."""

from __future__ import annotations

import json

import pandas as pd

from helpers import run_main

WARNING = "warning: "


def expected_short_rows(frame: pd.DataFrame, window: int, context: pd.DataFrame | None = None) -> int:
    """Rows of ``frame`` in the first ``window`` days of frame + context whose unit (advertiser,
    scenario) is there on that first day."""
    given = pd.concat([context, frame]) if context is not None else frame
    first = given["day"].min()
    units_at_start = given.loc[given["day"] == first, ["advertiser_id", "scenario"]].drop_duplicates()
    early = frame[frame["day"] < first + window]
    return len(early.merge(units_at_start, on=["advertiser_id", "scenario"]))


def test_context_files_supply_history_and_a_short_one_is_named(trained_panel_run, tmp_path, capsys):
    run = trained_panel_run("mmoe")
    data = trained_panel_run.data_dir
    window = json.loads((run / "schema.json").read_text())["extra"]["panel"]["window"]
    test = pd.read_csv(data / "test.csv")

    # no --context: the first days of the test file lose their history, and it says how many rows
    assert run_main("evaluate", run, "--data", data / "test.csv", "--out", tmp_path / "bare.json") == 0
    err = capsys.readouterr().err
    short = expected_short_rows(test, window)
    assert 0 < short <= len(test)
    assert f"{WARNING}{short} of {len(test)} rows" in err and "--context" in err, err

    # the training and validation files as context: the full window, no warning, and exactly the
    # test metrics of training (which encoded the test split with the earlier splits as history)
    ctx = ["--context", data / "train.csv", "--context", data / "validation.csv"]
    assert run_main("evaluate", run, "--data", data / "test.csv", *ctx, "--out", tmp_path / "full.json") == 0
    assert WARNING not in capsys.readouterr().err
    full = json.loads((tmp_path / "full.json").read_text())
    assert full == json.loads((run / "metrics.json").read_text())["test"]
    assert json.loads((tmp_path / "bare.json").read_text()) != full

    # the validation file alone covers only part of the window of the first test days
    validation = pd.read_csv(data / "validation.csv")
    assert test["day"].min() - validation["day"].min() < window
    assert run_main("predict", run, "--data", data / "test.csv", "--context", data / "validation.csv", "--out", tmp_path / "p.csv") == 0
    short = expected_short_rows(test, window, validation)
    assert short > 0 and f"{WARNING}{short} of {len(test)} rows" in capsys.readouterr().err


def test_a_new_scenario_has_no_past_to_miss(trained_panel_run, capsys):
    """Units of a scenario launched with the data to score have no history before it: no warning."""
    run = trained_panel_run("mmoe")
    assert run_main("evaluate", run, "--data", trained_panel_run.data_dir / "new_scenario.csv") == 0
    assert WARNING not in capsys.readouterr().err
