"""``msmt.experiments.twins``: which runs a training option's study trains, and how they pair."""

from __future__ import annotations

from pathlib import Path

from msmt.experiments.forecasting import NAIVE
from msmt.experiments.twins import BLEND, Twin, backtest_fold_note, chosen, online_variants, page_command, world_variants

EMA = Twin(" +ema3", "train.ema_epochs=3", "weight average")
ONLINE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "online_ads.yaml"


def test_online_twins_are_the_blend_variants_with_the_option():
    variants, pairs = online_variants(EMA)
    by_name = {v.name: v for v in variants}
    assert [v.name for v in variants[: len(NAIVE)]] == list(NAIVE)  # the naive forecasters, untwinned
    assert pairs and all(base.endswith(BLEND) and twin == base + EMA.suffix for base, twin in pairs)
    for base, twin in pairs:
        assert by_name[twin].overrides == (*by_name[base].overrides, EMA.setting)
        assert "model.forecast=blend" in by_name[base].overrides
    assert len(variants) == len(NAIVE) + 2 * len(pairs)


def test_world_twins_and_the_chosen_models():
    variants, pairs = world_variants(["m2m"], EMA)
    assert pairs == [("m2m", "m2m +ema3")]
    assert [v.name for v in variants] == [*NAIVE, "m2m", "m2m +ema3"]
    online, _ = online_variants(EMA)
    assert {v.name for v in chosen(online, ["m2m"], EMA)} == {"m2m" + BLEND, "m2m" + BLEND + EMA.suffix}
    assert chosen(online, None, EMA) == online


def test_the_cost_table_counts_every_epoch_a_run_trained(tmp_path):
    import json

    import pandas as pd

    from msmt.experiments.twins import cost_table, epochs_trained, training_seconds

    runs = {}
    for name, seed, epochs, refit, seconds in (("a", 0, 4, 0, 10.0), ("a", 1, 6, 0, 20.0), ("a +x", 0, 8, 3, 30.0), ("a +x", 1, 10, 0, 50.0)):
        run = tmp_path / f"{name}-{seed}"
        run.mkdir()
        pd.DataFrame({"epoch": range(1, epochs + 1)}).to_csv(run / "history.csv", index=False)
        if refit:
            pd.DataFrame({"epoch": range(1, refit + 1)}).to_csv(run / "refit_history.csv", index=False)
        (run / "bench.json").write_text(json.dumps({"seconds": seconds}))
        runs[(name, seed)] = run
    assert epochs_trained(runs[("a +x", 0)]) == 11
    assert cost_table(runs, [("a", "a +x")])[-1] == "| a | 5.0 → 10.5 | 15 → 40 |"
    assert training_seconds(runs.values()) == 110.0


def test_a_twin_gets_the_settings_its_option_requires_only_where_its_variant_lacks_them():
    live = Twin(" +live", "model.history_live=true", "live history", requires=("model.history_summary=true",))
    variants, pairs = world_variants(["mmoe+history", "m2m"], live)
    by_name = {v.name: v for v in variants}
    assert pairs == [("mmoe+history", "mmoe+history +live"), ("m2m", "m2m +live")]
    assert by_name["mmoe+history +live"].overrides == ("model.name=mmoe", "model.history_summary=true", "model.history_live=true")
    assert by_name["m2m +live"].overrides == ("model.name=m2m", "model.history_summary=true", "model.history_live=true")
    online, _ = online_variants(live)
    assert all(v.overrides.count("model.history_summary=true") == 1 for v in online if v.name.endswith(" +live"))


