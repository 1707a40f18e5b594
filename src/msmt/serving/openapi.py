"""What the service documents about itself: response models, the one error shape, ``/docs``.

Every endpoint declares its answer (``response_model``) and its errors (``ERRORS``): the body of
every 4xx and 5xx is :class:`ErrorResponse`, the shape ``app.py`` writes (``_error``), so the
OpenAPI states the real body (``tests/serving/test_serve.py`` validates real answers against
the published schema). FastAPI's default 422 (``HTTPValidationError``: ``{"detail": [{"loc",
"msg", "type"}]}``) is never sent, so it is not documented either.

``/docs`` is a page built here from the OpenAPI document, with no external URL: FastAPI's
Swagger UI loads its JavaScript and CSS from a CDN, so it is blank offline, and no installed
package on the machines this was built on ships the Swagger UI or ReDoc assets to serve locally.
The page lists every endpoint (method, path, description, request body, answers by status) and
every schema (fields, types, required, descriptions); ``/openapi.json`` stays the machine-readable
source for client generators.
"""

from __future__ import annotations

import html
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model


class ErrorItem(BaseModel):
    field: str = Field(description="where: `rows[3].user_id`, `context[0].day`, `observations[1].clicks`, `body` or `request`")
    problem: str = Field(description="what is wrong, in one line")


class ErrorResponse(BaseModel):
    """The body of every error answer (400, 404, 413, 422, 500)."""

    model_config = ConfigDict(extra="forbid", title="ErrorResponse")
    detail: str = Field(description="one line: `field: problem` for each error, joined by `; ` (at most 20, then `(+N more)`)")
    errors: list[ErrorItem] = Field(description="the same errors, one object each")


