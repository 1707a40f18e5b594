"""The FastAPI application: ``POST /v1/predict``, ``POST /v1/observe``, ``GET /v1/schema``,
``GET /healthz``, ``/docs`` (an offline page, :mod:`msmt.serving.openapi`), ``/openapi.json``.

Bad requests get a 4xx answer whose ``detail`` names the field (``rows[3].user_id: missing
field``): 400 malformed JSON, 404 ``/v1/observe`` without a history store, 413 body over
``max_body_bytes``, 422 anything that fails the schema-generated validation (missing / wrongly
typed field, unknown scenario, too many rows, a time that is no step or date, history rows
that conflict or come after the forecast, observations of a future date). Any other exception
is a bug: it is logged and answered with a 500 without stopping the server. Every error body
is ``{"detail": one line, "errors": [{"field", "problem"}]}`` (``openapi.ErrorResponse``, the
shape the OpenAPI documents). :class:`AccessLog` writes one line per request to the
``msmt.serving.access`` logger.

This module deliberately has no ``from __future__ import annotations``: FastAPI reads the
endpoint's annotation at runtime and the request model is a class created per run.
"""

import difflib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from msmt.api import check_predictions
from msmt.rundir.layout import LoadedRun, load_run
from msmt.serving.encode import PanelEncoder, RowEncoder, frame_units, future_steps, request_steps
from msmt.serving.history import HistoryStore, last_of_duplicates, observations_from_frame, open_history
from msmt.serving.openapi import Health, ObserveResponse, SchemaDoc, docs_html, errors, predict_response
from msmt.serving.request import (
    EXPECTED,
    FieldError,
    build_observe_model,
    build_request_models,
    check_values,
    history_columns,
    ignored_columns,
    parse_body,
    rows_to_frame,
)
from msmt.serving.scorer import Scorer
from msmt.spec.errors import ConfigError, MsmtError
from msmt.spec.task_kinds import rules

log = logging.getLogger("msmt.serve")
access_log = logging.getLogger("msmt.serving.access")
MAX_ERRORS = 20
SERVE_OPTIONS = "MSMT_SERVE_OPTIONS"  # JSON options of `msmt serve --workers N` for each worker process


