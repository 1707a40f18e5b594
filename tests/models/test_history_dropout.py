"""Training-time history dropout (``msmt.models.base.drop_history``): the whole history, or a
gap before the row (``model.history_gap_dropout``), the pattern a new scenario's units show when
they are scored days after the K days of context they have."""

from __future__ import annotations

import torch

from msmt.models.base import drop_history

W, P = 14, 3


def full_batch(rows: int) -> dict[str, torch.Tensor]:
    """Every step observed: [rows, W] mask, behaviour codes 1, performance / raw values 1 + step."""
    steps = torch.arange(1, W + 1, dtype=torch.float32)[None, :, None].expand(rows, W, P)
    return {
        "seq.mask": torch.ones(rows, W, dtype=torch.bool),
        "seq.behaviour": torch.ones(rows, W, dtype=torch.long),
        "seq.performance": steps.clone(),
        "seq.raw": steps.clone(),
        "seq.present": torch.ones(rows, W, P, dtype=torch.bool),
        "dense": torch.ones(rows, 2),
    }


def test_the_whole_history_goes_with_rate_one_and_nothing_with_rate_zero():
    batch = full_batch(32)
    gone = drop_history(batch, 1.0)
    assert not gone["seq.mask"].any() and not gone["seq.present"].any()
    assert (gone["seq.raw"] == 0).all() and (gone["seq.behaviour"] == 0).all()
    kept = drop_history(batch, 0.0, 0.0)
    for key in batch:
        assert torch.equal(kept[key], batch[key]), key


def test_a_gap_keeps_one_block_of_earlier_days_and_never_yesterday():
    torch.manual_seed(0)
    batch = full_batch(6000)
    out = drop_history(batch, 0.0, gap_rate=1.0)
    mask = out["seq.mask"]
    assert not mask[:, -1].any()  # day t-1 is always hidden: the gap is at least one day
    assert mask.any(1).all()  # at least one day is kept
    lag = torch.arange(W, 0, -1)  # column j is lag W - j
    starts, ends = [], []
    for row in mask:
        lags = lag[row]
        assert torch.equal(lags, torch.arange(int(lags.max()), int(lags.min()) - 1, -1)), row  # one contiguous block
        starts.append(int(lags.min()))
        ends.append(int(lags.max()))
    assert set(starts) == set(range(2, W + 1))  # every gap g = 1..W-1 occurs
    assert set(e - s + 1 for s, e in zip(starts, ends)) == set(range(1, W))  # every block length k = 1..W-1
    # every hidden step is hidden in every key; kept steps keep their values
    assert torch.equal(out["seq.present"], mask[:, :, None].expand(-1, -1, P))
    assert torch.equal(out["seq.raw"], batch["seq.raw"] * mask[:, :, None])
    assert torch.equal(out["seq.performance"], batch["seq.performance"] * mask[:, :, None])
    assert torch.equal(out["seq.behaviour"], batch["seq.behaviour"] * mask)
    assert torch.equal(out["dense"], batch["dense"])


def test_the_gap_rate_is_the_share_of_rows_cut_and_never_reveals_a_missing_day():
    torch.manual_seed(1)
    batch = full_batch(20000)
    batch["seq.mask"][:, :5] = False  # the first days of a panel: older steps missing
    batch["seq.present"][:, :5] = False
    out = drop_history(batch, 0.0, gap_rate=0.25)
    cut = (out["seq.mask"] != batch["seq.mask"]).any(1)
    assert abs(cut.float().mean().item() - 0.25) < 0.015
    assert not (out["seq.mask"] & ~batch["seq.mask"]).any()


