"""The live history (docs/results/history_live.md): does reading each panel metric's live history
(``model.history_live``: days since it was last positive and last zero, its changes of state, and
whether yesterday was positive) beat the history summary alone, the features a logistic regression
is level with M2M on ``active`` with (docs/results/active_baseline.md)?

    .venv/bin/python benchmarks/history_live.py [--online-seeds 0 .. 9] [--skip-world] [--online-offset blend|blend_backtest]
        [--advertisers 1200] [--days 90] [--seed 2026] [--seeds 0 1 2]
        [--world-models logistic_regression+history single_task+history shared_bottom+history mmoe+history ple+history m2m]
        [--models NAME ...] [--threads 1] [--work runs/forecasting]
        [--default KEY=VALUE ...] [--set KEY=VALUE ...] [--out docs/results/history_live.md]

Online ads: every trained variant of the forecasting study's online section with ``model.forecast=blend``
and again with ``model.history_live=true`` (:mod:`msmt.experiments.twins`); on the simulator world the
variants of ``--world-models`` likewise. The option needs the history summary
(``model.history_summary=true``): the ``+history`` variants read it already, M2M's twin gets it with
the live features (so M2M's twin differs by both). The runs live where the forecasting study keeps its
own (same ``--work``, ``--threads`` and ``--default``: shared, reused when the same code trained them).
``--models`` trains only those variants (and their twins); one more run without it writes the page.
Differences are paired by training seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from msmt.experiments.forecasting import main_variants
from msmt.experiments.twins import Twin, TwinPage, twin_main

REPO = Path(__file__).resolve().parents[1]

LIVE = Twin(" +live", "model.history_live=true", "live history", requires=("model.history_summary=true",))

PAGE = TwinPage(
    title="The live history: days since each metric was last positive",
    script="benchmarks/history_live.py",
    intro="**`model.history_live: true`** (`msmt.layers.history.HistorySummary`): besides the summary of the window "
    "(`model.history_summary`), per panel metric the days since it was last positive and since it was last zero "
    "(each over the window length + 1), its changes between zero and positive (over the window length) and whether "
    "yesterday was positive: the run-length features with which scikit-learn's logistic regression is level with M2M "
    "on `active` ([active_baseline.md](active_baseline.md)). M2M's twin also reads the summary, which the option "
    "needs (`model.history_summary=true`); the `+history` variants read it already. The naive forecasters have no "
    "twin. The option changes the validation numbers, so both splits are shown.",
    online_note="Conversions are zero on most rows, so their days since the last positive day are a feature the "
    "summary's mean and last value only approximate.",
    world_note="Units pause and resume (the `active` task), so a count's run of zeros says when the unit paused. "
    "M2M's runs here keep their whole correction on the new scenario (`model.unseen_scenario_correction` 1, the "
    "forecasting page's `m2m (w = 1)` rows; training is the same for any w), so its K = 3 / 7 rows are those.",
    label="the live history",
    validation=True,
    new_scenario=True,
)


def study(args: argparse.Namespace) -> tuple[Twin, TwinPage]:
    return LIVE, PAGE


def main() -> None:
    trained = [v.name for v in main_variants() if not v.name.startswith("naive_")]
    twin_main(__doc__, REPO, "history_live.md", study, world_models=trained)


if __name__ == "__main__":
    main()
