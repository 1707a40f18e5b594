"""Panel history: an (entity, time) table -> trailing-window sequences per row.

M2M (Zhang et al., WSDM 2022, "Leaving No One Behind") feeds each advertiser's last T days of
*behaviour* (categorical events: bid up, pause, ...) and *performance* (impressions, clicks,
cost, ...) to a Transformer. This module builds those sequences for any dataset with a
``panel:`` section (:class:`msmt.spec.dataset.PanelSpec`).

For a row of entity ``e`` at step ``t`` and a window ``W``, position ``j`` (0..W-1) holds the
entity's row at step ``t - (W - j)``: position ``W-1`` is step ``t-1``, the most recent past
step. A row's own step and later steps are never used. Outputs (the batch keys of
``docs/architecture.md``):

* ``seq.behaviour``  [N, W] int64: event index (0 = no row that step, 1 = unseen event,
  2.. = events seen in training); without an event column an observed step holds 1;
* ``seq.performance`` [N, W, F] float32: ``(log1p(max(x, 0)) - mean) / std`` per metric with
  training statistics, 0 where the step or the value is missing;
* ``seq.mask`` [N, W] bool: True where the entity has a row at that step;
* ``seq.raw`` [N, W, F] float32: the metrics as they are (counts, not standardised), 0 where the
  step or the value is missing — what naive forecasts and forecast offsets read
  (:mod:`msmt.layers.naive`);
* ``seq.present`` [N, W, F] bool: True where that metric's value was observed.
* with ``panel.group_keys`` (e.g. the advertiser of an (advertiser, scenario) unit):
  ``seq.group_raw`` [N, W, F] float32, the raw metrics summed over the group's *other* units at
  that step, ``seq.group_count`` [N, W] float32, how many of them have a row there, and
  ``seq.group_active`` [N, W] float32, how many of those have a positive value of some metric
  (were active: served, spent; a paused unit's row has none). A unit
  with no history of its own (a new scenario) is still seen through its advertiser's other
  scenarios.
* with ``panel.cross_section_keys`` (e.g. the scenario): the same three over the row's
  cross-section, ``seq.cross_raw``, ``seq.cross_count`` and ``seq.cross_active``: per past step
  what the scenario's other advertisers did, so a new scenario's level shows in the days it has.

History rows come from the frame itself plus an optional ``context`` frame (earlier data used
only for history, never scored). The lookup is vectorised: every (entity, step) gets one int64
code, and all N x W lagged codes are found with one ``searchsorted``. The work is done on arrays
(:class:`PanelRows`, :func:`encode_rows`); :func:`encode_panel` makes them of DataFrames, and the
service (:mod:`msmt.serving.encode`) of its history store's rows and its requests, without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from msmt.data.io import source_of
from msmt.data.validate import numeric_column, require_columns
from msmt.spec.batch import peer_channels
from msmt.spec.dataset import PanelSpec
from msmt.spec.errors import DataError
from msmt.spec.fitted import PanelEncoding

PAD, OOV = 0, 1
_NS_PER_DAY = 86_400 * 10**9


def time_steps(frame: pd.DataFrame, column: str) -> np.ndarray:
    """[N] int64 steps: integral numbers as they are, dates (any pandas-readable form) as days."""
    values = frame[column]
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(source_of(frame), column, "missing time value", row=row)
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.to_numpy().astype("datetime64[D]").astype(np.int64)
    numeric = pd.to_numeric(values, errors="coerce")
    if not numeric.isna().any():
        x = numeric.to_numpy(dtype=np.float64)
        if not np.all(x == np.round(x)):
            raise DataError(source_of(frame), column, "panel time steps must be integers or dates")
        return x.astype(np.int64)
    try:
        try:
            dates = pd.to_datetime(values.astype(str), format="ISO8601")
        except (ValueError, TypeError):
            dates = pd.to_datetime(values.astype(str), format="mixed")
    except (ValueError, TypeError):
        row = int(np.flatnonzero(numeric.isna().to_numpy())[0])
        raise DataError(source_of(frame), column, f"not an integer step or a date: {values.iloc[row]!r}", row=row) from None
    return dates.to_numpy().astype("datetime64[D]").astype(np.int64)


def _entity_text(frame: pd.DataFrame, keys: tuple[str, ...]) -> pd.Series:
    parts = [frame[k].astype("string").fillna("<NA>") for k in keys]
    out = parts[0]
    for p in parts[1:]:
        out = out + "\x1f" + p
    return out.reset_index(drop=True)


def metric_values(frame: pd.DataFrame, spec: PanelSpec) -> np.ndarray:
    """[N, F] float64 raw metric values; NaN where missing (or the column is absent)."""
    cols = [numeric_column(frame, m) if m in frame.columns else np.full(len(frame), np.nan) for m in spec.metrics]
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0))


def panel_events(frame: pd.DataFrame, spec: PanelSpec) -> pd.Series:
    if spec.event and spec.event in frame.columns:
        return frame[spec.event].astype("string").reset_index(drop=True)
    return pd.Series(pd.NA, index=range(len(frame)), dtype="string")


@dataclass(frozen=True)
class PanelRows:
    """Rows of a panel table as arrays, what the window look-up and the peer channels read (no pandas).

    A source of history rows (a data file, the history store's rows, the request's rows) becomes one
    of these (:func:`frame_rows`; the service: ``Observations.panel_rows`` of
    :mod:`msmt.serving.history`, and ``PanelEncoder`` of :mod:`msmt.serving.encode` for its peer totals
    and request rows); :func:`encode_rows` encodes the last part's rows with every part as their history.

    * ``entity`` [R] object: the row's unit as text, equal for the rows of one unit and only for them
      (:func:`entity_text`: its key values as text, joined by U+001F);
    * ``groups``: per peer channel (:func:`msmt.spec.batch.peer_channels` order) [R] object, the
      row's group as text (the channel's key values, joined likewise);
    * ``steps`` [R] int64 (:func:`time_steps`);
    * ``values`` [R, F] float64: the raw metrics in ``spec.metrics`` order, NaN where missing;
    * ``events`` [R] int64: the event index (2.. known events, :data:`OOV` unseen or missing);
    * ``peer_rows``, ``peer_active`` [R] float64 or None: how many rows a row stands for and how many
      of them are active (:data:`PEER_ROWS`; NaN or None: a plain row, one, active or not).
    """

    entity: np.ndarray
    groups: tuple[np.ndarray, ...]
    steps: np.ndarray
    values: np.ndarray
    events: np.ndarray
    peer_rows: np.ndarray | None = None
    peer_active: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.steps)


def entity_text(frame: pd.DataFrame, keys: tuple[str, ...]) -> np.ndarray:
    """[N] object: each row's values of ``keys`` as text joined by U+001F (missing: ``<NA>``)."""
    return _entity_text(frame, keys).to_numpy(dtype=object)


