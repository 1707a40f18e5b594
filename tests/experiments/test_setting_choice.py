"""Each model's own setting chosen on validation, and the ``per_model`` block that trains it: hand-built
numbers whose choice is known, and the block loaded back gives each model its setting's overrides."""

from __future__ import annotations

import yaml

from msmt.experiments.setting_choice import per_model_choice, per_model_entries
from msmt.spec.config import load_experiment

SETTINGS = {"none": "", "ema3": " +ema3"}
TASKS = ["clicks", "displays", "conversions"]


def _v(val: dict[str, dict[str, tuple[float, ...]]]) -> dict:
    """{model: {setting: NMAE per task on val}} -> the page's value dict; the test split says the opposite."""
    v = {}
    for model, by_setting in val.items():
        for setting, values in by_setting.items():
            for task, x in zip(TASKS, values):
                v[(model + SETTINGS[setting], "val", "overall", task, "nmae")] = (x, 0.01, 3)
                v[(model + SETTINGS[setting], "test", "overall", task, "nmae")] = (1.0 - x, 0.01, 3)
    return v


def test_each_model_takes_the_setting_its_own_tasks_prefer_on_the_split():
    v = _v({
        "a": {"none": (0.2, 0.2, 0.2), "ema3": (0.1, 0.1, 0.3)},  # ema3 lower in 2 of 3
        "b": {"none": (0.1, 0.1, 0.3), "ema3": (0.2, 0.2, 0.2)},  # none lower in 2 of 3
        "c": {"none": (0.2, 0.2, 0.2), "ema3": (0.1, 0.3, 0.2)},  # 1 each, one equal: the first listed
    })
    assert per_model_choice(v, ["a", "b", "c"], TASKS, SETTINGS, "val") == {"a": "ema3", "b": "none", "c": "none"}
    assert per_model_choice(v, ["a", "b"], TASKS, SETTINGS, "test") == {"a": "none", "b": "ema3"}
    reverse = {"ema3": " +ema3", "none": ""}  # the tie goes to whichever setting is listed first
    assert per_model_choice(v, ["c"], TASKS, reverse, "val") == {"c": "ema3"}


def test_the_entries_loaded_back_give_each_model_its_settings_overrides(tiny_dir, tmp_path):
    choice = {"mmoe": "none", "m2m": "ema3", "ple": "both"}
    overrides = {"ema3": ["train.ema_epochs=3"], "both": ["train.ema_epochs=2", "model.dropout=0.25"]}
    entries = per_model_entries(choice, overrides)
    assert entries == {"m2m": {"train": {"ema_epochs": 3}}, "ple": {"train": {"ema_epochs": 2}, "model": {"dropout": 0.25}}}
    base = {"dataset": str(tiny_dir / "dataset.yaml"), "model": {"name": "mmoe"}, "train": {"epochs": 1}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**base, "per_model": entries}))
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(base))
    for model, setting in choice.items():
        sets = [f"model.name={model}", *overrides.get(setting, [])]
        assert load_experiment(path, [f"model.name={model}"]).to_dict() == load_experiment(plain, sets).to_dict()
