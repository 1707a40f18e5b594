"""What a run records about itself: every setting (defaults included) and how it was trained."""

from __future__ import annotations

import json

import yaml

from msmt.runtime.threads import choose_threads, default_threads
from msmt.spec.config import load_experiment, validate_experiment
from msmt.spec.model_params import M2MParams


def test_resolved_config_holds_the_selected_models_and_strategys_sections(tiny_dir):
    cfg = load_experiment(tiny_dir / "experiment.yaml", ["model.name=m2m", "loss.strategy=gradnorm", "loss.gradnorm.alpha=0.5"])
    data = cfg.to_dict()
    assert data["model"]["m2m"] == M2MParams().model_dump(mode="json")  # every default, none given
    assert data["loss"]["gradnorm"]["alpha"] == 0.5 and "lr" in data["loss"]["gradnorm"]
    again = validate_experiment(yaml.safe_load(yaml.safe_dump(data)))
    assert again.to_dict() == data


def test_run_records_its_config_and_how_it_trained(trained_run, capsys):
    run = trained_run("m2m")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert set(M2MParams.model_fields) <= set(config["model"]["m2m"])
    training = json.loads((run / "provenance.json").read_text())["training"]
    threads, why = choose_threads(None)
    assert training == {
        "world_size": 1, "backend": None, "device": "cpu", "threads": threads, "threads_from": why,
        "precision": "fp32", "streaming": False,
    }


def test_default_threads_are_the_physical_cores_shared_by_local_processes():
    assert choose_threads(3) == (3, "train.num_threads")
    one = default_threads()
    assert 1 <= one
    assert default_threads(local_processes=2) == max(1, one // 2)
    assert choose_threads(None, 2) == (max(1, one // 2), "physical cores / 2 processes")


def test_the_training_log_says_how_and_which_epoch_was_kept(tiny_dir, tmp_path, capsys):
    from helpers import run_main

    sets = ["--set", "train.epochs=2", "--set", "train.batch_size=256", "--set", "train.num_threads=1"]
    assert run_main("train", tiny_dir / "experiment.yaml", "--out", tmp_path / "run", *sets) == 0
    err = capsys.readouterr().err
    assert "training on cpu: 1 process, 1 CPU threads per process (train.num_threads), precision fp32" in err
    assert "best epoch " in err