def event_codes(events, known: tuple[str, ...]) -> np.ndarray:
    """[N] int64 event index of each value of ``events``: 2.. for ``known`` (the fitted vocabulary),
    :data:`OOV` for an unseen or missing one."""
    codes = pd.Index(list(known), dtype=object).get_indexer(pd.Index(events, dtype=object))
    return np.where(codes >= 0, codes + 2, OOV).astype(np.int64)


def frame_rows(frame: pd.DataFrame, spec: PanelSpec, events: tuple[str, ...]) -> PanelRows:
    """A table's rows (a data file, or its context) as :class:`PanelRows`; ``events``: the fitted
    event vocabulary. A metric column the table lacks is missing on every row."""
    require_columns(frame, [*spec.keys, spec.time])
    n = len(frame)
    values = np.stack([numeric_column(frame, m) if m in frame.columns else np.full(n, np.nan) for m in spec.metrics], axis=1) \
        if spec.metrics else np.zeros((n, 0))
    has_event = bool(spec.event) and spec.event in frame.columns
    ev = event_codes(frame[spec.event].astype(object).to_numpy(), events) if has_event else np.full(n, OOV, np.int64)
    weight = {c: frame[c].to_numpy(np.float64, na_value=np.nan) if c in frame.columns else None for c in (PEER_ROWS, PEER_ACTIVE)}
    groups = tuple(entity_text(frame, keys) for _, keys in peer_channels(spec))
    return PanelRows(entity_text(frame, spec.keys), groups, time_steps(frame, spec.time), values, ev, weight[PEER_ROWS], weight[PEER_ACTIVE])


def concat_rows(parts: list[PanelRows]) -> PanelRows:
    """The parts' rows one after the other (a part without peer weights: plain rows)."""
    if len(parts) == 1:
        return parts[0]

    def weights(name: str) -> np.ndarray | None:
        given = [getattr(p, name) for p in parts]
        if all(w is None for w in given):
            return None
        return np.concatenate([np.full(len(p), np.nan) if w is None else w for p, w in zip(parts, given)])

    return PanelRows(
        np.concatenate([p.entity for p in parts]), tuple(np.concatenate(g) for g in zip(*(p.groups for p in parts))),
        np.concatenate([p.steps for p in parts]), np.concatenate([p.values for p in parts]),
        np.concatenate([p.events for p in parts]), weights("peer_rows"), weights("peer_active"),
    )


