"""msmt.experiments.results_page on a tiny grid: markers, numbers against the cells' metrics.json, n/a reasons."""

from __future__ import annotations

import json

import numpy as np
import pytest

import msmt.experiments.results_page as rp
from msmt.synth.simple import write_simple

HEAD = "# Results\n\nHand-written intro  \twith trailing spaces and ünïcode.\n\n"
TAIL = "\n\n## Issue 2 (hand-written)\n\n| a | b |\n|---|---|\n| 1 | 2 |\nno final newline"
TASKS = {"click": "auc", "purchase": "auc", "dwell": "nmae"}
MODELS = ["shared_bottom", "esmm", "m2m"]
SEEDS = [0, 1]


def _table_row(section: str, dataset: str, label: str) -> list[str]:
    block = section.split(f"(`{dataset}`)", 1)[1].split("\n### ", 1)[0]
    line = next(x for x in block.splitlines() if x.startswith(f"| {label} |"))
    return [c.strip().strip("*") for c in line.strip("|").split("|")][1:]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("results_page")
    # two datasets whose configs are both called experiment.yaml: their names keep the cells apart
    data = {name: write_simple(root / name, rows=1500, seed=seed) / "experiment.yaml" for name, seed in (("sim_a", 0), ("sim_b", 1))}
    datasets = [
        rp.Dataset(name, f"simulator {name}", lambda work, p=path: p, f"`{path.name}`",
                   models={"m2m": ("model.m2m.profile_features=[no_such_feature]",)}, why={"m2m": "a bad profile on purpose"})
        for name, path in data.items()
    ]
    page = root / "docs" / "results.md"
    page.parent.mkdir()
    page.write_bytes((HEAD + rp.BEGIN + "\nold generated text\n" + rp.END + TAIL).encode())
    board = root / "docs" / "results" / "leaderboard"
    common = ["train.epochs=1", "train.batch_size=256", "train.num_threads=1"]
    logs: list[str] = []
    args = (datasets, MODELS, SEEDS, root / "work", page, board, common, 1, "python benchmarks/results_page.py --tiny")
    section = rp.generate(*args, log=logs.append)
    return dict(root=root, page=page, board=board, section=section, logs=logs, args=args)


def test_markers_replaced_and_outside_text_kept(generated):
    text = generated["page"].read_bytes().decode()
    assert text.startswith(HEAD + rp.BEGIN) and text.endswith(rp.END + TAIL)
    assert "old generated text" not in text and text.count(rp.BEGIN) == text.count(rp.END) == 1
    assert "python benchmarks/results_page.py --tiny" in generated["section"]
    assert "this generation trained one at a time, `--jobs 1`" in generated["section"]  # the jobs it was given
    for name in ("leaderboard.md", "leaderboard.csv", "not_applicable.csv", "cells.csv"):
        assert (generated["board"] / name).exists(), name
    assert not list(generated["board"].rglob("metrics.json"))  # run directories stay in the work dir


def test_numbers_equal_mean_std_of_metrics_json(generated):
    runs = generated["root"] / "work" / "bench" / "runs"
    for dataset in ("sim_a", "sim_b"):
        metrics = [json.loads((runs / dataset / "shared_bottom" / f"seed{s}" / "metrics.json").read_text())["test"] for s in SEEDS]
        model_row = _table_row(generated["section"], dataset, "shared_bottom")
        oracle_row = _table_row(generated["section"], dataset, "oracle (true values)")
        for i, (task, metric) in enumerate(TASKS.items()):
            values = [m["overall"][task][metric] for m in metrics]
            assert model_row[i] == f"{np.mean(values):.4f} ± {np.std(values):.4f}", (dataset, task)
            oracle = [m["oracle"]["overall"][task][metric] for m in metrics]
            assert oracle_row[i] == f"{np.mean(oracle):.4f} ± {np.std(oracle):.4f}", (dataset, task)
    # the two datasets are different data, so their numbers differ
    assert _table_row(generated["section"], "sim_a", "shared_bottom") != _table_row(generated["section"], "sim_b", "shared_bottom")


def test_not_applicable_cells_carry_their_reason(generated):
    section = generated["section"]
    for dataset in ("sim_a", "sim_b"):
        assert _table_row(section, dataset, "esmm") == ["n/a"] * len(TASKS) + ["–"]
        assert _table_row(section, dataset, "m2m") == ["n/a"] * len(TASKS) + ["–"]
    assert section.count("* n/a `esmm`: no task is declared `product_of`") == 2  # the model's applicability check
    assert section.count("* n/a `m2m`: model.m2m.profile_features: unknown feature(s) ['no_such_feature']") == 2  # the builder's ConfigError
    runs = generated["root"] / "work" / "bench" / "runs"
    assert not (runs / "sim_a" / "esmm" / "seed0").exists()  # never trained


