"""``loss.<strategy>.*``: the settings of each built-in loss-balancing strategy (MODELS.md)."""

from __future__ import annotations

from pydantic import Field

from msmt.spec.sections import NoParams, Section, declare_strategy


class UncertaintyParams(Section):
    """Uncertainty weighting (Kendall et al., CVPR 2018): the initial log-variance s_t."""

    init_log_var: float = 0.0  # s_t at the start, every task


class GradNormParams(Section):
    """GradNorm (Chen et al., ICML 2018)."""

    alpha: float = Field(default=1.5, ge=0.0)  # asymmetry: how strongly slower tasks are pulled up
    lr: float = Field(default=0.025, gt=0.0)  # the weights' own optimiser
    min_weight: float = Field(default=1e-3, gt=0.0)  # a task's weight never falls below this


class PCGradParams(Section):
    """PCGrad (Yu et al., NeurIPS 2020)."""

    seed: int = 0  # the random projection order


class DWAParams(Section):
    """Dynamic Weight Average (Liu et al., CVPR 2019)."""

    temperature: float = Field(default=2.0, gt=0.0)  # softness of the weights (higher: more equal)


for _name, _section in {
    "fixed": NoParams,
    "uncertainty": UncertaintyParams,
    "gradnorm": GradNormParams,
    "pcgrad": PCGradParams,
    "dwa": DWAParams,
}.items():
    declare_strategy(_name, _section)
