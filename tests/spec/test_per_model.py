"""A config's ``per_model`` entries: the selected model's is laid over the file and under ``--set``."""

from __future__ import annotations

import pytest
import yaml

from msmt.spec.config import load_experiment, merged
from msmt.spec.errors import ConfigError


def write(tmp_path, data, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def experiment(tiny_dir):
    return {
        "dataset": str(tiny_dir / "dataset.yaml"),
        "model": {"name": "mmoe", "dropout": 0.1, "hidden_dims": [16, 8]},
        "train": {"epochs": 1, "lr": 0.01},
        "per_model": {
            "m2m": {"train": {"ema_epochs": 3, "lr": 0.002}, "model": {"dropout": 0.2, "m2m": {"meta_hidden": 8}}},
            "ple": {"train": {"weight_decay": 0.5}},
        },
    }


def test_the_selected_models_entry_equals_its_settings_given_with_set(experiment, tmp_path):
    """The independent computation: the same settings as ``--set`` on the config without the section."""
    path = write(tmp_path, experiment)
    plain = write(tmp_path, {k: v for k, v in experiment.items() if k != "per_model"}, "plain.yaml")
    m2m = load_experiment(path, ["model.name=m2m"])
    by_hand = load_experiment(plain, ["model.name=m2m", "train.ema_epochs=3", "train.lr=0.002", "model.dropout=0.2",
                                      "model.m2m.meta_hidden=8"])
    assert m2m.to_dict() == by_hand.to_dict()
    assert (m2m.train.ema_epochs, m2m.train.lr, m2m.model.dropout, m2m.model.params().meta_hidden) == (3, 0.002, 0.2, 8)
    assert m2m.model.hidden_dims == [16, 8] and m2m.train.epochs == 1  # the file's values the entry leaves alone
    assert "per_model" not in m2m.to_dict()  # a run's config.yaml holds what it ran with, not the section


def test_another_model_gets_its_own_entry_or_none(experiment, tmp_path):
    path = write(tmp_path, experiment)
    mmoe = load_experiment(path)  # the file's own model has no entry
    assert (mmoe.train.ema_epochs, mmoe.train.lr, mmoe.model.dropout, mmoe.train.weight_decay) == (None, 0.01, 0.1, 1e-5)
    assert load_experiment(path, ["model.name=ple"]).train.weight_decay == 0.5
    assert load_experiment(path, ["model.name=ple"]).train.ema_epochs is None


def test_set_wins_over_the_entry_and_selects_it(experiment, tmp_path):
    path = write(tmp_path, experiment)
    cfg = load_experiment(path, ["train.lr=0.03", "model.name=m2m"])  # model.name set after another key
    assert (cfg.train.lr, cfg.train.ema_epochs) == (0.03, 3)
    experiment["model"]["name"] = "m2m"  # the file selecting the model itself
    assert load_experiment(write(tmp_path, experiment), ["train.ema_epochs=null"]).train.ema_epochs is None
    del experiment["model"]["name"]  # neither: the default model
    experiment["per_model"]["shared_bottom"] = {"train": {"patience": 9}}
    assert load_experiment(write(tmp_path, experiment)).train.patience == 9


@pytest.mark.parametrize("entries,message", [
    ({"mmeo": {"train": {"lr": 0.1}}}, r"per_model\.mmeo: unknown model"),
    ({"m2m": {"dataset": {}}}, r"per_model\.m2m\.dataset: not a section a model's settings may change"),
    ({"m2m": {"model": {"name": "ple"}}}, r"per_model\.m2m\.model\.name: the entry's key names the model"),
    ({"m2m": {"train": 3}}, r"per_model\.m2m\.train: expected a mapping"),
    ({"m2m": [1]}, r"per_model\.m2m: expected a mapping of sections"),
    ({"ple": {"train": {"ema_epoch": 3}}}, r"per_model\.ple: unknown key 'train\.ema_epoch'"),  # not the selected model
    ({"ple": {"model": {"ple": {"shared_experts": 0}}}}, r"per_model\.ple: .*model\.ple\.shared_experts"),
])
def test_a_bad_entry_is_named_whichever_model_is_selected(experiment, tmp_path, entries, message):
    experiment["per_model"] = entries
    with pytest.raises(ConfigError, match=message):
        load_experiment(write(tmp_path, experiment))


def test_a_bad_selected_entry_is_named_by_its_key(experiment, tmp_path):
    experiment["per_model"]["m2m"]["train"]["lr"] = -1.0
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_experiment(write(tmp_path, experiment), ["model.name=m2m"])
    assert load_experiment(write(tmp_path, experiment), ["model.name=m2m", "train.lr=0.1"]).train.lr == 0.1  # --set fixes it


def test_per_model_must_be_a_mapping(experiment, tmp_path):
    experiment["per_model"] = ["m2m"]
    with pytest.raises(ConfigError, match="per_model: expected a mapping of model name"):
        load_experiment(write(tmp_path, experiment))


def test_merged_lays_mappings_key_by_key_and_replaces_the_rest():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 2}
    top = {"a": {"c": [3], "e": {"f": 4}}, "d": {"g": 5}}
    assert merged(base, top) == {"a": {"b": 1, "c": [3], "e": {"f": 4}}, "d": {"g": 5}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 2}  # neither input is changed
    out = merged(base, top)
    out["a"]["e"]["f"] = 0
    assert top["a"]["e"]["f"] == 4