def test_online_twins_with_another_offset_are_the_forecasting_study_runs_with_it():
    """``--online-offset blend_backtest``: each trained variant with that offset, named and set as the
    forecasting study's own run with it (so the runs are shared), and its twin; a twin whose option is
    that very offset is refused (both runs would be the same)."""
    import pytest

    from msmt.experiments.forecasting import main_variants

    variants, pairs = online_variants(EMA, "blend_backtest")
    by_name = {v.name: v for v in variants}
    trained = [v for v in main_variants() if v.name not in NAIVE]
    assert [base for base, _ in pairs] == [v.name + " offset=blend_backtest" for v in trained]
    for v in trained:
        base = by_name[v.name + " offset=blend_backtest"]
        assert base.overrides == (*v.overrides, "model.forecast=blend_backtest")
        assert by_name[base.name + EMA.suffix].overrides == (*base.overrides, EMA.setting)
    assert {v.name for v in chosen(variants, ["m2m"], EMA)} == {"m2m offset=blend_backtest", "m2m offset=blend_backtest +ema3"}
    with pytest.raises(ValueError, match="online-offset"):
        online_variants(Twin(" +backtest", "model.forecast=blend_backtest", "backtest blend"), "blend_backtest")


def test_a_page_of_a_backtest_fold_says_its_test_split_is_not_the_data_s():
    """Runs of a backtest fold k > 0 (``dataset.split.backtest_fold`` of the config as loaded with their
    defaults and overrides: the last one given counts) get the paragraph naming the fold; fold 0, none."""
    from msmt.spec.config import load_experiment

    def note(*settings):
        return backtest_fold_note(load_experiment(ONLINE_CONFIG, list(settings)))

    assert note("train.epochs=60") == []
    assert note("dataset.split.backtest_fold=1", "dataset.split.backtest_fold=0") == []
    text = note("train.epochs=60", "dataset.split.backtest_fold=1")
    assert text[0].startswith("**Backtest fold 1** (`dataset.split.backtest_fold=1`)") and "not chosen on the data's test split" in text[0]
    assert note("dataset.split.backtest_fold=2")[0].startswith("**Backtest fold 2**")


def test_a_twin_whose_option_the_config_already_has_is_refused():
    """The online config with the runs' defaults and overrides: a twin whose setting changes nothing there
    (the config's own value, a ``--default`` of it, a ``--set`` that undoes it after the variant's settings)
    would be the same run as its base, and stops with one line naming the setting; otherwise it goes on."""
    import pytest

    from msmt.experiments.twins import refuse_option_in_effect

    config = ONLINE_CONFIG
    refuse_option_in_effect(config, ["train.ema_epochs=null", "model.forecast=blend"], [], EMA)
    for defaults, overrides in ((["train.ema_epochs=3"], []), (["train.ema_epochs=null"], ["train.ema_epochs=null"])):
        with pytest.raises(SystemExit, match=r"train\.ema_epochs=3 changes nothing there.*--default train\.ema_epochs="):
            refuse_option_in_effect(config, defaults, overrides, EMA)
    with pytest.raises(SystemExit, match="model.forecast=blend_backtest changes nothing"):
        refuse_option_in_effect(config, ["model.forecast=blend_backtest"], [], Twin(" +backtest", "model.forecast=blend_backtest", "backtest blend"))
    live = Twin(" +live", "model.history_live=true", "live history", requires=("model.history_summary=true",))
    refuse_option_in_effect(config, [], [], live)


def test_the_command_a_page_shows_writes_that_page_again(tmp_path):
    """A page written to another ``--out`` than its benchmark's own shows that ``--out`` (relative to the
    repository inside it), so rerunning the shown command rewrites it and not the benchmark's default page."""
    import argparse

    def command(out):
        return page_command(argparse.Namespace(
            online_seeds=[0, 1], online_offset="blend_backtest", skip_world=True, threads=1, defaults=["train.epochs=60"],
            out=out, default_out=tmp_path / "docs" / "results" / "refit.md", repo=tmp_path))

    assert command(tmp_path / "docs" / "results" / "refit.md") == (
        "--online-seeds 0 1 --online-offset blend_backtest --skip-world --threads 1 --default train.epochs=60")
    assert command(tmp_path / "docs" / "results" / "refit_backtest.md").endswith(
        "--default train.epochs=60 --out docs/results/refit_backtest.md")
    assert command(tmp_path.parent / "elsewhere.md").endswith(f"--out {(tmp_path.parent / 'elsewhere.md').resolve()}")
