"""Each model's own setting, chosen on a split, and the config's ``per_model`` entries that give it.

A setting is a variant of every model (e.g. with the moving average of the weights, ``train.ema_epochs: 3``, or
without) named ``<model><suffix>`` in the records (``benchmarks/setting_choice.py`` reads them from study pages
or ``msmt bench`` grids). :func:`msmt.experiments.forecasting_page.offset_wins` chooses one setting for all models
together; :func:`per_model_choice` lets each model take the one its own tasks prefer, and
:func:`per_model_entries` writes that choice as a config's ``per_model`` mapping
(:func:`msmt.spec.config.split_per_model`), so that one config trains every model with its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from msmt.experiments.forecasting_page import offset_wins
from msmt.spec.config import apply_overrides


def per_model_choice(v: dict, models: Sequence[str], tasks: Sequence[str], settings: dict[str, str], split: str) -> dict[str, str]:
    """Per model, the setting with the lowest overall NMAE on ``split`` in most of the model's tasks (the
    rule of :func:`offset_wins` applied to the model alone; a tie goes to the setting listed first).

    ``v``: :func:`msmt.experiments.forecasting_page.values` of the records; ``settings``: {label: the
    suffix its variants carry after the model's name}."""
    choice = {}
    for model in models:
        wins = offset_wins(v, [model], tasks, settings, split)
        choice[model] = max(wins, key=wins.get)  # the first of the settings with the most wins
    return choice


def per_model_entries(choice: Mapping[str, str], overrides: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
    """A config's ``per_model`` mapping giving each model of ``choice`` its setting: {model: the sections
    the setting's ``KEY=VALUE`` overrides build}; a model whose setting has no overrides (the config's
    own values) gets no entry."""
    return {model: apply_overrides({}, list(overrides[setting])) for model, setting in choice.items() if overrides.get(setting)}
