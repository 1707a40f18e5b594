"""Encoding validated request rows into a batch, the same way ``msmt predict`` encodes a file.

The reference is :func:`msmt.data.tensorize.encode_frame` on the DataFrame that
:func:`msmt.serving.request.rows_to_frame` builds. Its pandas calls cost a fixed ~1 ms per
column whatever the row count, which dominated the latency of small requests, so
:class:`RowEncoder` also has a direct path: the same :class:`FittedSchema` lookups
(``Vocabulary._index``, ``DenseStats.apply``, the scenario list) applied to Python lists.

The direct path is used only when, on a probe row built at start-up, it yields exactly the
keys, shapes, dtypes and values of ``encode_frame``; otherwise (a schema with inputs it does
not know) every request goes through ``encode_frame``.
``tests/serving/test_serve.py`` checks the two paths agree on random rows (hypothesis).

Panel datasets (:class:`PanelEncoder`): the history is :func:`msmt.data.panel.encode_panel`'s
core, :func:`~msmt.data.panel.encode_rows`, over the rows ``msmt predict --data ROWS --context
HISTORY`` would encode: the history store's rows of the request's units in the steps their
windows cover (with ``panel.group_keys``, also every unit of their groups: the group channel;
with ``panel.cross_section_keys`` their cross-sections' per-step totals, or every unit's rows
when the store keeps none), then the request's own ``context`` rows (which win over the store
for the same unit and step), then the rows to score (each other's history too, as in a file).
Each source becomes :class:`~msmt.data.panel.PanelRows` without a DataFrame (the store's rows
through :meth:`~msmt.serving.history.Observations.panel_rows`). The other keys come from the
direct path when it passed its probe (compared without ``seq.*``), else from ``encode_frame``
(given the request's ``context``, as ``dataset.behaviour`` reads it).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel

from msmt.data.encoders import standardise
from msmt.data.panel import OOV as OOV_EVENT
from msmt.data.panel import PanelRows, encode_rows, event_codes, time_steps
from msmt.data.tensorize import encode_frame
from msmt.serving.history import HistoryStore, group_id, unit_id, unit_keys, unit_texts
from msmt.serving.request import Column, FieldError, rows_to_frame
from msmt.spec.batch import Batch, peer_channels
from msmt.spec.dataset import FeatureSet
from msmt.spec.errors import DataError
from msmt.spec.fitted import OOV, UNKNOWN_SCENARIO, FittedSchema


def _text(value) -> str:
    """What ``encoders._text`` makes of a cell: the string, or ``"<NA>"`` when missing."""
    return "<NA>" if value is None else str(value)


class RowEncoder:
    """Validated rows -> :data:`Batch` (``rows`` are instances of the generated ``Row`` model)."""

    def __init__(self, schema: FittedSchema, cols: list[Column], row_model: type[BaseModel]):
        self.schema = schema
        self.cols = cols
        self.field = {c.column: c.field for c in cols}
        self._scenarios = {s: i + 1 for i, s in enumerate(schema.scenarios)}
        self.direct = self._probe(row_model)

    # -- the reference path ------------------------------------------------------------
    def via_frame(self, rows: list[BaseModel], context: pd.DataFrame | None = None) -> Batch:
        """``context``: earlier rows (``dataset.behaviour``: the keys' labelled rows), as ``--context``."""
        return encode_frame(rows_to_frame(rows, self.cols), self.schema, with_labels=False, context=context)

    # -- the direct path -----------------------------------------------------------------
    def _values(self, rows, column: str) -> list:
        name = self.field[column]
        return [getattr(r, name) for r in rows]

    def _sparse(self, rows, fs: FeatureSet) -> torch.Tensor:
        out = np.zeros((len(rows), len(fs.sparse)), dtype=np.int64)
        for j, f in enumerate(fs.sparse):
            vocab = self.schema.vocabularies[f.name]
            out[:, j] = vocab.encode([_text(v) for v in self._values(rows, f.column)])
        return torch.from_numpy(out)

    def _dense(self, rows, fs: FeatureSet) -> torch.Tensor:
        out = np.zeros((len(rows), len(fs.dense)), dtype=np.float32)
        for j, f in enumerate(fs.dense):
            x = np.array([np.nan if v is None else float(v) for v in self._values(rows, f.column)], dtype=np.float64)
            out[:, j] = standardise(self.schema, f, x, "request")
        return torch.from_numpy(out)

    def _multi(self, rows, f) -> torch.Tensor:
        index = self.schema.vocabularies[f.name]._index
        out = np.zeros((len(rows), f.max_length), dtype=np.int64)
        for i, v in enumerate(self._values(rows, f.column)):
            text = f.separator.join(v) if isinstance(v, list) else (v or "")
            ids = [index.get(t, OOV) for t in text.split(f.separator) if t][: f.max_length]
            out[i, : len(ids)] = ids
        return torch.from_numpy(out)

    def direct_encode(self, rows: list[BaseModel]) -> Batch:
        spec = self.schema.spec
        scen = [self._scenarios.get(_text(v), UNKNOWN_SCENARIO) for v in self._values(rows, spec.scenario.column)]
        out: Batch = {
            "scenario": torch.tensor(scen, dtype=torch.int64),
            "sparse": self._sparse(rows, spec.features),
            "dense": self._dense(rows, spec.features),
            "scenario_sparse": self._sparse(rows, spec.scenario.attributes),
            "scenario_dense": self._dense(rows, spec.scenario.attributes),
        }
        for f in spec.features.multi_sparse:
            out[f"multi.{f.name}"] = self._multi(rows, f)
        return out

    # -- choice ----------------------------------------------------------------------------
    def _probe(self, row_model: type[BaseModel]) -> bool:
        """True when the direct path reproduces ``encode_frame`` on probe rows (every key but the
        panel history ``seq.*``, which :class:`PanelEncoder` adds with :func:`encode_panel`)."""
        values = {
            "scenario": self.schema.scenarios[0] if self.schema.scenarios else "s", "sparse": "x", "dense": 1.5,
            "metric": 2.0, "event": "e",
        }
        rows = []
        for variant in range(3):
            row = {}
            for c in self.cols:
                if c.kind == "group":
                    continue
                if c.kind == "multi":
                    row[c.column] = ["a", "b"] if variant == 0 else (None if variant == 1 else "x y")
                elif c.kind == "key":
                    row[c.column] = f"k{variant}"
                elif c.kind in ("time", "instant"):
                    row[c.column] = 7 + variant
                else:
                    row[c.column] = None if (variant == 1 and c.kind != "scenario") else values[c.kind]
            rows.append(row_model.model_validate(row))
        try:
            reference = {k: v for k, v in self.via_frame(rows).items() if not k.startswith("seq.")}
            return batches_equal(self.direct_encode(rows), reference)
        except Exception:  # noqa: BLE001 - any mismatch means: use the reference path
            return False

    def __call__(self, rows: list[BaseModel]) -> Batch:
        """Rows of a dataset without a panel (panel data: :class:`PanelEncoder`)."""
        return self.direct_encode(rows) if self.direct else self.via_frame(rows)


def batches_equal(a: Batch, b: Batch) -> bool:
    """Same keys, shapes, dtypes and values (NaN-free batches)."""
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )


