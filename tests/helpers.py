"""Small helpers shared by tests."""

from __future__ import annotations

from msmt.config import ModelConfig
from msmt.data.tensorize import encode_frame


def model_config(name: str, **overrides) -> ModelConfig:
    base = {"name": name, "embedding_dim": 4, "hidden_dims": [16], "tower_dims": [8]}
    base.update(overrides)
    return ModelConfig.model_validate(base)


def encoded(frame, schema, with_labels=True):
    return encode_frame(frame, schema, with_labels=with_labels)
