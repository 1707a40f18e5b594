"""The contract every msmt model follows.

``forward(batch) -> {task_name: Tensor[B]}``: a logit for binary tasks, a log-rate for count
tasks, a value for regression tasks. Models compute no loss; the trainer derives it from each
task's declared kind (TorchRec's split between model and loss wrapper).
"""

from __future__ import annotations

from torch import Tensor, nn

from msmt.spec.batch import Batch
from msmt.spec.fitted import FittedSchema


class MultiTaskModel(nn.Module):
    """Base class: holds the schema and task list; subclasses build the network."""

    registry_name = "base"

    def __init__(self, schema: FittedSchema, cfg):
        super().__init__()
        self.schema = schema
        self.cfg = cfg
        self.params = cfg.params()
        self.task_names: list[str] = schema.spec.task_names
        self.num_tasks = len(self.task_names)

    @classmethod
    def not_applicable(cls, spec) -> str | None:
        """Why this model cannot be meaningfully trained on a dataset ``spec`` (None: it can).

        Checked by ``msmt bench`` before any data is read, so a grid reports the cell as n/a
        with this one-line reason instead of a number that would mean something else.
        """
        return None

    def forward(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def auxiliary_outputs(self, batch: Batch) -> dict[str, Tensor]:
        """{name: [B]} for the dataset's ``auxiliary`` outputs (label-free; e.g. ESMM's CVR logit).

        Models that do not produce auxiliary outputs return ``{}``.
        """
        return {}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss flows through (loss balancing needs the split)."""
        return []

    def last_shared_layer(self) -> nn.Module | None:
        """The last layer shared by all tasks: where GradNorm measures gradient norms."""
        return None

    def task_parameters(self) -> list[nn.Parameter]:
        shared = {id(p) for p in self.shared_parameters()}
        return [p for p in self.parameters() if id(p) not in shared]