_WHEN = {
    400: "malformed JSON (or a body that cannot be read)",
    404: "no such endpoint, or `/v1/observe` on a service without a history store or a model without a panel",
    413: "body over the service's `--max-body-bytes` (declared or streamed)",
    422: "a request that fails validation (field missing or wrongly typed, a number or scenario the data rules refuse, "
    "a duplicate key, a non-finite number, a non-finite prediction...); `errors[i].field` names the item and column",
    500: "a bug: logged by the service, which keeps answering",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of an endpoint: each status with its meaning and :class:`ErrorResponse`."""
    return {s: {"model": ErrorResponse, "description": _WHEN[s]} for s in statuses}


class Health(BaseModel):
    status: Literal["ok"]
    model: str = Field(description="model.name of the run")
    backend: str = Field(description="torch or onnx")
    blocks: dict[str, Any] = Field(description="personal-block cache statistics")
    pid: int = Field(description="the answering worker's process id")
    history: str | None = Field(default=None, description="the history store (when the service has one)")


class FeatureDoc(BaseModel):
    column: str
    kind: str
    required: bool


class ScenarioDoc(BaseModel):
    column: str
    known: list[str] = Field(description="scenarios seen in training")
    attributes: list[str] = Field(description="scenario attribute columns")
    unseen_allowed: bool = Field(description="true when an unseen scenario is scored from its attributes")


class PointFactors(BaseModel):
    overall: float = Field(description="the task's factor: scenarios without their own, and new ones")
    scenarios: dict[str, float] = Field(description="scenario -> its own factor")
    poisson_median: bool = Field(
        default=False, description="train.point_forecast: median: the point is the median of Poisson(prediction × factor), an integer"
    )


class TaskDoc(BaseModel):
    name: str
    kind: str = Field(description="binary, count or regression")
    output: str = Field(description="the unit of the prediction: probability, expected count, value")
    point_factors: PointFactors | None = Field(
        default=None, description="runs with train.point_forecast: scaled or median: the answer's point = prediction × the row's scenario factor (median: its Poisson median)"
    )


class Limits(BaseModel):
    max_rows: int
    max_body_bytes: int


class PanelDoc(BaseModel):
    keys: list[str]
    time: str
    window: int
    metrics: list[str]
    event: str | None
    history_store: bool


class BehaviourDoc(BaseModel):
    key: str
    time: str
    labels: list[str] = Field(description="label columns of a context row: the key's earlier outcomes")
    length: int = Field(description="the latest earlier rows per key the model reads")
    context: str


class SchemaDoc(BaseModel):
    """``GET /v1/schema``: what a row holds and what the service answers."""

    model: str
    backend: str
    features: list[FeatureDoc]
    scenario: ScenarioDoc
    tasks: list[TaskDoc]
    group: str | None
    limits: Limits
    panel: PanelDoc | None = Field(default=None, description="panel datasets only")
    behaviour: BehaviourDoc | None = Field(default=None, description="datasets with a behaviour section only")


class HistoryInfo(BaseModel):
    window: int = Field(description="steps of history the model reads (W)")
    observed: list[int] = Field(description="per row: steps of its window with an observation")


class ObserveResponse(BaseModel):
    observed: int = Field(description="observations in the request")
    inserted: int
    updated: int
    unchanged: int = Field(description="distinct (unit, step) whose stored values were already these")
    ignored: list[str] = Field(description="keys of the observations that are no history column")


def predict_response(tasks: dict[str, str], panel: bool, point_tasks: list[str] = ()) -> type[BaseModel]:
    """The model of ``POST /v1/predict``'s answer for these tasks (name -> unit of the output);
    ``point_tasks``: the count tasks with a point forecast for absolute errors (msmt.scoring.point)."""
    fields = {
        f"t{i}": (float, Field(alias=name, description=f"{name}: {unit}")) for i, (name, unit) in enumerate(tasks.items())
    }
    prediction = create_model("Prediction", __config__=ConfigDict(title="Prediction"), **fields)
    body: dict[str, Any] = {
        "predictions": (list[prediction], Field(description="one per row, in order")),
        "personal": (list[bool], Field(description="per row: scored with its group's personal block")),
        "ignored": (list[str], Field(description="keys of the rows that are no column the model reads")),
    }
    if point_tasks:
        fields = {
            f"t{i}": (float, Field(alias=name, description=f"{name}: the expected count times the run's factor for its scenario"))
            for i, name in enumerate(point_tasks)
        }
        point = create_model("PointForecast", __config__=ConfigDict(title="PointForecast"), **fields)
        body["point"] = (list[point], Field(description="one per row: the point forecast for absolute errors (train.point_forecast)"))
    if panel:
        body["history"] = (HistoryInfo, Field(description="how much of each row's window was observed"))
        body["notes"] = (list[str], Field(description="the fallbacks taken (rows without history)"))
    return create_model("PredictResponse", __config__=ConfigDict(title="PredictResponse"), **body)


# ---------------------------------------------------------------------------- /docs


def _type(schema: dict) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{html.escape(name)}">{html.escape(name)}</a>'
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type(schema['additionalProperties'])}"
    if "const" in schema:
        return html.escape(json.dumps(schema["const"]))
    if "enum" in schema:
        return " | ".join(html.escape(json.dumps(v)) for v in schema["enum"])
    return html.escape(str(kind))


def _text(value: str | None) -> str:
    return html.escape(value or "").replace("\n\n", "<br><br>")


def docs_html(openapi: dict) -> str:
    """A self-contained page (no script, no external URL) describing ``openapi``."""
    info = openapi.get("info", {})
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(info.get('title', 'API'))}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.4}"
        "code,pre{background:#f4f4f4;padding:0 .2em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}"
        ".m{font-weight:bold;font-family:monospace}section{border-top:1px solid #ddd;margin-top:1.5em}</style>",
        "</head><body>",
        f"<h1>{html.escape(info.get('title', 'API'))}</h1>",
        f"<p>{_text(info.get('description'))}</p>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a> (OpenAPI "
        f"{html.escape(str(openapi.get('openapi', '')))}). Every error answer has the shape "
        "<a href='#schema-ErrorResponse'>ErrorResponse</a>.</p>",
        "<h2>Endpoints</h2>",
    ]
    for path, methods in openapi.get("paths", {}).items():
        for method, op in methods.items():
            out.append(f"<section><h3><span class='m'>{method.upper()}</span> <code>{html.escape(path)}</code></h3>")
            out.append(f"<p>{_text(op.get('summary'))}</p><p>{_text(op.get('description'))}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                out.append(f"<p>Request body (JSON): {_type(body)}</p>")
            out.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
            for status, resp in op.get("responses", {}).items():
                schema = resp.get("content", {}).get("application/json", {}).get("schema")
                out.append(
                    f"<tr><td>{html.escape(status)}</td><td>{_text(resp.get('description'))}</td>"
                    f"<td>{_type(schema) if schema else ''}</td></tr>"
                )
            out.append("</table></section>")
    out.append("<h2>Schemas</h2>")
    for name, schema in openapi.get("components", {}).get("schemas", {}).items():
        out.append(f"<section id='schema-{html.escape(name)}'><h3>{html.escape(name)}</h3>")
        out.append(f"<p>{_text(schema.get('description'))}</p>")
        props = schema.get("properties", {})
        if props:
            required = set(schema.get("required", []))
            out.append("<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>")
            for field, prop in props.items():
                out.append(
                    f"<tr><td><code>{html.escape(field)}</code></td><td>{_type(prop)}</td>"
                    f"<td>{'yes' if field in required else 'no'}</td><td>{_text(prop.get('description'))}</td></tr>"
                )
            out.append("</table>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)
