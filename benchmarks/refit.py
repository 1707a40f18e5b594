"""The refit before the test split (docs/results/refit.md): does training once more on the training
and validation rows (``train.refit``) pay where the data drift, and what does it do where they do not?

    .venv/bin/python benchmarks/refit.py [--online-seeds 0 .. 9] [--advertisers 1200] [--days 90]
        [--seed 2026] [--seeds 0 1 2] [--world-models m2m] [--skip-world] [--online-offset blend|blend_backtest] [--models NAME ...]
        [--threads 1] [--work runs/forecasting] [--default KEY=VALUE ...] [--set KEY=VALUE ...]
        [--out docs/results/refit.md]

Online ads (real data: the regime changes on 1 May 2020, validation and test are May's, 82% of the
training rows April's): every trained variant of the forecasting study's online section with the
offset that page chose (``model.forecast=blend``) and again with ``train.refit``
(:mod:`msmt.experiments.twins`, the study every such option's benchmark runs), the naive forecasters
beside them. The simulator world of ``benchmarks/forecasting.py`` (stationary by construction): the
variants of ``--world-models`` likewise. The runs live where the forecasting study keeps its own (same
``--work``, ``--threads`` and ``--default``: shared, reused when the same code trained them).
``--models`` trains only those variants (and their refit twins) — to split the work over
processes; one more run without it writes the page. Differences are paired by training seed.
"""

from __future__ import annotations

from pathlib import Path

from msmt.experiments.forecasting import REFIT
from msmt.experiments.twins import Twin, TwinPage, twin_main

REPO = Path(__file__).resolve().parents[1]
REFIT_TWIN = Twin(REFIT, "train.refit=true", "refit")
PAGE = TwinPage(
    title="The refit before the test split",
    script="benchmarks/refit.py",
    intro="**`train.refit: true`** (`msmt.training.refit`): after early stopping on the validation split has chosen the "
    "best epoch E, a fresh model with the run's seed is trained E epochs on the training and validation rows "
    "together and is the one the run stores — what a forecasting system does before it forecasts the next period. "
    "The validation metrics, and the point forecast's factors (`train.point_forecast: median`), stay the first "
    "fit's: the validation rows are in-sample for the refit. So with and without the refit a run's validation "
    "numbers are the same and only the test split tells them apart. The naive forecasters are not refitted "
    "(they read each row's history as it is).",
    online_note="The refit adds the validation split's May days to what the model trains on.",
    world_note="Its days are drawn from one stationary process, so the validation days teach nothing the training days "
    "do not, beyond 20% more rows and the most recent days of each unit.",
    label="the refit",
)


def main() -> None:
    twin_main(__doc__, REPO, "refit.md", lambda args: (REFIT_TWIN, PAGE))


if __name__ == "__main__":
    main()