# ---------------------------------------------------------------------------------- panel data


PEER_MARKER = "\x00peers"  # the non-group keys of a peer-totals history row: no unit holds it
MAX_STEP = 10**12  # integer steps beyond this would overflow the (unit, step) codes of msmt.data.panel


def request_steps(frame: pd.DataFrame, column: str, part: str) -> tuple[np.ndarray, bool]:
    """``(steps [N] int64, dates?)`` of a request's time column, by :func:`time_steps` (what
    ``msmt predict`` runs); a problem is a :class:`FieldError` naming the item (``rows[2].day``)."""
    values = frame[column]
    as_number = pd.to_numeric(values, errors="coerce")
    numeric = as_number.notna().to_numpy()
    too_far = np.flatnonzero(numeric & (as_number.abs().to_numpy() > MAX_STEP))
    if len(too_far):
        raise FieldError(f"{part}[{int(too_far[0])}].{column}", f"a time step must lie within +-{MAX_STEP:.0e}, got {values.iloc[int(too_far[0])]!r}")
    if numeric.any() and not numeric.all():
        i, j = int(np.flatnonzero(numeric)[0]), int(np.flatnonzero(~numeric)[0])
        raise FieldError(f"{part}[{j}].{column}", f"a date, while {part}[{i}] holds an integer step: one form per request")
    try:
        return time_steps(frame, column), not numeric.all()
    except DataError as exc:
        for i in range(len(frame)):
            try:
                time_steps(frame.iloc[i : i + 1], column)
            except DataError as one:
                raise FieldError(f"{part}[{i}].{column}", one.problem) from None
        raise FieldError(f"{part}[*].{column}", exc.problem) from None


