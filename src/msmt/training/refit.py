"""``train.refit``: after model selection, train once more on the training and validation rows.

Early stopping on the validation split chooses how long to train (the best epoch E); a forecast
of a later period — the test split, tomorrow in production — is then made by a model that has
also seen the validation days, the usual practice of forecasting systems (refit on everything up
to the forecast origin with the chosen settings; Hyndman & Athanasopoulos, *Forecasting:
Principles and Practice*, 3rd ed., §5.10 on time-series cross-validation). It matters most where
the data drift: in the online-ads data the regime changes on 1 May 2020 and 82% of the training
rows are April's, while validation and test are May's (docs/results/refit.md).

The refit starts from a fresh model with the run's seed and trains E epochs on the rows of both
splits, keeping the last epoch's weights (nothing left to select on). What the schema fitted on
the training split — vocabularies, scalers — stays; the model's own closed-form statistics (the
forecast offset's choice of naive forecast, a popularity count) are fitted again on the rows it
trains on. A panel row's history is read from the rows before it, whichever split they are in,
as for the splits encoded one after the other.
"""

from __future__ import annotations

import pandas as pd

from msmt.data.tensorize import encode_frame
from msmt.models import build_model
from msmt.models.base import MultiTaskModel
from msmt.spec.batch import Batch
from msmt.spec.config import ExperimentConfig
from msmt.spec.fitted import FittedSchema
from msmt.training.loop import FitResult, fit, seed_everything


def refit_rows(splits: dict[str, pd.DataFrame], schema: FittedSchema) -> Batch:
    """The training and validation rows as one frame, encoded (each row's panel history from the
    frame's earlier rows)."""
    frame = pd.concat([splits["train"], splits["validation"]], ignore_index=True)
    return encode_frame(frame, schema)


def refit(cfg: ExperimentConfig, schema: FittedSchema, splits: dict[str, pd.DataFrame], validation: Batch,
          epochs: int) -> tuple[MultiTaskModel, FitResult]:
    """A fresh ``cfg.model`` (seeded with ``train.seed``) trained ``epochs`` epochs on the training
    and validation rows together, its last weights kept. ``validation``: the validation split
    encoded, logged per epoch in the history (in-sample now). Returns (model, its fit)."""
    seed_everything(cfg.train.seed)
    model = build_model(schema, cfg.model)
    tc = cfg.train.model_copy(update={"epochs": epochs})
    return model, fit(model, tc, cfg.loss, refit_rows(splits, schema), validation, splits["validation"], select=False)
