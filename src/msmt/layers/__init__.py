"""Reusable building blocks: input encoding, MLPs, experts, gates."""

from msmt.layers.embedding import FeatureEncoder
from msmt.layers.mlp import MLP, activation

__all__ = ["FeatureEncoder", "MLP", "activation"]
