"""Model zoo. Importing this package registers every built-in model."""

from msmt.models import registry  # noqa: F401  (first: the modules below register into it)
from msmt.models import mmoe, sbmm, shared_bottom, single_task  # noqa: F401
from msmt.models import esmm, m2m, ple, star  # noqa: F401
from msmt.models.base import MultiTaskModel
from msmt.models.registry import build_model, model_names

__all__ = ["MultiTaskModel", "build_model", "model_names"]
