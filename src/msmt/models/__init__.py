"""Model zoo. Importing this package registers every built-in model."""

from msmt.models import (  # noqa: F401  (each module registers its models)
    aitm,
    apg,
    escm2,
    esmm,
    hmoe,
    logistic_regression,
    m2m,
    m3oe,
    mmoe,
    naive,
    pepnet,
    ple,
    popularity,
    sbmm,
    shared_bottom,
    single_task,
    star,
)
from msmt.models.base import MultiTaskModel
from msmt.models.registry import build_model, model_names

__all__ = ["MultiTaskModel", "build_model", "model_names"]
