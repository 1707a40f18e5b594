"""``msmt.experiments.twins``: which runs a training option's study trains, and how they pair."""

from __future__ import annotations

from msmt.experiments.forecasting import NAIVE
from msmt.experiments.twins import BLEND, Twin, chosen, online_variants, world_variants

EMA = Twin(" +ema3", "train.ema_epochs=3", "weight average")


def test_online_twins_are_the_blend_variants_with_the_option():
    variants, pairs = online_variants(EMA)
    by_name = {v.name: v for v in variants}
    assert [v.name for v in variants[: len(NAIVE)]] == list(NAIVE)  # the naive forecasters, untwinned
    assert pairs and all(base.endswith(BLEND) and twin == base + EMA.suffix for base, twin in pairs)
    for base, twin in pairs:
        assert by_name[twin].overrides == (*by_name[base].overrides, EMA.setting)
        assert "model.forecast=blend" in by_name[base].overrides
    assert len(variants) == len(NAIVE) + 2 * len(pairs)


def test_world_twins_and_the_chosen_models():
    variants, pairs = world_variants(["m2m"], EMA)
    assert pairs == [("m2m", "m2m +ema3")]
    assert [v.name for v in variants] == [*NAIVE, "m2m", "m2m +ema3"]
    online, _ = online_variants(EMA)
    assert {v.name for v in chosen(online, ["m2m"], EMA)} == {"m2m" + BLEND, "m2m" + BLEND + EMA.suffix}
    assert chosen(online, None, EMA) == online