def test_rerun_reuses_every_cell_and_rewrites_the_same_page(generated):
    before = generated["page"].read_bytes()
    logs: list[str] = []
    rp.generate(*generated["args"], log=logs.append)
    assert not any("training" in line or "trained" in line for line in logs)
    assert generated["page"].read_bytes() == before


def test_replace_generated_errors_and_insertion():
    section = rp.BEGIN + "\nx\n" + rp.END
    assert rp.replace_generated("# T\n\nintro\n\n## A\n", section) == "# T\n\nintro\n\n" + section + "\n\n## A\n"
    with pytest.raises(ValueError):
        rp.replace_generated("a " + rp.END + " b " + rp.BEGIN, section)
    with pytest.raises(ValueError):
        rp.replace_generated(rp.BEGIN + rp.BEGIN + rp.END, section)


def test_simulator_data_is_reused_until_its_parameters_change(tmp_path):
    work = tmp_path / "work"
    logs: list[str] = []
    first = rp.simulator_config("funnel", {"rows": 2000, "seed": 0}, work, "fun", log=logs.append)
    assert first == work / "data" / "fun" / "experiment.yaml" and first.exists()
    stamp = (first.parent / "synth.json").read_text()
    cell = work / "bench" / "runs" / "fun" / "mmoe" / "seed0"
    cell.mkdir(parents=True)
    mtime = first.stat().st_mtime_ns
    assert rp.simulator_config("funnel", {"rows": 2000, "seed": 0}, work, "fun", log=logs.append) == first
    assert first.stat().st_mtime_ns == mtime and cell.exists() and not logs  # same parameters: nothing rewritten
    rp.simulator_config("funnel", {"rows": 2000, "seed": 1}, work, "fun", log=logs.append)
    assert not cell.parent.parent.exists()  # the dataset's cells were trained on the old data
    assert json.loads((first.parent / "synth.json").read_text()) == {"kind": "funnel", "rows": 2000, "seed": 1} != json.loads(stamp)
    assert len(logs) == 1 and "removing its cells" in logs[0]


def test_models_in_page_order():
    assert rp.ordered_models(["m2m", "zeta", "mmoe", "single_task"]) == ["single_task", "mmoe", "m2m", "zeta"]


def test_cohort_columns_only_when_the_test_rows_hold_new_groups():
    """The page shows ``(user_id ∉ train)`` / ``(∈ train)`` columns, new first, when some test row's
    group is new; with every group seen the one cohort would repeat the overall columns."""
    import pandas as pd

    from msmt.experiments.results_page import dataset_table

    def rows(groups):
        return pd.DataFrame([dict(dataset="d", split="test", model="mmoe", scenario=g, task="click", metric="auc",
                                  mean=v, std=0.0, seeds=1, rows=10) for g, v in groups.items()])

    na = pd.DataFrame(columns=["dataset", "model", "reason"])
    cells = pd.DataFrame([dict(dataset="d", model="mmoe", seed=0, seconds=1.0)])
    both = dataset_table("d", {"click": "binary"}, rows({"overall": 0.7, "user_id ∈ train": 0.75, "user_id ∉ train": 0.65}), na, cells, ["mmoe"])
    assert both[0] == "| model | click AUC ↑ | click AUC ↑ (user_id ∉ train) | click AUC ↑ (user_id ∈ train) | s / run |"
    assert both[2].startswith("| mmoe | **0.7000 ± 0.0000** | **0.6500 ± 0.0000** | **0.7500 ± 0.0000** |")
    seen_only = dataset_table("d", {"click": "binary"}, rows({"overall": 0.7, "user_id ∈ train": 0.7}), na, cells, ["mmoe"])
    assert seen_only[0] == "| model | click AUC ↑ | s / run |"


def test_a_newer_experiment_config_of_the_simulator_replaces_the_cached_one(tmp_path):
    """The data stays (same parameters) but experiment.yaml follows the generator's current config."""
    work = tmp_path / "work"
    logs: list[str] = []
    config = rp.simulator_config("funnel", {"rows": 2000, "seed": 0}, work, "fun", log=logs.append)
    data_mtime = (config.parent / "train.csv").stat().st_mtime_ns
    current = config.read_text()
    config.write_text(current.replace("epochs: 4", "epochs: 99"))  # as written by an older generator
    assert rp.simulator_config("funnel", {"rows": 2000, "seed": 0}, work, "fun", log=logs.append) == config
    assert config.read_text() == current and (config.parent / "train.csv").stat().st_mtime_ns == data_mtime
    assert len(logs) == 1 and "experiment config changed" in logs[0]


