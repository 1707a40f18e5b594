"""msmt bench: the grid, reuse of finished cells, and the leaderboard against the runs' own metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from msmt.experiments.bench import bench


def test_bench_grid_reuse_and_aggregates(tiny_dir, tmp_path):
    cfg = yaml.safe_load((tiny_dir / "experiment.yaml").read_text())
    cfg["dataset"] = str(tiny_dir / "dataset.yaml")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "bench"
    fast = ["train.epochs=1", "train.batch_size=256", "train.num_threads=1"]
    logs: list[str] = []
    summary = bench([str(config)], ["shared_bottom", "mmoe"], [0, 1], out, fast, log=logs.append)
    assert sum("training" in line for line in logs) == 4
    for name in ("leaderboard.md", "leaderboard.csv", "plots/tiny_click_auc.png"):
        assert (out / name).exists(), name

    # mean/std equal those of the per-seed metrics.json files
    aucs = [json.loads((out / f"runs/tiny/mmoe/seed{s}/metrics.json").read_text())["test"]["overall"]["click"]["auc"] for s in (0, 1)]
    row = summary[(summary.model == "mmoe") & (summary.scenario == "overall") & (summary.task == "click") & (summary.metric == "auc")]
    assert row["mean"].item() == np.mean(aucs) and row["std"].item() == np.std(aucs)
    oracle = summary[(summary.model == "oracle") & (summary.metric == "auc") & (summary.scenario == "overall")]
    assert len(oracle) == 2 and (oracle["seeds"] == 2).all()  # click and purchase
    assert pd.read_csv(out / "leaderboard.csv").shape[0] == len(summary)

    logs.clear()
    bench([str(config)], ["shared_bottom", "mmoe", "naive_last"], [0, 1], out, fast, log=logs.append)
    assert sum("reused" in line for line in logs) == 4 and sum("n/a" in line for line in logs) == 2

    # the same overrides over an edited config file are other runs: every cell is trained again
    cfg["train"]["lr"] = cfg["train"].get("lr", 0.001) * 2
    config.write_text(yaml.safe_dump(cfg))
    logs.clear()
    bench([str(config)], ["shared_bottom", "mmoe"], [0, 1], out, fast, log=logs.append)
    assert sum("trained" in line for line in logs) == 4 and not any("reused" in line for line in logs)
    kept = yaml.safe_load((out / "runs/tiny/mmoe/seed1/config.yaml").read_text())
    assert kept["train"]["lr"] == cfg["train"]["lr"]


@pytest.mark.slow
def test_bench_names_jobs_and_changed_overrides(tiny_dir, tmp_path):

    from msmt.spec.errors import ConfigError

    config = str(tiny_dir / "experiment.yaml")
    fast = ["train.epochs=1", "train.batch_size=256", "train.num_threads=1"]
    with pytest.raises(ConfigError, match="two datasets are called 'experiment'"):
        bench([config, config], ["mmoe"], [0], tmp_path / "dup", fast)

    # two worker processes give the same runs as one process
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    bench([f"a={config}"], ["shared_bottom"], [0, 1], serial, fast)
    bench([f"a={config}"], ["shared_bottom"], [0, 1], parallel, fast, jobs=2)
    for s in (0, 1):
        one, two = (json.loads((o / f"runs/a/shared_bottom/seed{s}/metrics.json").read_text()) for o in (serial, parallel))
        assert one == two

    # a cell whose per-dataset overrides changed is retrained; the others are reused
    logs: list[str] = []
    bench([f"a={config}"], ["shared_bottom"], [0, 1], serial, fast, log=logs.append,
          cell_overrides={"a": {"shared_bottom": ["train.lr=0.01"]}})
    assert sum("trained" in line and line.endswith("(other overrides)") for line in logs) == 2
    cfg = yaml.safe_load((serial / "runs/a/shared_bottom/seed0/config.yaml").read_text())
    assert cfg["train"]["lr"] == 0.01


def test_run_or_reuse_trains_once_per_overrides(tiny_dir, tmp_path):
    from msmt.experiments.bench import CELL_RECORD, finished, read_metrics, run_or_reuse
    from msmt.spec.config import load_experiment

    config = tiny_dir / "experiment.yaml"
    run_dir = tmp_path / "run"
    fast = ["train.epochs=1", "train.batch_size=256", "train.num_threads=1", "model.name=shared_bottom"]
    logs: list[str] = []

    def load(overrides):
        return load_experiment(config, overrides)

    assert not finished(run_dir, fast, load(fast))
    first = run_or_reuse(config, fast, run_dir, log=logs.append)
    assert len(logs) == 1 and finished(run_dir, fast, load(fast))
    assert first == read_metrics(run_dir) and "auc" in first["val"]["overall"]["click"]
    assert json.loads((run_dir / CELL_RECORD).read_text())["overrides"] == fast
    assert run_or_reuse(config, fast, run_dir, log=logs.append) == first and len(logs) == 1  # reused, not trained
    other = [*fast[:-1], "model.name=mmoe"]
    assert not finished(run_dir, other, load(other))  # other overrides: the run is not this one
    run_or_reuse(config, other, run_dir, log=logs.append)
    assert len(logs) == 2 and finished(run_dir, other, load(other)) and not finished(run_dir, fast, load(fast))


def test_run_or_reuse_retrains_when_the_config_file_changes(tiny_dir, tmp_path):
    """Reuse is keyed on the resolved config, not only the overrides: editing the experiment file or the
    dataset file it names makes the kept run stale."""
    from msmt.experiments.bench import Cell, cell_not_applicable, finished, retrain_reason, run_or_reuse, train_cell
    from msmt.spec.config import load_experiment

    raw = yaml.safe_load((tiny_dir / "experiment.yaml").read_text())
    dataset = yaml.safe_load((tiny_dir / "dataset.yaml").read_text())
    dataset["files"] = {k: str(tiny_dir / v) for k, v in dataset["files"].items() if v}
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(dataset))
    raw["dataset"] = "dataset.yaml"
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(raw))
    fast = ["train.epochs=1", "train.batch_size=256", "train.num_threads=1", "model.name=shared_bottom"]
    run_dir, logs = tmp_path / "run", []
    assert retrain_reason(run_dir, fast, load_experiment(config, fast)) == "new"
    run_or_reuse(config, fast, run_dir, log=logs.append)
    assert logs[-1] == f"training {run_dir} (new)" and finished(run_dir, fast, load_experiment(config, fast))
    hidden = load_experiment(config, fast).model.hidden_dims

    raw.setdefault("model", {})["hidden_dims"] = [8]  # the experiment file
    config.write_text(yaml.safe_dump(raw))
    assert not finished(run_dir, fast, load_experiment(config, fast))
    # the log names what changed, so two studies replacing each other's runs in one work folder show it
    assert retrain_reason(run_dir, fast, load_experiment(config, fast)) == f"other config: model.hidden_dims {hidden} → [8]"
    run_or_reuse(config, fast, run_dir, log=logs.append)
    assert logs[-1] == f"training {run_dir} (other config: model.hidden_dims {hidden} → [8])"
    assert len(logs) == 2 and finished(run_dir, fast, load_experiment(config, fast))
    other = [*fast[:-1], "model.name=mmoe"]
    assert retrain_reason(run_dir, other, load_experiment(config, other)) == "other overrides"

    dataset["split"] = {**dataset.get("split", {}), "seed": 7}  # the dataset file behind it
    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump(dataset))
    assert not finished(run_dir, fast, load_experiment(config, fast))
    assert retrain_reason(run_dir, fast, load_experiment(config, fast)) == "other config: dataset.split.seed 0 → 7"
    provenance = json.loads((run_dir / "provenance.json").read_text())
    (run_dir / "provenance.json").write_text(json.dumps({**provenance, "source_sha256": "0" * 64}))
    assert retrain_reason(run_dir, fast, load_experiment(config, fast)) == "other code"

    # an n/a verdict is kept with the config it was reached under
    cell = Cell("tiny", config, "naive_last", 0)
    out = tmp_path / "grid"
    assert train_cell(cell, out, fast[:-1])[0] == "n/a"
    assert cell_not_applicable(cell, out, fast[:-1]) is not None
    raw["model"]["hidden_dims"] = [16]
    config.write_text(yaml.safe_dump(raw))
    assert cell_not_applicable(cell, out, fast[:-1]) is None


def test_one_seed_shows_the_value_alone_and_plots_per_scenario(tmp_path):
    import pandas as pd

    from msmt.experiments.bench import markdown, plot

    rows = [dict(dataset="d", split="test", model=m, scenario=s, task="click", metric="auc", mean=v, std=0.0, seeds=1, rows=10)
            for m, v in (("mmoe", 0.7), ("ple", 0.71)) for s in ("overall", "search", "feed")]
    summary = pd.DataFrame(rows)
    table = markdown(summary, {"d": {"click": "binary"}}, ["mmoe", "ple"])
    assert "| mmoe | 0.7000 | 0.7000 | 0.7000 |" in table and "± 0.0000" not in table
    summary["seeds"], summary["std"] = 3, 0.01
    assert "| ple | 0.7100 ± 0.0100 |" in markdown(summary, {"d": {"click": "binary"}}, ["mmoe", "ple"])
    assert [p.name for p in plot(summary, {"d": {"click": "binary"}}, tmp_path)] == ["d_click_auc.png"]


def test_lightgbm_is_a_bench_cell_with_the_baselines_numbers(tiny_dir, tmp_path):
    """``--models lightgbm``: the trees of msmt.experiments.lightgbm_baseline as a cell of the grid,
    their leaderboard rows equal to a direct run, reused like a trained cell."""
    from msmt.experiments.lightgbm_baseline import TreeSettings, lightgbm_baseline
    from msmt.spec.config import load_experiment

    config = str(tiny_dir / "experiment.yaml")
    common = ["train.num_threads=1"]
    out, logs = tmp_path / "bench", []
    summary = bench([f"a={config}"], ["lightgbm"], [0], out, common, log=logs.append)
    direct = lightgbm_baseline(load_experiment(config, ["train.seed=0", *common]), TreeSettings(threads=1, seed=0))
    row = summary[(summary.model == "lightgbm") & (summary.scenario == "overall") & (summary.task == "click") & (summary.metric == "auc")]
    assert row["mean"].item() == direct["test"]["overall"]["click"]["auc"]
    assert (out / "runs/a/lightgbm/seed0/provenance.json").exists()
    logs.clear()
    bench([f"a={config}"], ["lightgbm"], [0], out, common, log=logs.append)
    assert any("reused" in line for line in logs) and not any("training" in line for line in logs)


def test_an_na_verdict_holds_for_every_seed_and_only_for_the_code_that_reached_it(tiny_dir, tmp_path, monkeypatch):
    """``not_applicable.json`` is written once per (dataset, model): keyed without ``train.seed`` (another seed
    reads it), with the source hash (other code does not)."""
    from msmt.experiments.bench import Cell, cell_not_applicable, train_cell
    from msmt.rundir import provenance

    common, out = ["train.epochs=1", "train.num_threads=1"], tmp_path / "grid"
    config = tiny_dir / "experiment.yaml"
    assert train_cell(Cell("tiny", config, "naive_last", 0), out, common)[0] == "n/a"
    assert cell_not_applicable(Cell("tiny", config, "naive_last", 1), out, common) is not None
    monkeypatch.setattr(provenance, "source_hash", lambda *args: "other code")
    assert cell_not_applicable(Cell("tiny", config, "naive_last", 1), out, common) is None


def test_model_set_overrides_one_model_cells_and_the_leaderboard_names_them(tiny_dir, tmp_path):
    """``msmt bench --model-set MODEL:KEY=VALUE``: the override reaches that model's runs only, its row
    keeps the model's name, and the leaderboard says which cells had it."""
    from helpers import run_main

    cfg = yaml.safe_load((tiny_dir / "experiment.yaml").read_text())
    cfg["dataset"] = str(tiny_dir / "dataset.yaml")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "bench"
    fast = ["--set", "train.epochs=1", "--set", "train.batch_size=256", "--set", "train.num_threads=1"]
    assert run_main("bench", "--datasets", config, "--models", "shared_bottom", "--models", "mmoe", "--seeds", "1",
                    "--out", out, *fast, "--model-set", "mmoe:train.lr=0.0123", "--model-set", "mmoe:train.weight_decay=0.5") == 0
    runs = {m: yaml.safe_load((out / f"runs/tiny/{m}/seed0/config.yaml").read_text())["train"] for m in ("mmoe", "shared_bottom")}
    assert (runs["mmoe"]["lr"], runs["mmoe"]["weight_decay"]) == (0.0123, 0.5)
    assert (runs["shared_bottom"]["lr"], runs["shared_bottom"]["weight_decay"]) != (0.0123, 0.5)
    text = (out / "leaderboard.md").read_text()
    assert "* `mmoe`: `train.lr=0.0123`, `train.weight_decay=0.5`" in text and "* `shared_bottom`" not in text
    assert "| mmoe |" in text