class _Window(NamedTuple):
    index: np.ndarray  # [N, W] row numbers into the source rows (-1: no row)
    rows: np.ndarray  # the deduplicated source rows that may serve as history
    steps: np.ndarray  # [R] int64 step of every source row
    t0: int  # steps are coded as step - t0 (>= 0 for every lag)
    span: int


def _window(entity: np.ndarray, steps: np.ndarray, n_frame: int, window: int, own_history: bool) -> _Window:
    """Where each of the last ``n_frame`` source rows finds its past ``window`` steps: every
    (entity, step) gets one int64 code, and all N x W lagged codes are found with one ``searchsorted``.
    ``entity`` [R]: the rows' units as text (or any hashable)."""
    codes_of_entity, _ = pd.factorize(entity)
    t0 = int(steps.min()) - window - 1
    span = int(steps.max()) - t0 + 1
    codes = codes_of_entity.astype(np.int64) * span + (steps - t0)  # unique per (entity, step)

    lookup = codes if own_history else codes[: len(codes) - n_frame]  # history rows: frame rows too, or context only
    # The last occurrence of a code wins: frame rows come after context rows.
    order = np.argsort(lookup, kind="stable")
    sorted_codes = lookup[order]
    last = np.r_[sorted_codes[1:] != sorted_codes[:-1], True] if len(sorted_codes) else np.zeros(0, dtype=bool)
    uniq_codes, uniq_rows = sorted_codes[last], order[last]
    history_rows = uniq_rows
    if not len(uniq_codes):  # nothing to look up: no row has history
        uniq_codes, uniq_rows = np.array([-1], dtype=np.int64), np.array([0], dtype=np.int64)

    own = codes[len(codes) - n_frame :]  # [N] the frame's own codes
    lags = np.arange(window, 0, -1, dtype=np.int64)  # [W]: W, ..., 1
    wanted = own[:, None] - lags[None, :]  # [N, W] same entity, earlier steps (t0 keeps them >= 0)
    pos = np.searchsorted(uniq_codes, wanted)
    pos_c = np.minimum(pos, len(uniq_codes) - 1)
    found = uniq_codes[pos_c] == wanted
    return _Window(np.where(found, uniq_rows[pos_c], -1), history_rows, steps, t0, span)


def history_index(
    frame: pd.DataFrame, spec: PanelSpec, context: pd.DataFrame | None = None, own_history: bool = True
) -> tuple[np.ndarray, pd.DataFrame]:
    """Where each row's past steps live.

    ``own_history=False``: only ``context`` rows are history (the frame's earlier rows are not):
    e.g. a new scenario scored with exactly the K days given as context, or none (zero-shot).

    Returns:
        index: [N, W] int64 row numbers into ``source`` (-1 where the entity has no row at that
            step); column ``W-1`` is step ``t-1``.
        source: the history rows (``context`` rows first, then ``frame`` rows), with columns
            ``_step`` and the panel's metric/event columns. A (entity, step) present in both
            keeps the ``frame`` row; duplicates within one file keep the last row.
    """
    require_columns(frame, [*spec.keys, spec.time])
    parts = []
    if context is not None and len(context):
        require_columns(context, [*spec.keys, spec.time])
        parts.append(context)
    parts.append(frame)
    entity = np.concatenate([entity_text(p, spec.keys) for p in parts])
    steps = np.concatenate([time_steps(p, spec.time) for p in parts])
    found = _window(entity, steps, len(frame), spec.window, own_history)

    keep = [c for c in [*spec.metrics, *([spec.event] if spec.event else [])]]
    frames = []
    for p in parts:
        cols = {c: p[c].reset_index(drop=True) for c in keep if c in p.columns}
        sub = pd.DataFrame(cols, index=range(len(p)))
        for c in keep:
            if c not in sub.columns:
                sub[c] = np.nan
        sub.attrs["source"] = source_of(p)
        frames.append(sub)
    source = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    source.attrs["source"] = " + ".join(source_of(p) for p in parts)
    source["_step"] = steps
    return found.index, source


# A history row may stand for many units (the service's peer totals, msmt.serving.encode): it then
# carries how many rows it sums and how many of them are active; a plain row is one, active or not.
PEER_ROWS, PEER_ACTIVE = "_peer_rows", "_peer_active"


