"""The FastAPI application: ``POST /v1/predict``, ``GET /v1/schema``, ``GET /healthz``, ``/docs``.

Bad requests get a 4xx answer whose ``detail`` names the field (``rows[3].user_id: missing
field``): 400 malformed JSON, 413 body over ``max_body_bytes``, 422 anything that fails the
schema-generated validation (missing / misspelt / wrongly typed field, unknown scenario, too
many rows). Any other exception is a bug: it is logged and answered with a 500 without
stopping the server.

This module deliberately has no ``from __future__ import annotations``: FastAPI reads the
endpoint's annotation at runtime and the request model is a class created per run.
"""

import json
import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from msmt.rundir.layout import LoadedRun
from msmt.serving.encode import RowEncoder
from msmt.serving.request import build_request_models
from msmt.serving.scorer import Scorer
from msmt.spec.errors import MsmtError
from msmt.spec.task_kinds import rules

log = logging.getLogger("msmt.serve")
MAX_ERRORS = 20
_EXPECTED = {
    "scenario": "must be a string, an integer or null",
    "sparse": "must be a string, an integer or null",
    "group": "must be a string, an integer or null",
    "dense": "must be a finite number or null",
    "multi": "must be a string, a list of strings or null",
}


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


def _field_path(loc: tuple) -> tuple[str, str | None]:
    """``('body', 'rows', 3, 'user_id', 'str')`` -> ``('rows[3].user_id', 'user_id')``."""
    parts = [p for p in loc if p != "body"]
    if len(parts) >= 2 and parts[0] == "rows" and isinstance(parts[1], int):
        if len(parts) >= 3 and isinstance(parts[2], str):
            return f"rows[{parts[1]}].{parts[2]}", parts[2]
        return f"rows[{parts[1]}]", None
    if parts and isinstance(parts[0], str):
        return parts[0], None  # a top-level key: "rows", or an unknown one
    return "body", None


def describe_errors(errors: list[dict], kinds: dict[str, str], max_rows: int) -> tuple[int, dict]:
    """pydantic / FastAPI errors -> (status, {"detail": one line, "errors": [{field, problem}]})."""
    out: dict[str, str] = {}
    status = 422
    for e in errors:
        kind = e.get("type", "")
        field, column = _field_path(tuple(e.get("loc", ())))
        if kind == "json_invalid":
            status = 400
            ctx = e.get("ctx") or {}
            problem = f"malformed JSON ({ctx.get('error', 'cannot parse')})"
        elif kind == "missing":
            problem = "missing request body" if field == "body" else "missing field"
        elif kind == "extra_forbidden" and column:
            problem = "unknown field (not a column this model reads; see GET /v1/schema)"
        elif kind == "extra_forbidden":
            problem = 'unknown field (the body is {"rows": [...]})'
        elif field == "rows" and kind == "too_long":
            problem = f"at most {max_rows} rows per request"
        elif field == "rows" and kind == "too_short":
            problem = "at least one row is needed"
        elif kind == "value_error":
            problem = str(e.get("msg", "")).removeprefix("Value error, ")
        elif column in kinds:
            problem = f"{_EXPECTED[kinds[column]]}, got {_short(e.get('input'))}"
        elif field == "body":
            problem = 'expected a JSON object {"rows": [...]} or a JSON list of rows'
        elif field == "rows":
            problem = "expected a list of rows"
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


def describe_schema(scorer: Scorer, cols, max_rows: int, max_body_bytes: int) -> dict:
    schema = scorer.schema
    spec = schema.spec
    return {
        "model": scorer.run.config.model.name,
        "backend": scorer.backend,
        "features": [{"column": c.column, "kind": c.kind, "required": c.kind != "group"} for c in cols],
        "scenario": {
            "column": spec.scenario.column,
            "known": list(schema.scenarios),
            "attributes": spec.scenario.attributes.columns,
            "unseen_allowed": bool(spec.scenario.attributes.columns),
        },
        "tasks": [{"name": t.name, "kind": t.kind.value, "output": rules(t).user_units} for t in spec.tasks],
        "group": spec.group,
        "limits": {"max_rows": max_rows, "max_body_bytes": max_body_bytes},
    }


def create_app(
    run: LoadedRun,
    backend: str = "torch",
    onnx_path: str | Path | None = None,
    max_rows: int = 1000,
    max_body_bytes: int = 2 * 1024 * 1024,
    block_cache_size: int = 128,
    threads: int = 1,
) -> FastAPI:
    """The scoring app for one run (see the module docstring for the endpoints)."""
    scorer = Scorer(run, backend, onnx_path, block_cache_size, threads)
    Row, PredictRequest, cols = build_request_models(run.schema, max_rows)
    kinds = {c.column: c.kind for c in cols}
    encoder = RowEncoder(run.schema, cols, Row)
    group_field = next((c.field for c in cols if c.column == run.schema.spec.group), None)
    task_names = list(scorer.kinds)
    schema_doc = describe_schema(scorer, cols, max_rows, max_body_bytes)

    app = FastAPI(
        title=f"msmt scoring: {run.schema.spec.name} ({run.config.model.name})",
        description="Multi-scenario, multi-task predictions: probability for binary tasks, expected count for counts.",
        version="1",
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.state.scorer = scorer
    app.state.encoder = encoder
    app.state.row_model = Row

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, payload = describe_errors(list(exc.errors()), kinds, max_rows)
        return JSONResponse(payload, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        field = "body" if exc.status_code in (400, 413) else "request"
        if ": " in detail and detail.split(": ", 1)[0] == "body":
            detail = detail.split(": ", 1)[1]
        return JSONResponse(_error(field, detail) if exc.status_code < 500 else {"detail": detail}, status_code=exc.status_code)

    @app.exception_handler(MsmtError)
    async def _msmt(request: Request, exc: MsmtError):
        column = getattr(exc, "column", None)
        problem = getattr(exc, "problem", str(exc))
        return JSONResponse(_error(f"rows[*].{column}" if column else "rows", problem), status_code=422)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("internal error while answering %s", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "model": run.config.model.name, "backend": scorer.backend, "blocks": scorer.blocks.stats()}

    @app.get("/v1/schema")
    def get_schema() -> dict:
        return schema_doc

    @app.post("/v1/predict")
    def predict(body: PredictRequest) -> Response:  # type: ignore[valid-type]
        """Score rows: ``{"rows": [{column: raw value}, ...]}`` -> ``{"predictions": [{task: value}]}``."""
        groups = [getattr(r, group_field) for r in body.rows] if group_field else None
        preds, personal = scorer.score(encoder(body.rows), groups)
        columns = [preds[t].tolist() for t in task_names]
        rows = [dict(zip(task_names, values)) for values in zip(*columns)]
        payload = {"predictions": rows, "personal": personal.tolist()}
        return Response(json.dumps(payload), media_type="application/json")

    return app
