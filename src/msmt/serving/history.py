"""The history store: each unit's observed outcomes per time step, read when a forecast is asked.

A forecast on panel data needs the unit's last ``W`` steps (:mod:`msmt.data.panel`). A
stateless service gets them from the request (``context`` rows) or from a store behind the small
:class:`HistoryStore` interface: ``upsert`` observations, read a ``window`` of steps per unit,
say which units it ``knows``. :class:`SqliteHistory` is the embedded implementation (the
standard library's ``sqlite3``); a server database can replace it by implementing the same
four methods.

Storage model: one row per (unit, step), the unit being the JSON list of the panel's key
values as text (``["adv00003", "feed"]``: unambiguous, whatever the keys hold) and the step the
integer :func:`msmt.data.panel.time_steps` gives (dates: days since 1970-01-01); the metrics
(``NULL`` = not known) and the event. Writing the same (unit, step) again replaces the row
(an upsert), so a retried or duplicated observation changes nothing; the store says for each
batch how many rows were new, changed and unchanged. Per peer channel (``panel.group_keys``,
``panel.cross_section_keys``) an expression index on the group's key values; for the cross-section,
spanning thousands of units (a scenario's advertisers), also ``peer_total``: per (group, step) the
row count, active count and metric sums, kept by triggers on every write, read as W totals
(:meth:`SqliteHistory.group_totals`).

Durability: WAL journal, ``synchronous=FULL``; every ``upsert`` is one transaction committed
before it returns (all of its rows or none), so what a caller was told is written survives a
killed process (``tests/serving/test_history_crash.py``). Readers see a snapshot (one read
transaction per ``window`` call) and never wait for the writer.

The store is operational data next to a service, not part of a run directory: several runs
trained on the same panel (same keys, time, metrics and event columns) can read one store, and
it outlives any run. That is why it lives in ``serving/`` rather than ``rundir/``.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from msmt.data.io import source_of
from msmt.data.panel import PanelRows, event_codes, time_steps
from msmt.data.validate import numeric_column, require_columns
from msmt.spec.batch import peer_channels
from msmt.spec.dataset import PanelSpec
from msmt.spec.errors import ConfigError, DataError

FORMAT = 1
_CHUNK = 2000  # (unit, step) pairs per statement: well under SQLite's host-parameter limit


def unit_id(keys: Sequence[str]) -> str:
    """The store's text for a unit: the JSON list of its key values."""
    return json.dumps(list(keys), ensure_ascii=False, separators=(",", ":"))


@functools.lru_cache(maxsize=1 << 16)
def unit_keys(unit: str) -> tuple[str, ...]:
    """A unit's key values as text, from its :func:`unit_id` (parsed once per unit: a service reads
    the same units request after request)."""
    return tuple(str(v) for v in json.loads(unit))


def group_id(unit: str, positions: Sequence[int]) -> str:
    """The text of a unit's group (``panel.group_keys``, or ``panel.cross_section_keys``, at
    ``positions`` of the keys): the key values joined by U+001F, what
    :meth:`SqliteHistory.group_window` matches; with every position, the unit's entity text
    (:func:`msmt.data.panel.entity_text`)."""
    keys = unit_keys(unit)
    return "\x1f".join(keys[i] for i in positions)


@dataclass
class Observations:
    """Outcomes of units per step, column-wise.

    ``units[i]``: :func:`unit_id` of the row's keys; ``steps`` [N] int64; ``metrics`` [N, F]
    float64 (NaN: not known), in the panel's metric order; ``events[i]``: text or None.
    """

    units: list[str]
    steps: np.ndarray
    metrics: np.ndarray
    events: list[str | None]

    def __len__(self) -> int:
        return len(self.units)

    @classmethod
    def empty(cls, n_metrics: int) -> Observations:
        return cls([], np.zeros(0, np.int64), np.zeros((0, n_metrics)), [])

    def panel_rows(self, panel: PanelSpec, events: tuple[str, ...]) -> PanelRows:
        """As :class:`~msmt.data.panel.PanelRows` (what :func:`~msmt.data.panel.frame_rows` makes of the
        same rows in a data file); ``events``: the fitted event vocabulary."""
        metrics = self.metrics if len(self.units) else np.zeros((0, len(panel.metrics)))
        return PanelRows(*unit_texts(self.units, panel), self.steps.astype(np.int64), metrics, event_codes(self.events, events))