class BodyLimit:
    """ASGI middleware: answer 413 when the body exceeds ``max_bytes`` (declared or streamed)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _send_json(send, 400, _error("content-length", "not an integer"))
            if size > self.max_bytes:
                return await _send_json(send, 413, _too_large(self.max_bytes, size))
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, _too_large(self.max_bytes, None)["detail"])
            return message

        await self.app(scope, limited, send)


class AccessLog:
    """ASGI middleware: one line per HTTP request on the ``msmt.serving.access`` logger (INFO):
    ``POST /v1/predict 200 3.1 ms in=1234 B out=567 B client=127.0.0.1``, the same values as the
    record's attributes (``method``, ``path``, ``status``, ``latency_ms``, ``request_bytes``,
    ``response_bytes``). Outermost, so a 413 of :class:`BodyLimit` is logged too; an exception
    that escapes every handler is logged as status 500."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not access_log.isEnabledFor(logging.INFO):
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        sizes = {"in": 0, "out": 0}
        status = 500

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                sizes["in"] += len(message.get("body", b""))
            return message

        async def counted_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sizes["out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            ms = (time.perf_counter() - start) * 1000
            client = (scope.get("client") or ("-",))[0]
            method, path = scope.get("method", "-"), scope.get("path", "-")
            access_log.info(
                "%s %s %d %.1f ms in=%d B out=%d B client=%s", method, path, status, ms, sizes["in"], sizes["out"], client,
                extra={"method": method, "path": path, "status": status, "latency_ms": ms,
                       "request_bytes": sizes["in"], "response_bytes": sizes["out"]},
            )


def enable_access_log(stream=None) -> None:
    """Print the access log (``msmt serve`` does, to stderr; a library user configures logging)."""
    if not any(getattr(h, "_msmt_access", False) for h in access_log.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        handler._msmt_access = True  # type: ignore[attr-defined]
        access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)


def _too_large(limit: int, size: int | None) -> dict:
    got = f", got {size} bytes" if size is not None else ""
    return _error("body", f"request body over the limit of {limit} bytes{got}")


def _error(field: str, problem: str) -> dict:
    return {"detail": f"{field}: {problem}", "errors": [{"field": field, "problem": problem}]}


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is parsed by :func:`msmt.serving.request.parse_body` (duplicate
    keys and non-finite numbers are a 422 naming where) before FastAPI reads it; a body that is
    no JSON at all is left to FastAPI, whose own parse answers 400."""

    def get_route_handler(self):
        handler = super().get_route_handler()
        top = "observations" if self.path == "/v1/observe" else "rows"

        async def strict(request: Request):
            kind = request.headers.get("content-type", "")
            if request.method == "POST" and (not kind or "json" in kind):
                raw = await request.body()
                if raw:
                    try:
                        request._json = parse_body(raw, top)  # starlette's Request.json() returns it
                    except FieldError:
                        raise
                    except Exception:  # noqa: BLE001 - not JSON (or too deep): FastAPI's parse says so with a 400
                        pass
            return await handler(request)

        return strict


def dumps(payload) -> str:
    """JSON text of an answer; never ``NaN`` or ``Infinity`` (those are not JSON)."""
    return json.dumps(payload, allow_nan=False)


def _field_path(loc: tuple) -> tuple[str, str | None, str | None]:
    """``('body', 'rows', 3, 'user_id', 'str')`` -> ``('rows[3].user_id', 'user_id', 'rows')``."""
    parts = [p for p in loc if p != "body"]
    if len(parts) >= 2 and isinstance(parts[0], str) and isinstance(parts[1], int):
        if len(parts) >= 3 and isinstance(parts[2], str):
            return f"{parts[0]}[{parts[1]}].{parts[2]}", parts[2], parts[0]
        return f"{parts[0]}[{parts[1]}]", None, parts[0]
    if parts and isinstance(parts[0], str):
        return parts[0], None, None  # a top-level key: "rows", or an unknown one
    return "body", None, None


_TOP_LEVEL = {"rows": "rows", "context": "context rows", "observations": "observations"}


def describe_errors(errors: list[dict], kinds: dict[str, dict[str, str]], max_rows: int) -> tuple[int, dict]:
    """pydantic / FastAPI errors -> (status, {"detail": one line, "errors": [{field, problem}]}).

    ``kinds``: per list of the body (``rows``, ``context``, ``observations``), column -> kind."""
    out: dict[str, str] = {}
    status = 422
    for e in errors:
        kind = e.get("type", "")
        field, column, part = _field_path(tuple(e.get("loc", ())))
        part_kinds = kinds.get(part or "", {})
        if kind == "json_invalid":
            status = 400
            ctx = e.get("ctx") or {}
            problem = f"malformed JSON ({ctx.get('error', 'cannot parse')})"
        elif kind == "missing":
            problem = "missing request body" if field == "body" else "missing field"
            row = e.get("input")
            if column and isinstance(row, dict):  # a key of the row that is no column and looks like this one
                unknown = [k for k in row if isinstance(k, str) and k not in part_kinds]
                near = difflib.get_close_matches(column, unknown, n=1, cutoff=0.6)
                if near:
                    out.setdefault(field, f"{problem} (the row has '{near[0]}': misspelt?)")
                    out.setdefault(field.rsplit(".", 1)[0] + f".{near[0]}", f"unknown field (is it '{column}'?)")
        elif kind == "extra_forbidden" and field == "context":
            problem = "this model reads no history (its dataset has no panel section)"
        elif kind == "extra_forbidden":
            top = "observations" if "observations" in kinds else "rows"
            problem = f'unknown field (the body is {{"{top}": [...]}})'
        elif field in _TOP_LEVEL and kind == "too_long":
            limit = (e.get("ctx") or {}).get("max_length", max_rows)
            problem = f"at most {limit} {_TOP_LEVEL[field]} per request"
        elif field in _TOP_LEVEL and kind == "too_short":
            problem = "at least one row is needed"
        elif kind == "value_error":
            problem = str(e.get("msg", "")).removeprefix("Value error, ")
        elif column in part_kinds:
            problem = f"{EXPECTED[part_kinds[column]]}, got {_short(e.get('input'))}"
        elif field == "body":
            top = "observations" if "observations" in kinds else "rows"
            problem = f'expected a JSON object {{"{top}": [...]}} or a JSON list of rows'
        elif field in _TOP_LEVEL:
            problem = f"expected a list of {_TOP_LEVEL[field]}"
        else:
            problem = "expected an object mapping column names to values"
        out.setdefault(field, problem)
    items = [{"field": f, "problem": p} for f, p in list(out.items())[:MAX_ERRORS]]
    more = f" (+{len(out) - MAX_ERRORS} more)" if len(out) > MAX_ERRORS else ""
    detail = "; ".join(f"{i['field']}: {i['problem']}" for i in items) + more
    return status, {"detail": detail, "errors": items}


def _short(value) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None), list, dict)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _task_doc(task, point) -> dict:
    """A task of ``GET /v1/schema``; with the run's point-forecast factors where it has them."""
    doc = {"name": task.name, "kind": task.kind.value, "output": rules(task).user_units}
    if point is not None and task.name in point.overall:
        doc["point_factors"] = {
            "overall": point.overall[task.name], "scenarios": point.scenarios.get(task.name, {}),
            "poisson_median": task.name in (point.median or ()),
        }
    return doc


def describe_schema(scorer: Scorer, cols, max_rows: int, max_body_bytes: int, store: HistoryStore | None) -> dict:
    schema = scorer.schema
    spec = schema.spec
    doc = {
        "model": scorer.run.config.model.name,
        "backend": scorer.backend,
        "features": [{"column": c.column, "kind": c.kind, "required": c.required} for c in cols],
        "scenario": {
            "column": spec.scenario.column,
            "known": list(schema.scenarios),
            "attributes": spec.scenario.attributes.columns,
            "unseen_allowed": bool(spec.scenario.attributes.columns),
        },
        "tasks": [_task_doc(t, scorer.run.point) for t in spec.tasks],
        "group": spec.group,
        "limits": {"max_rows": max_rows, "max_body_bytes": max_body_bytes},
    }
    if spec.panel is not None:
        p = spec.panel
        doc["panel"] = {
            "keys": list(p.keys), "time": p.time, "window": p.window, "metrics": list(p.metrics), "event": p.event,
            "history_store": store is not None,
        }
    if spec.behaviour is not None:
        b = spec.behaviour
        doc["behaviour"] = {"key": b.key, "time": b.time, "labels": [spec.task(t).label for t in b.tasks], "length": b.length,
                            "context": "each key's earlier rows with their labels, as the request's context"}
    return doc


def create_app(
    run: LoadedRun,
    backend: str = "torch",
    onnx_path: str | Path | None = None,
    max_rows: int = 1000,
    max_body_bytes: int = 2 * 1024 * 1024,
    block_cache_size: int = 128,
    threads: int = 1,
    history: HistoryStore | str | Path | None = None,
) -> FastAPI:
    """The scoring app for one run (see the module docstring for the endpoints).

    ``history``: a history store (or the path of an SQLite one) the service reads each unit's
    window from and ``POST /v1/observe`` writes to; panel runs only."""
    spec = run.schema.spec
    store: HistoryStore | None = open_history(history, spec.panel) if isinstance(history, (str, Path)) else history
    if store is not None and spec.panel is None:
        raise ConfigError("--history: this run's dataset has no panel section, so its model reads no history")
    scorer = Scorer(run, backend, onnx_path, block_cache_size, threads)
    Row, PredictRequest, cols = build_request_models(run.schema, max_rows)
    hist_cols = history_columns(run.schema)
    kinds = {"rows": {c.column: c.kind for c in cols}, "context": {c.column: c.kind for c in hist_cols}}
    encoder = RowEncoder(run.schema, cols, Row)
    panel_encoder = PanelEncoder(run.schema, cols, hist_cols, store, encoder) if spec.panel is not None else None
    group_field = next((c.field for c in cols if c.column == spec.group), None)
    scenario_field = next(c.field for c in cols if c.column == spec.scenario.column)
    task_names = list(scorer.kinds)
    schema_doc = describe_schema(scorer, cols, max_rows, max_body_bytes, store)
    observe_kinds = {"observations": kinds["context"]}

    app = FastAPI(
        title=f"msmt scoring: {spec.name} ({run.config.model.name})",
        description="Multi-scenario, multi-task predictions: probability for binary tasks, expected count for counts.",
        version="1",
        docs_url=None,  # FastAPI's Swagger UI loads its assets from a CDN: blank offline (msmt.serving.openapi)
        redoc_url=None,
    )
    app.router.route_class = StrictJsonRoute
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(AccessLog)  # added last: outermost
    app.state.scorer = scorer
    app.state.encoder = encoder
    app.state.row_model = Row
    app.state.history = store

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        which = observe_kinds if request.url.path == "/v1/observe" else kinds
        status, payload = describe_errors(list(exc.errors()), which, max_rows)
        return JSONResponse(payload, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        field = "body" if exc.status_code in (400, 413) else "request"
        if ": " in detail and detail.split(": ", 1)[0] in ("body", "request"):
            detail = detail.split(": ", 1)[1]
        return JSONResponse(_error(field, detail), status_code=exc.status_code)

    @app.exception_handler(FieldError)
    async def _field(request: Request, exc: FieldError):
        return JSONResponse(_error(exc.field, exc.problem), status_code=422)

    @app.exception_handler(MsmtError)
    async def _msmt(request: Request, exc: MsmtError):
        column, row = getattr(exc, "column", None), getattr(exc, "row", None)
        problem = getattr(exc, "problem", str(exc))
        part = "observations" if request.url.path == "/v1/observe" else "rows"
        where = part + (f"[{row}]" if row is not None else "[*]" if column else "") + (f".{column}" if column else "")
        return JSONResponse(_error(where, problem), status_code=422)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("internal error while answering %s", request.url.path)
        return JSONResponse(_error("request", f"internal error ({type(exc).__name__})"), status_code=500)

    docs_page: list[str] = []

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if not docs_page:
            docs_page.append(docs_html(app.openapi()))
        return HTMLResponse(docs_page[0])

    @app.get("/healthz", response_model=Health, responses=errors(500))
    def healthz() -> Response:
        """Liveness, the model and backend, personal-block cache statistics."""
        out = {"status": "ok", "model": run.config.model.name, "backend": scorer.backend, "blocks": scorer.blocks.stats(), "pid": os.getpid()}
        if store is not None:
            out["history"] = str(getattr(store, "path", type(store).__name__))
        return Response(dumps(out), media_type="application/json")

    @app.get("/v1/schema", response_model=SchemaDoc, responses=errors(500))
    def get_schema() -> Response:
        """What a row holds (columns, kinds), the scenarios, the tasks and their output units, the limits."""
        return Response(dumps(schema_doc), media_type="application/json")

    tasks_units = {t.name: rules(t).user_units for t in spec.tasks}
    PredictResponse = predict_response(tasks_units, spec.panel is not None, list(run.point.overall) if run.point else [])

    @app.post("/v1/predict", response_model=PredictResponse, responses=errors(400, 413, 422, 500))
    def predict(body: PredictRequest) -> Response:  # type: ignore[valid-type]
        """Score rows: ``{"rows": [{column: raw value}, ...]}`` -> ``{"predictions": [{task: value}]}``.

        Panel data: each row's history is read from the history store (when the service has
        one) and the body's optional ``"context"`` rows; ``"history"`` says how many of the
        window's steps were observed per row, ``"notes"`` which rows had none (cold start)."""
        groups = [getattr(r, group_field) for r in body.rows] if group_field else None
        check_values(body.rows, cols, run.schema, "rows")
        if panel_encoder is not None:
            context = body.context
            check_values(context, hist_cols, run.schema, "context")
            batch, history_info, notes = panel_encoder(body.rows, context)
            ignored = ignored_columns([*body.rows, *context])
        elif spec.behaviour is not None:  # each key's earlier labelled rows come with the request
            context = body.context
            check_values(context, hist_cols, run.schema, "context")
            batch = encoder.via_frame(body.rows, context=rows_to_frame(context, hist_cols))
            history_info, notes = None, None
            ignored = ignored_columns([*body.rows, *context])
        else:
            batch, history_info, notes = encoder(body.rows), None, None
            ignored = ignored_columns(body.rows)
        preds, personal = scorer.score(batch, groups)
        check_predictions(preds, "request")  # a DataError naming rows[i]: never NaN in an answer
        columns = [preds[t].tolist() for t in task_names]
        rows = [dict(zip(task_names, values)) for values in zip(*columns)]
        payload = {"predictions": rows, "personal": personal.tolist(), "ignored": ignored}
        if run.point is not None:  # train.point_forecast: scaled / median (msmt.scoring.point), as msmt predict's point_<task>
            points = run.point.apply(preds, np.array([str(getattr(r, scenario_field)) for r in body.rows], dtype=object))
            payload["point"] = [dict(zip(points, values)) for values in zip(*(v.tolist() for v in points.values()))]
        if history_info is not None:
            payload["history"] = history_info
            payload["notes"] = notes
        return Response(dumps(payload), media_type="application/json")

    if spec.panel is None:

        @app.post("/v1/observe", response_model=ObserveResponse, responses=errors(404))
        def observe_nothing() -> Response:
            """Not available: this model reads no history."""
            raise StarletteHTTPException(404, "request: this model reads no history (its dataset has no panel section)")

        return app

    ObserveRequest, _ = build_observe_model(run.schema, max_rows)
    panel = spec.panel

    @app.post("/v1/observe", response_model=ObserveResponse, responses=errors(400, 404, 413, 422, 500))
    def observe(body: ObserveRequest) -> Response:  # type: ignore[valid-type]
        """Record outcomes: ``{"observations": [{keys..., time, metrics..., event}]}``, one
        transaction committed before the answer; the same (unit, time) again replaces its row."""
        if store is None:
            raise StarletteHTTPException(404, "request: no history store (start the service with --history PATH)")
        items = body.observations
        check_values(items, hist_cols, run.schema, "observations")
        frame = rows_to_frame(items, hist_cols)
        steps, dates = request_steps(frame, panel.time, "observations")
        future = future_steps(steps, dates)
        if future.any():
            i = int(np.flatnonzero(future)[0])
            raise FieldError(f"observations[{i}].{panel.time}", f"{frame[panel.time].iloc[i]} is in the future (UTC): record outcomes once they happened")
        obs = observations_from_frame(frame, panel, steps)
        first: dict[tuple[str, int], int] = {}
        for j, key in enumerate(zip(frame_units(frame, panel.keys), steps.tolist())):
            i = first.setdefault(key, j)
            if i != j and _differs(obs, i, j):
                raise FieldError(f"observations[{j}]", f"same unit and {panel.time} as observations[{i}], with other values")
        counts = store.upsert(last_of_duplicates(obs))
        payload = {"observed": len(items), **counts, "ignored": ignored_columns(items)}
        return Response(dumps(payload), media_type="application/json")

    return app


def app_from_env() -> FastAPI:
    """The app of one worker process of ``msmt serve --workers N`` (uvicorn's factory), from the
    options the command put in ``MSMT_SERVE_OPTIONS``: each worker loads the run and opens the
    store itself (SQLite serialises the workers' writes; WAL lets them read meanwhile)."""
    opts = json.loads(os.environ[SERVE_OPTIONS])
    torch.set_num_threads(opts["threads"])
    if opts.get("access_log"):
        enable_access_log()
    return create_app(
        load_run(opts["run_dir"]), opts["backend"], opts["onnx"], opts["max_rows"], opts["max_body_bytes"],
        opts["block_cache"], opts["threads"], opts["history"],
    )


def _differs(obs, i: int, j: int) -> bool:
    a, b = obs.metrics[i], obs.metrics[j]
    same_metrics = bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))
    return not same_metrics or obs.events[i] != obs.events[j]
