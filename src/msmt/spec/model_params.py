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

    num_experts: int = Field(default=4, ge=1)  # experts mixed by each task's gate


class PLEParams(Section):
    """PLE (Tang et al., RecSys 2020)."""

    num_levels: int = Field(default=2, ge=1)  # extraction levels
    task_experts: int = Field(default=1, ge=1)  # per task and level
    shared_experts: int = Field(default=2, ge=1)  # per level
    expert_dims: list[Dim] | None = None  # each expert's MLP; default ``model.hidden_dims``


class STARParams(Section):
    """STAR (Sheng et al., CIKM 2021)."""

    norm_momentum: float = Field(default=0.1, gt=0.0, le=1.0)  # momentum of the per-scenario running statistics of the partitioned norm
    aux_dims: list[Dim] = Field(default_factory=lambda: [16])  # auxiliary network's hidden layers


class M2MParams(Section):
    """M2M (Zhang et al., WSDM 2022). Expert width comes from ``model.hidden_dims`` unless ``expert_dims`` is set.

    Default sizes are chosen for cost (docs/results/m2m_speed.md): every generated weight costs
    (scenario_dim + 1) multiply-adds per row, so S̃ = 16, one tower level, meta width 16 and a
    16-d sequence encoder keep M2M within a small factor of MMoE with the same expert sizes.
    """

    num_experts: int = Field(default=4, ge=1)  # k
    expert_dims: tuple[Dim, ...] | None = None  # each expert's layer widths (null: model.hidden_dims)
    scenario_dim: int = Field(default=16, ge=1)  # size of S̃
    scenario_hidden: tuple[Dim, ...] = (64,)  # hidden layers of the MLP that forms S̃
    task_dim: int = Field(default=16, ge=1)  # task embedding size
    meta_layers: int = Field(default=2, ge=1)  # K: depth of every meta unit
    meta_hidden: int = Field(default=16, ge=1)  # width inside the meta units
    tower_levels: int = Field(default=1, ge=1)  # L: residual levels of the meta tower
    seq_len: int | None = Field(default=None, ge=1)  # T ≤ panel window; None = the whole window
    seq_dim: int = Field(default=16, ge=1)  # width of the sequence encoder
    seq_heads: int = Field(default=2, ge=1)  # attention heads of the sequence encoder
    seq_layers: int = Field(default=1, ge=1)  # Transformer layers of the sequence encoder
    seq_ff_dim: int = Field(default=32, ge=1)  # feed-forward width of the sequence encoder
    use_transformer: bool = True  # false: pool the position-embedded steps without self-attention (ablation)
    use_meta_attention: bool = True  # false: expert attention with weights shared by all rows (ablation)
    use_meta_tower: bool = True  # false: towers with weights shared by all rows (ablation)
    profile_features: tuple[str, ...] = ()  # the advertiser profile A of S̃ = MLP(S ⊕ A)
    profile_in_experts: bool = True  # A also feeds F (the experts); false: S̃ only (msmt 0.1)
    sequence_encoder: Literal["recency", "mean_pool"] = "recency"  # msmt.layers.sequence
    # share of training rows whose scenario S is replaced by a learned "unknown scenario" S
    # (msmt.layers.scenario_knowledge.ScenarioEmbedding): with panel.cross_section_keys the model then
    # also learns to read a scenario's level off its other advertisers, as it must for a new scenario
    scenario_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide(self) -> M2MParams:
        if self.seq_dim % self.seq_heads:
            raise ValueError(f"seq_dim ({self.seq_dim}) must be divisible by seq_heads ({self.seq_heads})")
        return self


class PEPNetParams(Section):
    """PEPNet (Chang et al., KDD 2023): Gate NU δ = γ·σ(W₂ ReLU(W₁ x + b₁) + b₂)."""

    gamma: float = Field(default=2.0, gt=0.0)  # γ: the gates' range (0, γ)
    gate_hidden: int = Field(default=64, ge=1)  # width of every Gate NU's hidden layer
    prior_features: tuple[str, ...] = ()  # PPNet's persona prior (user, item, author ids); () = every categorical field
    use_epnet: bool = True  # ablation: no scenario gate on the embeddings
    use_ppnet: bool = True  # ablation: no per-task gates in the towers


class APGParams(Section):
    """APG (Yan et al., NeurIPS 2022): W(z) = U S(z) V in every bottom layer (``model.hidden_dims``)."""

    rank: int = Field(default=8, ge=1)  # K: the generated core S(z) is K x K
    overparam: int = Field(default=0, ge=0)  # P > K: U, V trained as products of [., P] x [P, .]; 0 = off
    condition_dim: int = Field(default=16, ge=1)  # width of the condition z
    condition_hidden: tuple[int, ...] = (32,)  # hidden layers of the condition network z = LayerNorm(MLP(S ⊕ C))
    condition_features: tuple[str, ...] = ()  # features joining the scenario in z (e.g. a user id)

    @model_validator(mode="after")
    def _overparam_exceeds_rank(self) -> APGParams:
        if self.overparam and self.overparam <= self.rank:
            raise ValueError(f"overparam ({self.overparam}) must exceed rank ({self.rank}), or be 0")
        return self


class HMoEParams(Section):
    """HMoE (Li et al., CIKM 2020)."""

    num_experts: int = Field(default=4, ge=1)  # shared experts under the scenario gates


class M3oEParams(Section):
    """M3oE (Zhang et al., SIGIR 2024): shared experts + one expert per scenario + one per task."""

    num_experts: int = Field(default=4, ge=1)  # shared experts


class AITMParams(Section):
    """AITM (Xi et al., KDD 2021)."""

    funnel: tuple[str, ...] = ()  # the binary tasks in funnel order (click, conversion...); () = every binary task in spec order
    calibrator_weight: float = Field(default=0.6, ge=0.0)  # α of the behavioural expectation calibrator


class ESCM2Params(Section):
    """ESCM² (Wang et al., SIGIR 2022)."""

    counterfactual: Literal["ips", "dr"] = "ips"  # the regulariser: inverse propensity or doubly robust
    weight: float = Field(default=0.5, ge=0.0)  # λ of the counterfactual regulariser
    max_inverse_propensity: float = Field(default=15.0, ge=1.0)  # 1 / pCTR clipped here


class PopularityParams(Section):
    """Smoothed popularity: (Σ y + m · scenario rate) / (n + m) per (scenario, ID, task)."""

    column: str | None = None  # the ID feature counted (null: the one ending in item_id/movie_id/ad_id, else `group`)
    prior_strength: float = Field(default=20.0, ge=0.0)  # m: pseudo-rows of the scenario's rate added to every ID


for _name, _section in {
    "single_task": NoParams,
    "shared_bottom": NoParams,
    "sbmm": NoParams,
    "mmoe": MMoEParams,
    "ple": PLEParams,
    "esmm": NoParams,
    "star": STARParams,
    "m2m": M2MParams,
    "pepnet": PEPNetParams,
    "apg": APGParams,
    "hmoe": HMoEParams,
    "m3oe": M3oEParams,
    "aitm": AITMParams,
    "escm2": ESCM2Params,
    "naive_last": NoParams,
    "naive_mean": NoParams,
    "naive_weekday": NoParams,
    "logistic_regression": NoParams,
    "popularity": PopularityParams,
}.items():
    declare_model(_name, _section)