def test_the_configs_per_model_entry_reaches_that_models_cells_and_the_leaderboard_names_it(tiny_dir, tmp_path):
    """A ``per_model`` entry in the benched config acts as ``--model-set`` does: that model's runs only, their
    ``config.yaml`` holding the setting (not the section), and the leaderboard listing it."""
    from helpers import run_main

    cfg = yaml.safe_load((tiny_dir / "experiment.yaml").read_text())
    cfg["dataset"] = str(tiny_dir / "dataset.yaml")
    cfg["per_model"] = {"mmoe": {"train": {"lr": 0.0123}, "model": {"mmoe": {"num_experts": 3}}}, "ple": {"train": {"lr": 0.5}}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "bench"
    fast = ["--set", "train.epochs=1", "--set", "train.batch_size=256", "--set", "train.num_threads=1"]
    assert run_main("bench", "--datasets", config, "--models", "shared_bottom", "--models", "mmoe", "--seeds", "1",
                    "--out", out, *fast) == 0
    runs = {m: yaml.safe_load((out / f"runs/tiny/{m}/seed0/config.yaml").read_text()) for m in ("mmoe", "shared_bottom")}
    assert (runs["mmoe"]["train"]["lr"], runs["mmoe"]["model"]["mmoe"]["num_experts"]) == (0.0123, 3)
    assert runs["shared_bottom"]["train"]["lr"] not in (0.0123, 0.5)
    assert not any("per_model" in run for run in runs.values())
    text = (out / "leaderboard.md").read_text()
    assert "* `mmoe`: `model.mmoe.num_experts=3`, `train.lr=0.0123`" in text  # the file's order (safe_dump sorts)
    assert "`ple`" not in text and "* `shared_bottom`" not in text  # ple is not benched; shared_bottom has no entry


def test_model_set_items_are_parsed_and_bad_ones_named():
    from msmt.experiments.bench import model_cell_overrides
    from msmt.spec.errors import ConfigError

    assert model_cell_overrides(["a:x.y=1", "b:z=2", "a:w=3"], ["a", "b"]) == {"a": ["x.y=1", "w=3"], "b": ["z=2"]}
    assert model_cell_overrides([], ["a"]) == {}
    with pytest.raises(ConfigError, match="expected MODEL:KEY=VALUE"):
        model_cell_overrides(["a=1"], ["a"])
    with pytest.raises(ConfigError, match="'c' is not benched"):
        model_cell_overrides(["c:x=1"], ["a", "b"])


def test_config_changes_names_the_first_keys_that_differ(tiny_dir, tmp_path):
    """A kept run's config.yaml against the config now: dotted keys in config order, a key on one side
    only against None, at most ``shown`` of them and how many more; an unreadable file names nothing."""
    from msmt.experiments.bench import config_changes
    from msmt.spec.config import dump_yaml, load_experiment

    cfg = load_experiment(tiny_dir / "experiment.yaml", ["train.lr=0.01", "train.epochs=2"])
    kept = cfg.to_dict()
    kept["train"] = {**kept["train"], "lr": 0.02, "epochs": 3, "patience": 99, "gone": 1}
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(kept))
    assert config_changes(path, cfg, shown=2) == ": train.epochs 3 → 2, train.lr 0.02 → 0.01 (+2 more)"
    assert config_changes(path, cfg, shown=9).endswith("train.gone 1 → None")
    path.write_text(dump_yaml(cfg.to_dict()))
    assert config_changes(path, cfg) == ""
    assert config_changes(tmp_path / "missing.yaml", cfg) == ""
