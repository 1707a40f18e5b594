"""The moving average of the weights (docs/results/weight_average.md): does validating, selecting and
storing an exponential moving average of the weights (``train.ema_epochs``) beat the weights as
trained, and does it narrow the spread between training seeds?

    .venv/bin/python benchmarks/weight_average.py [--ema-epochs 3] [--online-seeds 0 .. 9]
        [--advertisers 1200] [--days 90] [--seed 2026] [--seeds 0 1 2] [--world-models m2m]
        [--skip-world] [--online-offset blend|blend_backtest] [--models NAME ...] [--threads 1] [--work runs/forecasting]
        [--default KEY=VALUE ...] [--set KEY=VALUE ...] [--out docs/results/weight_average.md]

Online ads (real data, a few hundred optimiser steps per run, 1,646 test rows): every trained variant
of the forecasting study's online section with the offset that page chose before ``blend_backtest``
existed (``model.forecast=blend``; ``--online-offset blend_backtest``: the one it chooses now) and again with ``train.ema_epochs`` (:mod:`msmt.experiments.twins`), the naive forecasters beside
them; the simulator world of ``benchmarks/forecasting.py``: the variants of ``--world-models``
likewise, scored on the new scenario too. The runs live where the forecasting study keeps its own
(same ``--work``, ``--threads`` and ``--default``: shared, reused when the same code trained them).
Where ``configs/online_ads.yaml`` averages the weights itself, a twin would be its base run again and
is refused: give ``--default train.ema_epochs=null`` (the runs without the average; no longer the
forecasting study's, so give them their own ``--work``).
``--models`` trains only those variants (and their twins) — to split the work over processes; one
more run without it writes the page. Differences are paired by training seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from msmt.experiments.twins import Twin, TwinPage, twin_main
from msmt.spec.config import load_experiment

REPO = Path(__file__).resolve().parents[1]


def config_note() -> str:
    """What the page says when ``configs/online_ads.yaml`` itself averages the weights: its runs without the
    average then need ``--default train.ema_epochs=null`` (the twin study refuses a twin the config already has)."""
    ema = load_experiment(REPO / "configs" / "online_ads.yaml").train.ema_epochs
    return "" if ema is None else (
        f" `configs/online_ads.yaml` itself averages the weights (`train.ema_epochs: {ema:g}`); the runs without the "
        "average set it off (`--default train.ema_epochs=null`, on the world's runs too, where it changes nothing).")


def page_text(ema_epochs: float) -> TwinPage:
    return TwinPage(
        title="The moving average of the weights",
        script="benchmarks/weight_average.py" + ("" if ema_epochs == 3 else f" --ema-epochs {ema_epochs:g}"),
        intro=f"**`train.ema_epochs: {ema_epochs:g}`** (`msmt.training.averaging`): after every optimiser step an "
        "exponential moving average of the weights moves towards the weights just stepped, with a time constant of "
        f"{ema_epochs:g} epochs; every epoch's validation scores the average, early stopping selects on it and the run "
        "stores it, while the optimiser keeps stepping the weights as trained (Polyak averaging). The naive forecasters "
        "have no twin. Unlike the refit, the option changes the validation numbers, so both splits are shown.",
        online_note="Each run is a few hundred optimiser steps with early stopping on 1,646 validation rows, and the "
        "test split as many: the spread between training seeds is a large part of every difference." + config_note(),
        world_note="Its training split is far larger than online ads', so an epoch there is many more optimiser steps "
        "(the average's time constant, in epochs, spans as many more).",
        label="the average",
        validation=True,
        new_scenario=True,
    )


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--ema-epochs", type=float, default=3.0, help="train.ema_epochs of the twins (the average's time constant)")


def study(args: argparse.Namespace) -> tuple[Twin, TwinPage]:
    return Twin(f" +ema{args.ema_epochs:g}", f"train.ema_epochs={args.ema_epochs:g}", "weight average"), page_text(args.ema_epochs)


def main() -> None:
    twin_main(__doc__, REPO, "weight_average.md", study, add_arguments)


if __name__ == "__main__":
    main()
