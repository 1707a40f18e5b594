"""Typed sections of an experiment config that belong to one named component.

``model.<name>.*`` holds one model's hyper-parameters and ``loss.<strategy>.*`` one loss
strategy's. The config validates them against the section classes declared here, so validating
a config imports no model or training code (the classes themselves live in
:mod:`msmt.spec.model_params` and :mod:`msmt.spec.loss_params`). A model or strategy added
outside the package declares its section with :func:`declare_model` / :func:`declare_strategy`
(the registries in :mod:`msmt.models.registry` and :mod:`msmt.training.losses` do it when they
register a class with a section).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every section: immutable, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoParams(Section):
    """A component with nothing beyond the shared keys."""


MODEL_SECTIONS: dict[str, type[Section]] = {}
LOSS_SECTIONS: dict[str, type[Section]] = {}


def _declare(table: dict[str, type[Section]], kind: str, name: str, section: type[BaseModel]) -> None:
    known = table.get(name)
    if known is not None and known is not section:
        raise ValueError(f"{kind} '{name}' is already declared with section {known.__name__}")
    table[name] = section


def declare_model(name: str, section: type[BaseModel] = NoParams) -> None:
    """Make ``model.name: <name>`` valid and ``model.<name>.*`` validated by ``section``."""
    _declare(MODEL_SECTIONS, "model", name, section)


def declare_strategy(name: str, section: type[BaseModel] = NoParams) -> None:
    """Make ``loss.strategy: <name>`` valid and ``loss.<name>.*`` validated by ``section``."""
    _declare(LOSS_SECTIONS, "loss strategy", name, section)


def model_names() -> list[str]:
    from msmt.spec import model_params  # noqa: F401  (declares the built-in models)

    return sorted(MODEL_SECTIONS)


def model_section(name: str) -> type[BaseModel]:
    model_names()
    return MODEL_SECTIONS[name]


def strategy_names() -> list[str]:
    from msmt.spec import loss_params  # noqa: F401  (declares the built-in strategies)

    return sorted(LOSS_SECTIONS)


def strategy_section(name: str) -> type[BaseModel]:
    strategy_names()
    return LOSS_SECTIONS[name]
