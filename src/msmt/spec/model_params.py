"""``model.<name>.*``: the hyper-parameters of each built-in model (validated without model code).

Keys every model shares (``model.embedding_dim``, ``hidden_dims``...) are in
:class:`msmt.spec.config.ModelConfig`; what only one model reads is here, under its registry name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from msmt.spec.sections import NoParams, Section, declare_model

Dim = Annotated[int, Field(ge=1)]  # a layer width


class MMoEParams(Section):
    """MMoE (Ma et al., KDD 2018)."""

    num_experts: int = Field(default=4, ge=1)


class PLEParams(Section):
    """PLE (Tang et al., RecSys 2020)."""

    num_levels: int = Field(default=2, ge=1)
    task_experts: int = Field(default=1, ge=1)  # per task and level
    shared_experts: int = Field(default=2, ge=1)  # per level
    expert_dims: list[Dim] | None = None  # each expert's MLP; default ``model.hidden_dims``


class STARParams(Section):
    """STAR (Sheng et al., CIKM 2021)."""

    norm_momentum: float = Field(default=0.1, gt=0.0, le=1.0)
    aux_dims: list[Dim] = Field(default_factory=lambda: [16])  # auxiliary network's hidden layers


class M2MParams(Section):
    """M2M (Zhang et al., WSDM 2022). Expert width comes from ``model.hidden_dims`` unless ``expert_dims`` is set.

    Default sizes are chosen for cost (docs/results/m2m_speed.md): every generated weight costs
    (scenario_dim + 1) multiply-adds per row, so S̃ = 16, one tower level, meta width 16 and a
    16-d sequence encoder keep M2M within a small factor of MMoE with the same expert sizes.
    """

    num_experts: int = Field(default=4, ge=1)  # k
    expert_dims: tuple[Dim, ...] | None = None
    scenario_dim: int = Field(default=16, ge=1)  # size of S̃
    scenario_hidden: tuple[Dim, ...] = (64,)
    task_dim: int = Field(default=16, ge=1)  # task embedding size
    meta_layers: int = Field(default=2, ge=1)  # K: depth of every meta unit
    meta_hidden: int = Field(default=16, ge=1)  # width inside the meta units
    tower_levels: int = Field(default=1, ge=1)  # L: residual levels of the meta tower
    seq_len: int | None = Field(default=None, ge=1)  # T ≤ panel window; None = the whole window
    seq_dim: int = Field(default=16, ge=1)
    seq_heads: int = Field(default=2, ge=1)
    seq_layers: int = Field(default=1, ge=1)
    seq_ff_dim: int = Field(default=32, ge=1)
    use_transformer: bool = True
    use_meta_attention: bool = True
    use_meta_tower: bool = True
    profile_features: tuple[str, ...] = ()  # the advertiser profile A of S̃ = MLP(S ⊕ A)
    profile_in_experts: bool = True  # A also feeds F (the experts); false: S̃ only (msmt 0.1)
    sequence_encoder: Literal["recency", "mean_pool"] = "recency"  # msmt.layers.sequence

    @model_validator(mode="after")
    def _heads_divide(self) -> M2MParams:
        if self.seq_dim % self.seq_heads:
            raise ValueError(f"seq_dim ({self.seq_dim}) must be divisible by seq_heads ({self.seq_heads})")
        return self


for _name, _section in {
    "single_task": NoParams,
    "shared_bottom": NoParams,
    "sbmm": NoParams,
    "mmoe": MMoEParams,
    "ple": PLEParams,
    "esmm": NoParams,
    "star": STARParams,
    "m2m": M2MParams,
    "naive_last": NoParams,
    "naive_mean": NoParams,
    "naive_weekday": NoParams,
}.items():
    declare_model(_name, _section)
