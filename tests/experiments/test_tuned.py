"""Hand-set against tuned (``msmt.experiments.tuned``, the logic of benchmarks/tuned.py): the
space each model searches, and a page whose rows are the two configs' own test numbers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import yaml

from msmt.experiments.tuned import model_space, reference_runs, render, tuned_pair
from msmt.runtime.host import describe_cpu


def test_a_model_searches_no_key_of_another_models_section(tmp_path):
    space = tmp_path / "x.tune.yaml"
    space.write_text(yaml.safe_dump({
        "train.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "model.dropout": {"low": 0.0, "high": 0.3},
        "model.mmoe.num_experts": {"low": 2, "high": 8}, "model.ple.num_levels": {"low": 1, "high": 2},
    }))
    ple = yaml.safe_load(model_space(space, "ple", tmp_path / "ple.yaml").read_text())
    mmoe = yaml.safe_load(model_space(space, "mmoe", tmp_path / "mmoe.yaml").read_text())
    assert set(ple) == {"train.lr", "model.dropout", "model.ple.num_levels"}
    assert set(mmoe) == {"train.lr", "model.dropout", "model.mmoe.num_experts"}
    glm = yaml.safe_load(model_space(space, "logistic_regression", tmp_path / "glm.yaml").read_text())
    assert set(glm) == {"train.lr"}  # no hidden layers, no dropout: only the optimiser is searched


def test_the_page_shows_both_configs_test_numbers_and_the_budget(tiny_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dir, data)
    cfg = yaml.safe_load((data / "experiment.yaml").read_text())
    cfg["train"].update(epochs=1, num_threads=1)
    (data / "experiment.yaml").write_text(yaml.safe_dump(cfg))
    spec = yaml.safe_load((data / "dataset.yaml").read_text())
    spec["group"] = "user_id"  # the cohorts of users seen / unseen in training
    (data / "dataset.yaml").write_text(yaml.safe_dump(spec))
    (data / "experiment.tune.yaml").write_text(yaml.safe_dump({"train.lr": {"low": 1e-4, "high": 3e-2, "log": True},
                                                                 "model.ple.num_levels": {"low": 1, "high": 2}}))
    pair = tuned_pair("tiny", data / "experiment.yaml", "mmoe", 2, [0], tmp_path / "work", log=lambda m: None,
                      extra=("model.tower_dims=[4]",))  # a setting the model needs here: every trial and both configs
    best = yaml.safe_load(pair.study.best_config.read_text())
    assert best["model"]["tower_dims"] == [4] and best["train"]["num_threads"] == 1  # trials run one thread each, as --jobs needs
    hand = json.loads((tmp_path / "work/bench/tiny/mmoe/runs/hand/mmoe/seed0/bench.json").read_text())
    assert "model.tower_dims=[4]" in hand["overrides"]
    assert set(pair.study.best_params) == {"train.lr"} and best["model"]["name"] == "mmoe"
    assert np.isclose(best["train"]["lr"], pair.study.best_params["train.lr"])
    page = render([pair], {"tiny": data / "experiment.yaml"}, [0], 2, "cmd")
    for which in ("hand", "tuned"):
        metrics = json.loads((tmp_path / f"work/bench/tiny/mmoe/runs/{which}/mmoe/seed0/metrics.json").read_text())
        label = "hand-set" if which == "hand" else "tuned"
        row = next(line for line in page.splitlines() if line.startswith(f"| mmoe | {label} |"))
        cells = [c.strip().strip("*") for c in row.split("|")[3:-2]]
        header = next(line for line in page.splitlines() if line.startswith("| model | config |"))
        names = [c.strip() for c in header.split("|")[3:-2]]
        auc = metrics["test"]["overall"]["click"]["auc"]
        new = metrics["test"]["cohorts"]["user_id ∉ train"]["dwell"]["nmae"]  # tiny's test split has one unseen user: no AUC
        assert cells[names.index("click AUC ↑")] == f"{auc:.4f} ± 0.0000", (row, auc)
        assert cells[names.index("dwell NMAE, user_id ∉ train ↓")] == f"{new:.4f} ± 0.0000", (row, new)
    raw = {label: next(line for line in page.splitlines() if line.startswith(f"| mmoe | {label} |")).split("|")[3:-2]
           for label in ("hand-set", "tuned")}
    decided = set()
    for j, name in enumerate(names):  # the better config of each column in bold, by the metric's direction
        texts = [raw[label][j].strip().strip("*").split(" ± ")[0] for label in ("hand-set", "tuned")]
        if "–" in texts or float(texts[0]) == float(texts[1]):
            continue  # a cell without a value, or a tie at the page's precision
        hand_v, tuned_v = map(float, texts)
        better = "hand-set" if (hand_v > tuned_v) == name.endswith("↑") else "tuned"
        worse = "tuned" if better == "hand-set" else "hand-set"
        assert raw[better][j].strip().startswith("**") and not raw[worse][j].strip().startswith("**"), (name, raw)
        decided.add(name[-1])
    assert decided == {"↑", "↓"}  # both directions decided at least once
    refs = reference_runs("tiny", data / "experiment.yaml", [0], tmp_path / "work", log=lambda m: None,
                          models=("naive_last", "popularity"))
    assert refs.models == ("popularity",)  # no panel here: the naive forecasters do not apply, no run of theirs
    assert not (tmp_path / "work/bench/tiny/_references/runs/reference/naive_last").exists()
    with_refs = render([pair], {"tiny": data / "experiment.yaml"}, [0], 2, "cmd", references={"tiny": refs}).splitlines()
    metrics = json.loads((tmp_path / "work/bench/tiny/_references/runs/reference/popularity/seed0/metrics.json").read_text())
    row = next(i for i, line in enumerate(with_refs) if line.startswith("| popularity | nothing to search |"))
    cells = [c.strip() for c in with_refs[row].split("|")[3:-2]]
    assert cells[names.index("click AUC ↑")] == f"{metrics['test']['overall']['click']['auc']:.4f} ± 0.0000"
    assert row == with_refs.index(header) + 2 and with_refs[row + 1].startswith("| mmoe | hand-set |")  # the first row
    assert not any("nothing to search" in line and line.startswith("|") for line in page.splitlines())  # none given, none shown
    alone = render([], {"tiny": data / "experiment.yaml"}, [0], 2, "cmd", references={"tiny": refs})
    assert "## tiny" in alone and "| popularity | nothing to search |" in alone  # a dataset without searched models keeps its table
    assert "2 trials ×" in page and "`train.lr=" in page
    assert f"on {describe_cpu()}." in page  # the machine the budget was timed on, not a fixed one
    assert "on Zen 9, 3 cores, AVX." in render([pair], {"tiny": data / "experiment.yaml"}, [0], 2, "cmd", host="Zen 9, 3 cores, AVX")
    noted = render([pair], {"tiny": data / "experiment.yaml"}, [0], 2, "cmd", skipped={("tiny", "esmm"): "no funnel"},
                   extras={("tiny", "mmoe"): ("model.dropout=0.1",)})
    assert "* n/a `esmm`: no funnel" in noted and "* `mmoe` here (both configs): `--set model.dropout=0.1`" in noted
