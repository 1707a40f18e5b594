"""Typed config: unknown keys are errors naming the key; --set overrides; frozen specs."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from msmt.spec.config import apply_overrides, load_dataset_spec, load_experiment
from msmt.spec.dataset import DatasetSpec
from msmt.spec.errors import ConfigError


def write(tmp_path, data, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def experiment(tiny_dir, tmp_path):
    return {"dataset": str(tiny_dir / "dataset.yaml"), "model": {"name": "mmoe"}, "train": {"epochs": 1}}


def test_loads_and_resolves_paths(experiment, tmp_path, tiny_dir):
    cfg = load_experiment(write(tmp_path, experiment))
    assert cfg.model.name == "mmoe"
    assert cfg.dataset.files.train == str((tiny_dir / "train.csv").resolve())


@pytest.mark.parametrize(
    "section,key,expected",
    [
        ("train", "epocs", "train.epocs"),
        ("model", "hidden_dimz", "model.hidden_dimz"),
        (None, "trian", "trian"),
    ],
)
def test_unknown_key_is_named(experiment, tmp_path, section, key, expected):
    if section:
        experiment[section][key] = 3
    else:
        experiment[key] = {}
    with pytest.raises(ConfigError, match=rf"unknown key '{expected}'"):
        load_experiment(write(tmp_path, experiment))


def test_unknown_key_inside_model_section(experiment, tmp_path):
    experiment["model"]["mmoe"] = {"num_expert": 3}
    with pytest.raises(ConfigError, match=r"unknown key 'model\.mmoe\.num_expert'"):
        load_experiment(write(tmp_path, experiment))


def test_set_overrides(experiment, tmp_path):
    path = write(tmp_path, experiment)
    cfg = load_experiment(path, ["model.name=shared_bottom", "train.seed=3", "model.hidden_dims=[8, 4]", "model.mmoe.num_experts=7"])
    assert cfg.model.name == "shared_bottom"
    assert cfg.train.seed == 3
    assert cfg.model.hidden_dims == [8, 4]
    assert cfg.model.model_extra["mmoe"].num_experts == 7


def test_set_unknown_key_and_bad_value(experiment, tmp_path):
    path = write(tmp_path, experiment)
    with pytest.raises(ConfigError, match="unknown key 'train.sed'"):
        load_experiment(path, ["train.sed=3"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_experiment(path, ["train.epochs=zero"])
    with pytest.raises(ConfigError, match="unknown model 'mmeo'"):
        load_experiment(path, ["model.name=mmeo"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["train.seed"])


def test_unknown_task_kind(tiny_dir, tmp_path):
    data = yaml.safe_load((tiny_dir / "dataset.yaml").read_text())
    data["tasks"][0]["kind"] = "ordinal"
    data["files"] = {"train": str(tiny_dir / "train.csv")}
    with pytest.raises(ConfigError, match="unknown task kind 'ordinal'"):
        load_dataset_spec(write(tmp_path, data, "ds.yaml"))


def test_label_may_not_be_a_feature(tiny_dir, tmp_path):
    data = yaml.safe_load((tiny_dir / "dataset.yaml").read_text())
    data["features"]["dense"].append("click")
    data["files"] = {"train": str(tiny_dir / "train.csv")}
    with pytest.raises(ConfigError, match="must not be features"):
        load_dataset_spec(write(tmp_path, data, "ds.yaml"))


def test_specs_are_frozen(tiny_spec):
    with pytest.raises(pydantic.ValidationError):
        tiny_spec.tasks[0].weight = 3.0
    with pytest.raises(pydantic.ValidationError):
        tiny_spec.scenario.column = "other"


_BASE = {"files": {"train": "t.csv"}, "scenario": {"column": "s"}, "features": {"sparse": ["u"], "dense": ["x"]},
         "tasks": [{"name": "y", "label": "y", "kind": "binary"}]}


@pytest.mark.parametrize("change,message", [
    ({"features": {"sparse": ["u"], "dense": ["x", {"name": "u", "column": "x"}]}}, "duplicate feature names"),
    ({"scenario": {"column": "s", "attributes": {"dense": ["y"]}}}, "must not be features"),  # a label as a scenario attribute
    ({"tasks": [{"name": "y", "label": "y", "kind": "binary", "weight_column": "z"}, {"name": "z", "label": "z", "kind": "binary"}]},
     "weight_column"),  # another task's label as a loss weight
    ({"behaviour": {"key": "u", "time": "y", "tasks": ["y"]}}, "must not be a label"),  # the label orders the history
], ids=["feature-names", "label-attribute", "label-weight", "label-behaviour-time"])
def test_a_dataset_spec_that_would_leak_or_collide_is_rejected(change, message):
    DatasetSpec.model_validate(_BASE)
    with pytest.raises(pydantic.ValidationError, match=message):
        DatasetSpec.model_validate({**_BASE, **change})