def future_steps(steps: np.ndarray, dates: bool) -> np.ndarray:
    """[N] bool: date steps after today (UTC); integer steps have no calendar, so none."""
    if not dates:
        return np.zeros(len(steps), dtype=bool)
    today = (dt.datetime.now(dt.timezone.utc).date() - dt.date(1970, 1, 1)).days
    return steps > today


def frame_units(frame: pd.DataFrame, keys: tuple[str, ...]) -> list[str]:
    """:func:`unit_id` per row (a missing key as ``<NA>``, the entity text of :mod:`msmt.data.panel`)."""
    parts = [["<NA>" if v is None or v is pd.NA else str(v) for v in frame[k].tolist()] for k in keys]
    return [unit_id(p) for p in zip(*parts)]


class PanelEncoder:
    """Rows of a panel dataset + their history (store and/or request context) -> (batch, history info, notes).

    Args:
        schema: the run's fitted schema (with a panel).
        cols: the row columns (:func:`msmt.serving.request.request_columns`).
        history_cols: the history-row columns (:func:`msmt.serving.request.history_columns`).
        store: the history store, or None (history only from the request).
    """

    def __init__(
        self, schema, cols: list[Column], history_cols: list[Column], store: HistoryStore | None = None,
        rows: RowEncoder | None = None,
    ):
        self.schema = schema
        self.panel = schema.spec.panel
        self.cols = cols
        self.history_cols = history_cols
        self.store = store
        self.rows = rows  # its direct path (when it passed its probe) encodes every key but seq.*

    def _keys_and_steps(self, rows: list[BaseModel], cols: list[Column], part: str) -> tuple[list[str], np.ndarray]:
        """Each row's :func:`unit_id` and time step (``request_steps`` of the key and time columns alone,
        as :func:`~msmt.serving.request.rows_to_frame` types them)."""
        panel = self.panel
        frame = rows_to_frame(rows, [c for c in cols if c.column in (*panel.keys, panel.time)])
        steps, _ = request_steps(frame, panel.time, part)
        return frame_units(frame, panel.keys), steps

    def _panel_rows(self, rows: list[BaseModel], cols: list[Column], units: list[str], steps: np.ndarray) -> PanelRows:
        """Validated rows as :class:`~msmt.data.panel.PanelRows`: what :func:`~msmt.data.panel.frame_rows` makes of
        ``rows_to_frame``'s frame (their numbers already checked as the data pipeline checks a file's)."""
        panel = self.panel
        field = {c.column: c.field for c in cols}
        values = np.full((len(rows), len(panel.metrics)), np.nan)
        for j, m in enumerate(panel.metrics):
            if m in field:
                values[:, j] = [np.nan if v is None else float(v) for v in (getattr(r, field[m]) for r in rows)]
        if panel.event and panel.event in field:
            events = event_codes([None if v is None else str(v) for v in (getattr(r, field[panel.event]) for r in rows)], self.schema.panel.events)
        else:
            events = np.full(len(rows), OOV_EVENT, np.int64)
        return PanelRows(*unit_texts(units, panel), steps, values, events)

    def _context(self, context: list[BaseModel], units: list[str], steps: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The request's context rows' units and steps, checked: each (unit, step) once, before the unit's last row."""
        time = self.panel.time
        cunits, csteps = self._keys_and_steps(context, self.history_cols, "context")
        rows_at = {(u, s): i for i, (u, s) in enumerate(zip(units, steps.tolist()))}
        last: dict[str, int] = {}
        for u, s in zip(units, steps.tolist()):
            last[u] = max(s, last.get(u, s))
        seen: dict[tuple[str, int], int] = {}
        for j, (u, s) in enumerate(zip(cunits, csteps.tolist())):
            if (u, s) in seen:
                raise FieldError(f"context[{j}]", f"same unit and {time} as context[{seen[(u, s)]}]: each at most once")
            seen[(u, s)] = j
            if (u, s) in rows_at:
                raise FieldError(f"context[{j}].{time}", f"the unit and {time} of rows[{rows_at[(u, s)]}], a row to score")
            if u in last and s > last[u]:
                raise FieldError(
                    f"context[{j}].{time}",
                    f"{s} is after the unit's last row to score ({time} {last[u]}): history must be earlier than the forecast",
                )
        return cunits, csteps

    def __call__(self, rows: list[BaseModel], context: list[BaseModel] | None = None) -> tuple[Batch, dict, list[str]]:
        panel, W = self.panel, self.panel.window
        units, steps = self._keys_and_steps(rows, self.cols, "rows")
        parts: list[PanelRows] = []
        cunits: list[str] = []
        csteps = None
        if context:
            cunits, csteps = self._context(context, units, steps)
        if self.store is not None:
            parts += self._store_rows(units, steps, cunits, csteps)
        if context:
            parts.append(self._panel_rows(context, self.history_cols, cunits, csteps))
        if self.rows is not None and self.rows.direct:
            batch = self.rows.direct_encode(rows)
        else:  # every key but seq.*, from the frames msmt predict reads (the context: dataset.behaviour's history)
            frame, cframe = rows_to_frame(rows, self.cols), rows_to_frame(context, self.history_cols) if context else None
            frame[panel.time] = steps
            if cframe is not None:
                cframe[panel.time] = csteps
            batch = encode_frame(frame, self.schema, with_labels=False, context=cframe)
        seqs = encode_rows([*parts, self._panel_rows(rows, self.cols, units, steps)], panel, self.schema.panel)  # encode_panel of the same rows
        batch.update({k: torch.from_numpy(v) for k, v in seqs.items()})
        observed = batch["seq.mask"].sum(1).tolist()
        return batch, {"window": W, "observed": observed}, self._notes(units, observed, cunits)

    def totalled(self, keys: tuple[str, ...]) -> bool:
        """Whether a peer channel keyed by ``keys`` is read as per-step totals (:meth:`_peer_totals`):
        it is the cross-section (a group of a few units, an advertiser's scenarios, is cheaper read
        row by row: docs/results/serving_history.md), the store can sum, and every other channel has
        a key outside ``keys`` (a totals row's other keys are a marker no unit holds, so it must fall
        in no real group of another channel)."""
        if tuple(keys) != tuple(self.panel.cross_section_keys) or getattr(self.store, "group_totals", None) is None:
            return False
        return all(set(other) - set(keys) for _, other in peer_channels(self.panel) if tuple(other) != tuple(keys))

    def _store_rows(self, units: list[str], steps: np.ndarray, cunits: list[str], csteps: np.ndarray | None) -> list[PanelRows]:
        """The history rows the store adds to a request: each unit's window; per peer channel either
        every unit's rows of each row's group (``panel.group_keys``: an advertiser's few scenarios) or,
        for a wide channel (``panel.cross_section_keys``: a scenario's every advertiser), one row per
        (group, step) holding the group's totals less the rows read here (:meth:`_peer_totals`)."""
        panel, W = self.panel, self.panel.window
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for u, s in zip(units, steps.tolist()):
            first[u] = min(s, first.get(u, s))
            last[u] = max(s, last.get(u, s))
        wanted = list(first)
        channels = peer_channels(panel)
        totalled = [tuple(keys) for _, keys in channels if self.totalled(tuple(keys))]
        reads: list = []
        if not channels or totalled:
            # the units' windows, their last step too: a row to score replaces a stored row of its (unit, step)
            reads.append(self.store.window(wanted, [first[u] - W for u in wanted], [last[u] - (0 if totalled else 1) for u in wanted]))
            if totalled and csteps is not None and len(csteps):  # the stored rows a context row replaces
                span: dict[str, tuple[int, int]] = {}
                for u, s in zip(cunits, csteps.tolist()):
                    lo, hi = span.get(u, (s, s))
                    span[u] = (min(lo, s), max(hi, s))
                reads.append(self.store.window(list(span), [a for a, _ in span.values()], [b for _, b in span.values()]))
        ranges: dict[tuple[str, ...], tuple[dict, dict, dict]] = {}
        for _, keys in channels:  # each row's group: the steps of its window, the row's own unit included
            positions = [list(panel.keys).index(k) for k in keys]
            g_first: dict[str, int] = {}
            g_last: dict[str, int] = {}
            values: dict[str, tuple] = {}
            for u in wanted:
                g = group_id(u, positions)
                g_first[g] = min(first[u] - W, g_first.get(g, first[u] - W))
                g_last[g] = max(last[u] - 1, g_last.get(g, last[u] - 1))
                values[g] = tuple(unit_keys(u)[i] for i in positions)
            ranges[tuple(keys)] = (g_first, g_last, values)
            if tuple(keys) not in totalled:
                groups = list(g_first)
                reads.append(self.store.group_window(groups, [g_first[g] for g in groups], [g_last[g] for g in groups], by=keys))
        events = self.schema.panel.events
        parts = [r.panel_rows(panel, events) for r in reads]  # a unit read twice (two channels, its window) comes twice: the panel keeps one
        for keys in totalled:
            parts.append(self._peer_totals(keys, *ranges[keys], reads))
        return parts

    def _peer_totals(self, keys: tuple[str, ...], g_first: dict, g_last: dict, values: dict, reads: list) -> PanelRows:
        """One history row per (group of ``keys``, step) of the store's totals, less every stored row
        the request reads as a row of its own (``reads``; each (unit, step) once), so that
        :func:`msmt.data.panel.group_history` sums the same rows as from a read of every unit. Its
        keys: the group's values, a marker for the others; its peer weights
        (:attr:`~msmt.data.panel.PanelRows.peer_rows`, ``peer_active``) its counts; no event."""
        panel = self.panel
        groups = list(g_first)
        totals = self.store.group_totals(groups, [g_first[g] for g in groups], [g_last[g] for g in groups], by=keys)
        at = {(g, s): i for i, (g, s) in enumerate(zip(totals.groups, totals.steps.tolist()))}
        rows, active, sums = totals.rows.astype(np.float64), totals.active.astype(np.float64), totals.sums.copy()
        positions = [list(panel.keys).index(k) for k in keys]
        units = [u for obs in reads for u in obs.units]
        group_of = {u: group_id(u, positions) for u in dict.fromkeys(units)}
        clean = np.concatenate([np.nan_to_num(obs.metrics, nan=0.0) for obs in reads]) if reads else sums[:0]
        first: dict[tuple[str, int], int] = {}  # each (unit, step) read taken out once, in read order
        for j, (u, s) in enumerate(zip(units, (s for obs in reads for s in obs.steps.tolist()))):
            if (u, s) not in first and (group_of[u], s) in at:
                first[(u, s)] = j
        read = np.fromiter(first.values(), np.int64, len(first))  # [K] rows of `clean`
        total = np.array([at[(group_of[u], s)] for u, s in first], dtype=np.int64)  # [K] their totals' rows
        np.subtract.at(rows, total, 1.0)
        np.subtract.at(active, total, (clean[read] > 0).any(1).astype(np.float64))
        np.subtract.at(sums, total, clean[read])
        keep = rows > 0
        index = np.flatnonzero(keep)
        key_text = [[values[totals.groups[i]][keys.index(k)] if k in keys else PEER_MARKER for k in panel.keys] for i in index]
        every = range(len(panel.keys))
        groups = tuple(np.array(["\x1f".join(t[j] for j in positions) for t in key_text], dtype=object)
                       for positions in ([panel.keys.index(k) for k in other] for _, other in peer_channels(panel)))
        return PanelRows(
            np.array(["\x1f".join(t[j] for j in every) for t in key_text], dtype=object), groups, totals.steps[keep].astype(np.int64),
            np.clip(sums[keep], 0.0, None), np.full(len(index), OOV_EVENT, np.int64), rows[keep], active[keep],
        )

    def _notes(self, units: list[str], observed: list[int], context_units: list[str]) -> list[str]:
        """What was done for rows without any history in their window (the documented fallback)."""
        empty = [i for i, n in enumerate(observed) if n == 0]
        if not empty:
            return []
        time, W = self.panel.time, self.panel.window
        known = set(context_units) | set(units[i] for i, n in enumerate(observed) if n > 0)
        if self.store is not None:
            known |= self.store.known([units[i] for i in empty])
        unknown = [i for i in empty if units[i] not in known]
        stale = [i for i in empty if units[i] in known]
        fallback = "scored without history, as msmt predict scores a row whose unit has none (cold start)"
        where = "the history store, the context or the earlier rows" if self.store is not None else "the context or the earlier rows"
        notes = []
        if unknown:
            notes.append(f"rows {_indices(unknown)}: unit unknown to {where}: {fallback}")
        if stale:
            notes.append(f"rows {_indices(stale)}: no {time} observed in the {W} before the row's own: {fallback}")
        return notes


def _indices(idx: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in idx[:limit])
    return f"[{shown}{', ...' if len(idx) > limit else ''}]"