def test_both_dropouts_together_a_dropped_history_stays_dropped_and_a_cut_one_never_shows_yesterday():
    """With both rates, each row independently: the whole history goes with ``rate`` (whatever its
    gap draw), and a row keeping part of its history kept a gap-cut block (day t-1 hidden)."""
    torch.manual_seed(2)
    mask = drop_history(full_batch(8000), 0.5, gap_rate=0.5)["seq.mask"]
    days = mask.sum(1)
    assert abs((days == 0).float().mean().item() - 0.5) < 0.03
    partial = (days > 0) & (days < W)
    assert abs(partial.float().mean().item() - 0.25) < 0.03
    assert not mask[partial, -1].any()


def _seen_by_network(model, batch) -> dict[str, torch.Tensor]:
    """The batch ``model.network`` receives when ``model(batch)`` runs (``forward`` hides history before it)."""
    seen: dict[str, torch.Tensor] = {}
    network = model.network

    def recording(b):
        seen.update(b)
        return network(b)

    model.network = recording
    try:
        model(batch)
    finally:
        del model.network
    return seen


def _panel_model(**options):
    from helpers import model_config
    from msmt.models import build_model
    from toy_panel import make_toy_panel

    toy = make_toy_panel(rows=3000, window=W)
    batch = {k: v for k, v in toy.batch.items() if k not in ("labels", "weight")}
    batch["seq.mask"] = torch.ones_like(batch["seq.mask"])  # a complete history: every hidden day is the dropout's
    torch.manual_seed(0)
    return build_model(toy.schema, model_config("mmoe", **options)), batch


def test_the_model_cuts_a_gap_in_the_configured_share_of_rows_in_training_only():
    """``model.history_gap_dropout``: in training the network sees, in that share of the rows, one block
    of days ending g >= 1 days before the row (no whole history removed); in evaluation every day."""
    model, batch = _panel_model(history_gap_dropout=0.4)
    mask = _seen_by_network(model.train(), batch)["seq.mask"]
    cut = (mask != batch["seq.mask"]).any(1)
    assert abs(cut.float().mean().item() - 0.4) < 0.05
    assert not mask[cut, -1].any()  # yesterday hidden in every cut row
    kept = mask[cut].long()
    assert (kept.sum(1) >= 1).all()  # a block is kept: not the whole history gone
    assert ((kept[:, 1:] - kept[:, :-1]) != 0).sum(1).max() <= 2  # one contiguous block (at most two edges)
    for key in ("seq.mask", "seq.behaviour", "seq.performance"):
        assert torch.equal(_seen_by_network(model.eval(), batch)[key], batch[key]), key
    whole, batch = _panel_model(history_dropout=0.3)  # the other option alone removes whole histories
    mask = _seen_by_network(whole.train(), batch)["seq.mask"]
    changed = (mask != batch["seq.mask"]).any(1)
    assert abs(changed.float().mean().item() - 0.3) < 0.05 and not mask[changed].any()


def test_the_cross_section_is_hidden_on_the_units_hidden_days_and_the_group_kept():
    """``seq.cross_*`` (the scenario's other advertisers) goes with the unit's hidden days — a new
    scenario had neither before launch — while ``seq.group_*`` (the advertiser's other scenarios,
    which existed) stays whole."""
    torch.manual_seed(1)
    batch = full_batch(500)
    for prefix in ("seq.group", "seq.cross"):
        batch[f"{prefix}_raw"] = batch["seq.raw"] * 10
        batch[f"{prefix}_count"] = torch.full((500, W), 4.0)
        batch[f"{prefix}_active"] = torch.full((500, W), 3.0)
    out = drop_history(batch, 0.3, gap_rate=0.5)
    keep = out["seq.mask"]
    assert 0 < keep.sum() < keep.numel()
    assert torch.equal(out["seq.cross_raw"], batch["seq.cross_raw"] * keep[:, :, None])
    assert torch.equal(out["seq.cross_count"], batch["seq.cross_count"] * keep)
    assert torch.equal(out["seq.cross_active"], batch["seq.cross_active"] * keep)
    for key in ("seq.group_raw", "seq.group_count", "seq.group_active"):
        assert torch.equal(out[key], batch[key]), key