def unit_texts(units: Sequence[str], panel: PanelSpec) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The :class:`~msmt.data.panel.PanelRows` texts of rows of these units (:func:`unit_id`): [R] the
    entity's, and per peer channel [R] the group's (:func:`group_id`), each worked out once per unit."""
    distinct = list(dict.fromkeys(units))
    where = {u: i for i, u in enumerate(distinct)}
    at = np.array([where[u] for u in units], dtype=np.int64)
    positions = [range(len(panel.keys)), *([panel.keys.index(k) for k in keys] for _, keys in peer_channels(panel))]
    texts = [np.array([group_id(u, p) for u in distinct], dtype=object)[at] for p in positions]
    return texts[0], tuple(texts[1:])


def observations_from_frame(frame: pd.DataFrame, panel: PanelSpec, steps: np.ndarray | None = None) -> Observations:
    """Validate a table of outcomes (read by :func:`msmt.data.loading.read_data`) like training data.

    Key columns and the time column must be present and filled; metric columns (absent: not
    known) numeric, finite and >= 0; ``steps`` (already parsed) skips the time parsing.
    Duplicated (unit, step) rows are kept: :func:`last_of_duplicates` resolves them.
    """
    require_columns(frame, [*panel.keys, panel.time])
    for k in panel.keys:
        missing = frame[k].isna().to_numpy()
        if missing.any():
            raise DataError(source_of(frame), k, "missing unit key", row=int(np.flatnonzero(missing)[0]))
    keys = [frame[k].astype(str).tolist() for k in panel.keys]
    units = [unit_id(parts) for parts in zip(*keys)]
    steps = time_steps(frame, panel.time) if steps is None else np.asarray(steps, dtype=np.int64)
    cols = []
    for m in panel.metrics:
        if m not in frame.columns:
            cols.append(np.full(len(frame), np.nan))
            continue
        x = numeric_column(frame, m)
        negative = x < 0
        if negative.any():
            row = int(np.flatnonzero(negative)[0])
            raise DataError(source_of(frame), m, f"panel metrics are counts or amounts (>= 0), got {x[row]:g}", row=row)
        cols.append(x)
    metrics = np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0))
    if panel.event and panel.event in frame.columns:
        events = [None if pd.isna(v) else str(v) for v in frame[panel.event].tolist()]
    else:
        events = [None] * len(frame)
    return Observations(units, steps.astype(np.int64), metrics.astype(np.float64), events)


def last_of_duplicates(obs: Observations) -> Observations:
    """Keep the last row of each (unit, step), as ``msmt predict --context`` does with a file."""
    seen: dict[tuple[str, int], int] = {}
    for i, (u, s) in enumerate(zip(obs.units, obs.steps.tolist())):
        seen[(u, s)] = i
    if len(seen) == len(obs):
        return obs
    keep = np.array(sorted(seen.values()), dtype=np.int64)
    return Observations([obs.units[i] for i in keep], obs.steps[keep], obs.metrics[keep], [obs.events[i] for i in keep])


@dataclass
class PeerTotals:
    """Per (group, step): how many units have a row, how many of those are active (a positive
    metric) and their metrics summed (missing counts 0) — what a peer channel reads of a group
    (:func:`msmt.data.panel.group_history`), aggregated where the rows are.

    ``groups[i]``: :func:`group_id` text; ``steps``, ``rows``, ``active`` [N] int64; ``sums`` [N, F] float64.
    """

    groups: list[str]
    steps: np.ndarray
    rows: np.ndarray
    active: np.ndarray
    sums: np.ndarray


class HistoryStore(Protocol):
    """What the service needs from a history store (SQLite here; a server database could do it).
    ``group_window`` is needed only for a panel with ``group_keys`` or ``cross_section_keys``."""

    def upsert(self, obs: Observations) -> dict[str, int]:
        """Record ``obs`` (unique (unit, step) pairs) in one transaction, durable when it returns;
        ``{"inserted": a, "updated": b, "unchanged": c}``."""
        ...

    def window(self, units: Sequence[str], first: Sequence[int], last: Sequence[int]) -> Observations:
        """The rows of ``units[i]`` with ``first[i] <= step <= last[i]``, read from one snapshot."""
        ...

    def group_window(
        self, groups: Sequence[str], first: Sequence[int], last: Sequence[int], by: Sequence[str] | None = None
    ) -> Observations:
        """Every unit's rows in steps ``first[i]..last[i]`` of group ``groups[i]`` (:func:`group_id`
        of the key columns ``by``: ``panel.group_keys`` when None, or ``panel.cross_section_keys``),
        read from one snapshot."""
        ...

    def known(self, units: Sequence[str]) -> set[str]:
        """Which of ``units`` have at least one row."""
        ...

    # Optional: ``group_totals(groups, first, last, by) -> PeerTotals`` (see :class:`SqliteHistory`).
    # A store with it serves a wide peer channel (the cross-section: every advertiser of a scenario)
    # from per-step totals instead of every unit's rows.

    def summary(self) -> dict[str, int | None]:
        """``{"rows", "units", "first_step", "last_step"}`` (a full scan: not for every request)."""
        ...

    def close(self) -> None: ...


class SqliteHistory:
    """:class:`HistoryStore` in an SQLite file (created when absent), WAL mode.

    Args:
        path: the database file.
        panel: the dataset's panel section; a store filled for other key/time/metric/event
            columns is refused with a one-line :class:`ConfigError`.
    """

    def __init__(self, path: str | Path, panel: PanelSpec):
        self.path = Path(path)
        self.panel = panel
        self.n_metrics = len(panel.metrics)
        # key positions of each peer channel's groups (msmt.spec.batch.peer_channels), each with its index
        self._groupings = {
            tuple(keys): (f"observation_{prefix.removeprefix('seq.')}", [list(panel.keys).index(k) for k in keys])
            for prefix, keys in peer_channels(panel)
        }
        self._metric_cols = [f"m{j}" for j in range(self.n_metrics)]
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # writers of this process; other processes wait on SQLite's lock
        if self.path.parent and not self.path.parent.exists():
            raise ConfigError(f"{self.path}: history store folder does not exist")
        self._init_schema()

    # -- connections ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA busy_timeout = 30000")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                conn.execute("PRAGMA synchronous = FULL")
            except sqlite3.DatabaseError as exc:
                raise ConfigError(f"{self.path}: not a usable history store ({exc})") from None
            if str(mode).lower() != "wal":
                raise ConfigError(f"{self.path}: cannot use the WAL journal (journal_mode={mode})")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- schema -------------------------------------------------------------------------------
    def _identity(self) -> dict:
        p = self.panel
        return {"keys": list(p.keys), "time": p.time, "metrics": list(p.metrics), "event": p.event}

    @staticmethod
    def _group_expr(positions: Sequence[int]) -> str:
        """SQL of a row's group text at key ``positions`` (see :func:`group_id`); indexed per peer channel."""
        parts = [f"json_extract(unit, '$[{i}]')" for i in positions]
        return " || char(31) || ".join(parts)

    def _init_schema(self) -> None:
        conn = self._conn()
        metric_defs = "".join(f", {c} REAL" for c in self._metric_cols)
        with self._lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS observation (unit TEXT NOT NULL, step INTEGER NOT NULL, "
                    f"event TEXT{metric_defs}, PRIMARY KEY (unit, step)) WITHOUT ROWID"
                )
                for name, positions in self._groupings.values():  # a group's units (an advertiser's, a scenario's) in one index range scan
                    conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON observation ({self._group_expr(positions)}, step)")
                self._init_totals(conn)
                stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                mine = json.dumps(self._identity(), sort_keys=True)
                if not stored:
                    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("format", str(FORMAT)), ("panel", mine)])
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise ConfigError(f"{self.path}: not a usable history store ({exc})") from None
        if stored and stored.get("panel") != mine:
            theirs = json.loads(stored.get("panel", "{}"))
            diff = [k for k in self._identity() if theirs.get(k) != self._identity()[k]]
            raise ConfigError(
                f"{self.path}: history store of another panel ({', '.join(f'{k}={theirs.get(k)}' for k in diff)}; "
                f"this run has {', '.join(f'{k}={self._identity()[k]}' for k in diff)})"
            )
        if stored and stored.get("format") != str(FORMAT):
            raise ConfigError(f"{self.path}: history store format {stored.get('format')}, this msmt reads {FORMAT}")

    @staticmethod
    def _channel(positions: Sequence[int]) -> str:
        """A peer channel's name in ``peer_total``: its key positions (``"1"``: the scenario of [advertiser, scenario])."""
        return "_".join(map(str, positions))

    def _init_totals(self, conn: sqlite3.Connection) -> None:
        """``peer_total``: for the cross-section channel (``panel.cross_section_keys``: a scenario's every
        advertiser; a group's few units are read row by row), (group, step) -> rows, active rows and metric sums (missing: 0),
        kept by triggers on every write of ``observation`` (a replaced row leaves its old values, then
        adds its new), so :meth:`group_totals` reads W totals instead of every unit's rows. A channel
        new to the file is filled from the rows already there (in the opening transaction)."""
        metric_defs = "".join(f", {c} REAL NOT NULL" for c in self._metric_cols)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS peer_total (channel TEXT NOT NULL, grp TEXT NOT NULL, step INTEGER NOT NULL, "
            f"n INTEGER NOT NULL, active INTEGER NOT NULL{metric_defs}, PRIMARY KEY (channel, grp, step)) WITHOUT ROWID"
        )
        cols = ", ".join(["channel", "grp", "step", "n", "active", *self._metric_cols])
        counted = ["active", *self._metric_cols]  # what a row adds besides n = 1
        for keys, (_, positions) in self._groupings.items():
            if keys != tuple(self.panel.cross_section_keys):  # a group (an advertiser's few scenarios) is cheaper read row by row
                continue
            channel = self._channel(positions)
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?", (f"peer_{channel}_insert",)).fetchone():
                continue
            grp = {row: self._group_expr(positions).replace("unit", f"{row}.unit") for row in ("NEW", "OLD", "observation")}
            adds = {row: self._row_values(row) for row in grp}
            added = ", ".join(["n = n + 1", *(f"{c} = {c} + excluded.{c}" for c in counted)])
            add = (f"INSERT INTO peer_total ({cols}) VALUES ('{channel}', {grp['NEW']}, NEW.step, 1, {', '.join(adds['NEW'])}) "
                   f"ON CONFLICT (channel, grp, step) DO UPDATE SET {added};")
            removed = ", ".join(["n = n - 1", *(f"{c} = {c} - {v}" for c, v in zip(counted, adds["OLD"]))])
            remove = f"UPDATE peer_total SET {removed} WHERE channel = '{channel}' AND grp = {grp['OLD']} AND step = OLD.step;"
            conn.execute(f"CREATE TRIGGER peer_{channel}_insert AFTER INSERT ON observation BEGIN {add} END")
            conn.execute(f"CREATE TRIGGER peer_{channel}_update AFTER UPDATE ON observation BEGIN {remove} {add} END")
            conn.execute(f"CREATE TRIGGER peer_{channel}_delete AFTER DELETE ON observation BEGIN {remove} END")
            conn.execute(f"DELETE FROM peer_total WHERE channel = '{channel}'")  # the rows already stored
            totals = ", ".join(f"total({v})" for v in adds["observation"])
            conn.execute(f"INSERT INTO peer_total ({cols}) SELECT '{channel}', {grp['observation']}, step, count(*), {totals} "
                         f"FROM observation GROUP BY {grp['observation']}, step")

    def _row_values(self, row: str) -> list[str]:
        """SQL of what the row ``row`` (NEW, OLD or the table's) adds to its group's totals: whether it
        is active (a positive metric), then each metric (missing: 0)."""
        values = [f"coalesce({row}.{c}, 0)" for c in self._metric_cols]
        return ["(" + " OR ".join(f"{v} > 0" for v in values) + ")" if values else "0", *values]

    # -- reading ------------------------------------------------------------------------------
    def _select(self) -> str:
        return ", ".join(["o.unit", "o.step", "o.event", *(f"o.{c}" for c in self._metric_cols)])

    def _to_obs(self, rows: list[tuple]) -> Observations:
        if not rows:
            return Observations.empty(self.n_metrics)
        units = [r[0] for r in rows]
        steps = np.array([r[1] for r in rows], dtype=np.int64)
        metrics = np.array([[np.nan if v is None else v for v in r[3:]] for r in rows], dtype=np.float64)
        metrics = metrics.reshape(len(rows), self.n_metrics)
        return Observations(units, steps, metrics, [r[2] for r in rows])

    def window(self, units: Sequence[str], first: Sequence[int], last: Sequence[int]) -> Observations:
        return self._ranges("o.unit", units, first, last)

    def group_window(
        self, groups: Sequence[str], first: Sequence[int], last: Sequence[int], by: Sequence[str] | None = None
    ) -> Observations:
        """Every unit's rows in steps ``first[i]..last[i]`` of group ``groups[i]`` (:func:`group_id` of
        the key columns ``by``; None: ``panel.group_keys``)."""
        by = tuple(self.panel.group_keys if by is None else by)
        if by not in self._groupings:
            declared = "no group_keys" if not by else f"no peer channel keyed by {list(by)}"
            raise ConfigError(f"{self.path}: the panel has {declared}, so there is no group to read")
        return self._ranges(self._group_expr(self._groupings[by][1]).replace("unit", "o.unit"), groups, first, last)

    def group_totals(
        self, groups: Sequence[str], first: Sequence[int], last: Sequence[int], by: Sequence[str]
    ) -> PeerTotals:
        """Per group ``groups[i]`` (distinct :func:`group_id` texts of the key columns ``by``) and step
        in ``first[i]..last[i]`` that has rows: their count, how many are active and their metric sums,
        read from ``peer_total`` (kept by triggers, :meth:`_init_totals`; one snapshot). What
        :meth:`group_window` would return, summed per (group, step) — a scenario's thousands of rows
        become W totals, whatever the number of units."""
        by = tuple(by)
        if not by or by != tuple(self.panel.cross_section_keys):
            raise ConfigError(f"{self.path}: the store keeps totals of the cross-section only (panel.cross_section_keys), not of {list(by)}")
        select = ", ".join(["q.key", "t.step", "t.n", "t.active", *(f"t.{c}" for c in self._metric_cols)])
        join = "JOIN peer_total AS t ON t.channel = ? AND t.grp = q.key AND t.step BETWEEN q.lo AND q.hi WHERE t.n > 0"
        rows = self._snapshot(select, join, groups, first, last, (self._channel(self._groupings[by][1]),))
        sums = np.array([r[4:] for r in rows], dtype=np.float64).reshape(len(rows), self.n_metrics)
        return PeerTotals([r[0] for r in rows], np.array([r[1] for r in rows], np.int64),
                          np.array([r[2] for r in rows], np.int64), np.array([r[3] for r in rows], np.int64), sums)

    def _ranges(self, key_sql: str, keys: Sequence[str], first: Sequence[int], last: Sequence[int]) -> Observations:
        """The rows whose ``key_sql`` (a unit, or a group expression) is ``keys[i]`` with
        ``first[i] <= step <= last[i]``, from one snapshot for every key of the request."""
        join = f"JOIN observation AS o ON {key_sql} = q.key AND o.step BETWEEN q.lo AND q.hi"
        return self._to_obs(self._snapshot(self._select(), join, keys, first, last))

    def _snapshot(self, select: str, join: str, keys: Sequence[str], first: Sequence[int], last: Sequence[int],
                  params: tuple = ()) -> list[tuple]:
        """``SELECT select FROM q join`` over the request's ``q(key, lo, hi)`` = (``keys[i]``,
        ``first[i]``, ``last[i]``), chunked under SQLite's parameter limit, in one read transaction
        (one snapshot); ``params``: the join's own parameters, after the chunk's."""
        conn = self._conn()
        rows: list[tuple] = []
        triples = [(k, int(a), int(b)) for k, a, b in zip(keys, first, last)]
        conn.execute("BEGIN")
        try:
            for i in range(0, len(triples), _CHUNK):
                part = triples[i : i + _CHUNK]
                values = ", ".join(["(?, ?, ?)"] * len(part))
                rows += conn.execute(f"WITH q(key, lo, hi) AS (VALUES {values}) SELECT {select} FROM q {join}",
                                     [*(x for t in part for x in t), *params]).fetchall()
        finally:
            conn.execute("COMMIT")
        return rows

    def known(self, units: Sequence[str]) -> set[str]:
        conn = self._conn()
        out: set[str] = set()
        units = list(dict.fromkeys(units))
        for i in range(0, len(units), _CHUNK):
            part = units[i : i + _CHUNK]
            marks = ", ".join("?" * len(part))
            out.update(r[0] for r in conn.execute(f"SELECT DISTINCT unit FROM observation WHERE unit IN ({marks})", part))
        return out

    def summary(self) -> dict[str, int | None]:
        rows, first, last = self._conn().execute("SELECT COUNT(*), MIN(step), MAX(step) FROM observation").fetchone()
        units = self._conn().execute("SELECT COUNT(*) FROM (SELECT DISTINCT unit FROM observation)").fetchone()[0]
        return {"rows": rows, "units": units, "first_step": first, "last_step": last}

    # -- writing ------------------------------------------------------------------------------
    def upsert(self, obs: Observations) -> dict[str, int]:
        counts = {"inserted": 0, "updated": 0, "unchanged": 0}
        if not len(obs):
            return counts
        records = [
            (u, int(s), e, *(None if np.isnan(v) else float(v) for v in m))
            for u, s, e, m in zip(obs.units, obs.steps.tolist(), obs.events, obs.metrics)
        ]
        cols = ["unit", "step", "event", *self._metric_cols]
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[2:])
        sql = (
            f"INSERT INTO observation ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (unit, step) DO UPDATE SET {updates}"
        )
        conn = self._conn()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                existing: dict[tuple[str, int], tuple] = {}
                for i in range(0, len(records), _CHUNK):
                    part = records[i : i + _CHUNK]
                    values = ", ".join(["(?, ?)"] * len(part))
                    for r in conn.execute(
                        f"WITH q(unit, step) AS (VALUES {values}) SELECT {self._select()} FROM q "
                        "JOIN observation AS o ON o.unit = q.unit AND o.step = q.step",
                        [x for rec in part for x in rec[:2]],
                    ):
                        existing[(r[0], r[1])] = r
                changed = []
                for rec in records:
                    old = existing.get((rec[0], rec[1]))
                    if old is None:
                        counts["inserted"] += 1
                        changed.append(rec)
                    elif tuple(old) != rec:
                        counts["updated"] += 1
                        changed.append(rec)
                    else:
                        counts["unchanged"] += 1
                if changed:
                    conn.executemany(sql, changed)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return counts


def open_history(path: str | Path, panel: PanelSpec | None) -> SqliteHistory:
    """The store at ``path`` for a run's panel (a run without a panel has no history to store)."""
    if panel is None:
        raise ConfigError("--history: this run's dataset has no panel section, so its model reads no history")
    return SqliteHistory(path, panel)
