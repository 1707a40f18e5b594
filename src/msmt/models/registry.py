"""Model registry: name -> model class; each model's hyper-parameter section is declared in
:mod:`msmt.spec.model_params` (so validating a config imports no model code).

Adding a model touches its own file, its test and one ``@register`` line (plus its section in
``spec/model_params.py`` when it has hyper-parameters of its own): picking a model by name is a
dict lookup, never an if/elif chain.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from msmt.spec.sections import declare_model, model_section
from msmt.spec.sections import model_names as declared_names

_MODELS: dict[str, type] = {}


def register(name: str, params: type[BaseModel] | None = None) -> Callable[[type], type]:
    """Register a model class under ``name``; ``params`` declares its section (built-in models
    have theirs declared in :mod:`msmt.spec.model_params` already)."""

    def deco(cls: type) -> type:
        if name in _MODELS:
            raise ValueError(f"model '{name}' registered twice")
        if params is not None:
            declare_model(name, params)
        elif name not in declared_names():
            declare_model(name)
        _MODELS[name] = cls
        cls.registry_name = name
        return cls

    return deco


def model_names() -> list[str]:
    import msmt.models  # noqa: F401  (registers the built-in models)

    return sorted(_MODELS)


def model_class(name: str) -> type:
    model_names()
    return _MODELS[name]


def params_class(name: str) -> type[BaseModel]:
    return model_section(name)


def build_model(schema, model_cfg):
    """Instantiate ``model_cfg.name`` for a fitted schema."""
    return model_class(model_cfg.name)(schema, model_cfg)