def test_dataset_table_bolds_the_best_per_column_by_direction_and_marks_na():
    """AUC ↑: the largest mean is bold; NMAE ↓: the smallest; the oracle, even when it ties, never;
    an n/a model's cells read n/a; each cell is mean ± the std given."""
    import pandas as pd

    rows = [("a", "click", "auc", 0.70, 0.01), ("b", "click", "auc", 0.75, 0.02), ("a", "dwell", "nmae", 0.40, 0.03),
            ("b", "dwell", "nmae", 0.50, 0.04), ("oracle", "click", "auc", 0.75, 0.0), ("oracle", "dwell", "nmae", 0.10, 0.0)]
    summary = pd.DataFrame([dict(dataset="d", split="test", model=m, scenario="overall", task=t, metric=k, mean=x, std=s, seeds=2, rows=10)
                            for m, t, k, x, s in rows])
    na = pd.DataFrame([dict(dataset="d", model="c", reason="no history")])
    cells = pd.DataFrame(columns=["dataset", "model", "seconds"])
    lines = rp.dataset_table("d", {"click": "binary", "dwell": "count"}, summary, na, cells, ["a", "b", "c"])
    table = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]] for line in lines if line.startswith("| ") and "---" not in line}
    assert table["a"][:2] == ["0.7000 ± 0.0100", "**0.4000 ± 0.0300**"]
    assert table["b"][:2] == ["**0.7500 ± 0.0200**", "0.5000 ± 0.0400"]
    assert table[rp.ORACLE_LABEL][:2] == ["0.7500 ± 0.0000", "0.1000 ± 0.0000"]
    assert table["c"][:2] == ["n/a", "n/a"] and "* n/a `c`: no history." in lines


def test_cells_record_epochs_and_the_page_names_the_capped_ones(generated):
    """cells.csv holds each trained cell's epochs (its history rows) and cap; with ``train.epochs=1``
    every network cell ran to its cap, and the page lists them so a reader knows they may be under-trained."""
    import pandas as pd

    cells = pd.read_csv(generated["board"] / "cells.csv")
    runs = generated["root"] / "work" / "bench" / "runs"
    sb = cells[cells["model"] == "shared_bottom"]
    for row in sb.itertuples():
        assert row.epochs == len(pd.read_csv(runs / row.dataset / "shared_bottom" / f"seed{row.seed}" / "history.csv"))
    assert (sb["max_epochs"] == 1).all() and (sb["epochs"] == 1).all()
    assert cells[cells["model"] == "esmm"]["epochs"].isna().all()  # n/a: never trained
    section = generated["section"]
    assert "of the 4 cells with a training history, 0 were ended by early stopping" in section
    assert "`shared_bottom` on `sim_a` (2 of 2 seeds, cap 1); `shared_bottom` on `sim_b` (2 of 2 seeds, cap 1)" in section


def test_epoch_budget_line_counts_early_stopped_cells():
    import pandas as pd

    cells = pd.DataFrame([dict(dataset="d", model="a", seed=s, seconds=1.0, epochs=e, max_epochs=10) for s, e in enumerate((4, 10, 6))]
                         + [dict(dataset="d", model="lightgbm", seed=0, seconds=1.0, epochs=None, max_epochs=None)])
    line = rp._epoch_budget(cells)[0]
    assert line.startswith("Epochs: of the 3 cells with a training history, 2 were ended by early stopping")
    assert line.endswith("1 ran to their cap and may be under-trained: `a` on `d` (1 of 3 seeds, cap 10).")
    done = rp._epoch_budget(cells.assign(epochs=[4, 9, 6, None]))[0]
    assert done.endswith("and none ran to its `train.epochs` cap.")
    assert rp._epoch_budget(cells.drop(columns=["epochs", "max_epochs"])) == []  # an older cells.csv


def test_render_page_from_the_leaderboard_files_alone_rewrites_the_same_page(generated):
    """``render_page`` (``benchmarks/results_page.py --render``) reads only the published files: with
    the run directories gone it writes the page ``generate`` wrote, byte for byte."""
    import shutil

    before = generated["page"].read_bytes()
    datasets, models, seeds, work, page, board, common, jobs, command = generated["args"]
    moved = work / "bench_moved"
    shutil.move(work / "bench", moved)
    try:
        configs = {ds.name: ds.config(work) for ds in datasets}
        page.write_bytes((HEAD + rp.BEGIN + "\nstale\n" + rp.END + TAIL).encode())
        rp.render_page(datasets, configs, models, seeds, page, board, common, jobs, command)
        assert page.read_bytes() == before
    finally:
        shutil.move(moved, work / "bench")
