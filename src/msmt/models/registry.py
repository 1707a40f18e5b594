"""Model registry: name -> (model class, its hyperparameter section).

Adding a model touches its own file, its test and one ``@register`` line: picking a model by
name is a dict lookup, never an if/elif chain.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

_MODELS: dict[str, tuple[type, type[BaseModel]]] = {}


class NoParams(BaseModel):
    """A model with nothing beyond the shared ``model.*`` keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def register(name: str, params: type[BaseModel] = NoParams) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in _MODELS:
            raise ValueError(f"model '{name}' registered twice")
        _MODELS[name] = (cls, params)
        cls.registry_name = name
        return cls

    return deco


def model_names() -> list[str]:
    import msmt.models  # noqa: F401  (registers the built-in models)

    return sorted(_MODELS)


def model_class(name: str) -> type:
    model_names()
    return _MODELS[name][0]


def params_class(name: str) -> type[BaseModel]:
    model_names()
    return _MODELS[name][1]


def build_model(schema, model_cfg):
    """Instantiate ``model_cfg.name`` for a fitted schema."""
    return model_class(model_cfg.name)(schema, model_cfg)
