"""The backtest blend (docs/results/backtest_blend.md): does a blend offset whose gate also reads how
each naive forecast has just done on the row's own series (``model.forecast=blend_backtest``) beat
the blend the forecasting page chose for online ads, where the data change regime?

    .venv/bin/python benchmarks/backtest_blend.py [--online-seeds 0 .. 9] [--skip-world]
        [--advertisers 1200] [--days 90] [--seed 2026] [--seeds 0 1 2] [--world-models m2m]
        [--models NAME ...] [--threads 1] [--work runs/forecasting]
        [--default KEY=VALUE ...] [--set KEY=VALUE ...] [--out docs/results/backtest_blend.md]

Online ads: every trained variant of the forecasting study's online section with ``model.forecast=blend``
and again with ``blend_backtest`` (:mod:`msmt.experiments.twins`), the naive forecasters beside them;
on the simulator world (unless ``--skip-world``) the variants of ``--world-models`` with the world's
own offset (``auto``) against ``blend_backtest``. The runs live where the forecasting study keeps its
own (same ``--work``, ``--threads`` and ``--default``: shared, reused when the same code trained
them). ``--models`` trains only those variants (and their twins) — to split the work over processes;
one more run without it writes the page. Differences are paired by training seed.
"""

from __future__ import annotations

from pathlib import Path

from msmt.experiments.twins import Twin, TwinPage, twin_main

REPO = Path(__file__).resolve().parents[1]

PAGE = TwinPage(
    title="The backtest blend: a gate that sees which naive forecast has just been right",
    script="benchmarks/backtest_blend.py",
    intro="**`model.forecast: blend_backtest`** (`msmt.layers.naive.ForecastOffset`, `backtest_errors`): the blend "
    "offset b = Σ_c w_c b_c over the naive forecasts (trailing mean, last value, same weekday last week), whose gate "
    "w = softmax(a + V z + U e) reads besides z (how far each candidate sits from the trailing mean) e, each "
    "candidate's mean absolute log-error over the last `model.backtest_days` (7) days of the row's own window, each "
    "day forecast from the days before it: forecast combination weighted by recent performance (Bates & Granger, "
    "1969), learnt (U starts at zero). Where the data change regime, the candidate that has stopped tracking a series "
    "shows it in e although the training split never saw that regime. Both twins are trained the same way; only "
    "the gate's input differs. The naive forecasters have no twin. The option changes the validation numbers too, "
    "so both splits are shown.",
    online_note="In the test days (the last 15% by date) the trailing mean falls far behind the last value on "
    "displays (0.52 against 0.21 NMAE): the regime the blend's training rows never showed.",
    world_note="The world does not change regime; its trained models' own offset is `auto` (the trailing mean for "
    "every task), so the twin replaces it with the backtest blend.",
    label="the backtest blend",
    validation=True,
    new_scenario=True,
)


def main() -> None:
    twin_main(__doc__, REPO, "backtest_blend.md", lambda args: (Twin(" +backtest", "model.forecast=blend_backtest", "backtest blend"), PAGE))


if __name__ == "__main__":
    main()