def _weight(given: np.ndarray | None, default: np.ndarray) -> np.ndarray:
    """[R] ``given`` where it is a number, else ``default``'s value."""
    return default if given is None else np.where(np.isnan(given), default, given)


def group_history(found: _Window, group: np.ndarray, source: PanelRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A peer channel: per row and past step, the metrics summed over the *other* units of its
    group (the units sharing its values of the channel's keys: ``panel.group_keys`` or
    ``panel.cross_section_keys``) that have a row at that step, how many do, and how many of those
    are active (a positive value of some metric). The active count is what tells a group's pauses
    and resumes apart from changes of level: the advertiser's propensity to pause, shared by its
    scenarios, shows in its other units' live days.

    Only rows that may serve as history count (``found.rows``: context rows, and the frame's
    own rows unless ``own_history=False``), so a zero-shot unit's group channel is its group's
    other units' past, never its own.

    A row with :data:`PEER_ROWS` / :data:`PEER_ACTIVE` set stands for that many rows, that many of
    them active (its metrics their sums): the service's per-step totals of a group.

    Args:
        group: [R] the source rows' groups as text (:attr:`PanelRows.groups`).
        source: the source rows (their raw metrics: NaN, missing, counts as 0).
    Returns:
        sums [N, W, F] float32 (0 where no other unit of the group has a row), counts [N, W]
        float32, active [N, W] float32.
    """
    rows, values = found.rows, source.values
    n_frame, window = found.index.shape
    codes_of_group, _ = pd.factorize(group)
    codes = codes_of_group.astype(np.int64) * found.span + (found.steps - found.t0)  # unique per (group, step)
    clean = np.nan_to_num(values, nan=0.0)
    uniq, inverse = np.unique(codes[rows], return_inverse=True)
    if not len(uniq):
        empty = np.zeros((n_frame, window), np.float32)
        return np.zeros((n_frame, window, values.shape[1]), np.float32), empty, empty.copy()
    sums = np.stack([np.bincount(inverse, weights=clean[rows, f], minlength=len(uniq)) for f in range(values.shape[1])], 1)
    is_active = (clean > 0).any(1).astype(np.float64)  # [len(source)]
    row_count = _weight(source.peer_rows, np.ones(len(clean)))
    counts = np.bincount(inverse, weights=row_count[rows], minlength=len(uniq))
    actives = np.bincount(inverse, weights=_weight(source.peer_active, is_active)[rows], minlength=len(uniq))
    lags = np.arange(window, 0, -1, dtype=np.int64)
    wanted = codes[len(codes) - n_frame :, None] - lags[None, :]  # [N, W]
    pos = np.minimum(np.searchsorted(uniq, wanted), len(uniq) - 1)
    hit = uniq[pos] == wanted
    group_sums = np.where(hit[..., None], sums[pos], 0.0)  # [N, W, F], the row's own unit included
    group_counts = np.where(hit, counts[pos], 0.0)
    group_active = np.where(hit, actives[pos], 0.0)
    mine = found.index >= 0  # the own unit's row at that step is one of the summed rows: take it out
    own = np.where(mine, found.index, 0)
    group_sums -= np.where(mine[..., None], clean[own], 0.0)
    group_counts -= mine
    group_active -= mine * is_active[own]
    return np.clip(group_sums, 0.0, None).astype(np.float32), group_counts.astype(np.float32), group_active.astype(np.float32)


def empty_panel(spec: PanelSpec) -> dict[str, np.ndarray]:
    """:func:`encode_panel`'s keys for no row."""
    W, F = spec.window, len(spec.metrics)
    return {
        "seq.behaviour": np.zeros((0, W), np.int64),
        "seq.performance": np.zeros((0, W, F), np.float32),
        "seq.mask": np.zeros((0, W), bool),
        "seq.raw": np.zeros((0, W, F), np.float32),
        "seq.present": np.zeros((0, W, F), bool),
        **{key: np.zeros(shape, np.float32) for prefix, _ in peer_channels(spec)
           for key, shape in ((f"{prefix}_raw", (0, W, F)), (f"{prefix}_count", (0, W)), (f"{prefix}_active", (0, W)))},
    }


def encode_panel(
    frame: pd.DataFrame, spec: PanelSpec, fitted: PanelEncoding, context: pd.DataFrame | None = None, own_history: bool = True
) -> dict[str, np.ndarray]:
    """``{"seq.behaviour": [N, W] int64, "seq.performance": [N, W, F] float32, "seq.mask": [N, W] bool,
    "seq.raw": [N, W, F] float32, "seq.present": [N, W, F] bool}``, and per peer channel
    (:func:`msmt.spec.batch.peer_channels`: ``seq.group`` with ``spec.group_keys``, ``seq.cross``
    with ``spec.cross_section_keys``) ``"<prefix>_raw"`` [N, W, F] float32, ``"<prefix>_count"``
    and ``"<prefix>_active"`` [N, W] float32 (:func:`group_history`): :func:`encode_rows` of
    ``context``'s rows then ``frame``'s."""
    if len(frame) == 0:
        return empty_panel(spec)
    require_columns(frame, [*spec.keys, spec.time])
    parts = [frame_rows(context, spec, fitted.events)] if context is not None and len(context) else []
    return encode_rows([*parts, frame_rows(frame, spec, fitted.events)], spec, fitted, own_history)


def encode_rows(parts: list[PanelRows], spec: PanelSpec, fitted: PanelEncoding, own_history: bool = True) -> dict[str, np.ndarray]:
    """:func:`encode_panel`'s keys for the last part's rows (N of them), whose history is every
    part's rows (the last part's own too unless ``own_history=False``); a (unit, step) held by
    several rows reads the last of them."""
    if not len(parts[-1]):
        return empty_panel(spec)
    source = concat_rows(parts)
    found = _window(source.entity, source.steps, len(parts[-1]), spec.window, own_history)
    index = found.index
    mask = index >= 0
    safe = np.where(mask, index, 0)

    values = source.values
    means = np.array([fitted.metric_stats[m]["mean"] for m in spec.metrics])
    stds = np.array([fitted.metric_stats[m]["std"] for m in spec.metrics])
    z = (np.log1p(np.clip(values, 0.0, None)) - means) / stds  # [R, F]
    z = np.nan_to_num(z, nan=0.0).astype(np.float32)
    perf = z[safe] * mask[..., None]  # [N, W, F]
    present = ~np.isnan(values[safe]) & mask[..., None]  # [N, W, F]
    raw = np.where(present, np.nan_to_num(values[safe]), 0.0).astype(np.float32)
    behaviour = np.where(mask, source.events[safe], PAD).astype(np.int64)
    out = {
        "seq.behaviour": behaviour,
        "seq.performance": perf.astype(np.float32),
        "seq.mask": mask,
        "seq.raw": raw,
        "seq.present": present,
    }
    for (prefix, _), group in zip(peer_channels(spec), source.groups):
        out[f"{prefix}_raw"], out[f"{prefix}_count"], out[f"{prefix}_active"] = group_history(found, group, source)
    return out


def trailing_mean(
    frame: pd.DataFrame, spec: PanelSpec, column: str, context: pd.DataFrame | None = None
) -> np.ndarray:
    """[N] mean of ``column`` over the row's observed past steps in the window (NaN if none).

    The "unit's trailing mean" baseline; ``column`` may be any numeric column of the history rows.
    """
    extra = spec.model_copy(update={"metrics": tuple(dict.fromkeys([*spec.metrics, column]))})
    index, source = history_index(frame, extra, context)
    values = numeric_column(source, column)
    picked = np.where(index >= 0, values[np.where(index >= 0, index, 0)], np.nan)  # [N, W]
    with np.errstate(invalid="ignore"):
        counts = (~np.isnan(picked)).sum(1)
        sums = np.nansum(picked, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def short_history(
    frame: pd.DataFrame, spec: PanelSpec, context: pd.DataFrame | None = None, exempt: np.ndarray | None = None
) -> tuple[int, int]:
    """Rows to score whose history the given rows cannot fully supply: ``(rows, first step)``.

    A row is short when its window (the ``spec.window`` steps before its own) starts before the
    first step present in ``frame`` and ``context`` together, and its entity has a row at that
    first step (it was there when the data starts, so it most likely had a past; an entity that
    appears later is new and has none). ``exempt`` ([N] bool): rows never counted (a scenario
    unseen in training, when the scenario is a panel key: such a unit has no past before launch).
    """
    steps = time_steps(frame, spec.time)
    ent = _entity_text(frame, spec.keys)
    if context is not None and len(context):
        all_steps = np.concatenate([time_steps(context, spec.time), steps])
        all_ent = pd.concat([_entity_text(context, spec.keys), ent], ignore_index=True)
    else:
        all_steps, all_ent = steps, ent.reset_index(drop=True)
    first = int(all_steps.min())
    present_at_start = set(all_ent[all_steps == first])
    short = (steps - spec.window < first) & ent.isin(present_at_start).to_numpy()
    if exempt is not None:
        short &= ~np.asarray(exempt, dtype=bool)
    return int(short.sum()), first
