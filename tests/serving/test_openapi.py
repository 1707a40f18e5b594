"""What the service says about itself is true: /docs offline, response models for every endpoint,
the documented error shape is the one sent, one access-log line per request (issue 20, item 8)."""

from __future__ import annotations

import json
import logging
import warnings

import pandas as pd
import pytest

from msmt.rundir.layout import load_run
from msmt.serving.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
    from fastapi.testclient import TestClient


def _row(record: dict) -> dict:
    return {k: (None if isinstance(v, float) and v != v else v.item() if hasattr(v, "item") else v) for k, v in record.items()}


@pytest.fixture(scope="module")
def plain(trained_run):
    """(client, a valid row) of a run without a panel; server errors answered, not raised."""
    run = load_run(trained_run("mmoe"))
    row = _row(pd.read_csv(trained_run.data_dir / "test.csv", dtype={"user_id": str, "item_id": str}).iloc[0].to_dict())
    return TestClient(create_app(run, max_rows=5, max_body_bytes=8 * 1024), raise_server_exceptions=False), row


@pytest.fixture(scope="module")
def panel(trained_panel_run, tmp_path_factory):
    """(client with a history store, a valid row, a valid observation) of a panel run."""
    run = load_run(trained_panel_run("mmoe"))
    data = trained_panel_run.data_dir
    row = _row(pd.read_csv(data / "test.csv").iloc[0].to_dict())
    obs = {k: row[k] for k in ("advertiser_id", "scenario", "impressions", "clicks", "cost", "event")}
    obs["day"] = row["day"] - 1
    store = tmp_path_factory.mktemp("openapi") / "h.db"
    return TestClient(create_app(run, history=store), raise_server_exceptions=False), row, obs


# ---------------------------------------------------------------------------- a JSON-schema check


def conforms(value, schema: dict, components: dict, where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (the subset of JSON Schema that FastAPI's OpenAPI uses)."""
    if "$ref" in schema:
        return conforms(value, components[schema["$ref"].rsplit("/", 1)[-1]], components, where)
    if "anyOf" in schema:
        if any(not conforms(value, s, components, where) for s in schema["anyOf"]):
            return []
        return [f"{where}: {value!r} matches none of {schema['anyOf']}"]
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None)}
    if kind and (not isinstance(value, types[kind]) or (kind in ("integer", "number") and isinstance(value, bool))):
        return [f"{where}: {value!r} is not {kind}"]
    if "const" in schema and value != schema["const"]:
        return [f"{where}: {value!r} is not {schema['const']!r}"]
    problems: list[str] = []
    if kind == "object":
        problems += [f"{where}: missing '{k}'" for k in schema.get("required", []) if k not in value]
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                problems += conforms(v, props[k], components, f"{where}.{k}")
            elif extra is False:
                problems.append(f"{where}: '{k}' is not a documented field")
            elif isinstance(extra, dict):
                problems += conforms(v, extra, components, f"{where}.{k}")
    if kind == "array":
        for i, item in enumerate(value):
            problems += conforms(item, schema.get("items", {}), components, f"{where}[{i}]")
    return problems


def documented(openapi: dict, path: str, method: str, status: int) -> dict:
    responses = openapi["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path}: status {status} not documented ({sorted(responses)})"
    return responses[str(status)]["content"]["application/json"]["schema"]


def check_answer(client, openapi: dict, method: str, path: str, status: int, **kwargs) -> dict:
    resp = client.request(method, path, **kwargs)
    assert resp.status_code == status, resp.text
    body = resp.json()
    problems = conforms(body, documented(openapi, path, method.lower(), status), openapi["components"]["schemas"])
    assert not problems, (method, path, status, problems, body)
    return body


# ---------------------------------------------------------------------------- the tests


def test_docs_work_offline(plain):
    """/docs is a page of its own (no script, no stylesheet or font from another host) that lists
    every endpoint and every schema of /openapi.json."""
    client, _ = plain
    openapi = client.get("/openapi.json").json()
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    for banned in ("http://", "https://", "//cdn", "<script", "<link"):
        assert banned not in text, banned
    for path, methods in openapi["paths"].items():
        for method in methods:
            assert f"{method.upper()}</span> <code>{path}</code>" in text
    for name in openapi["components"]["schemas"]:
        assert f"id='schema-{name}'" in text
    assert client.get("/redoc").status_code == 404  # the CDN pages are off


def test_every_endpoint_declares_its_answer_and_one_error_shape(plain, panel):
    """Each endpoint has a 200 schema of its own and the ErrorResponse for every error status;
    FastAPI's default 422 shape (HTTPValidationError), which is never sent, is not documented."""
    for client in (plain[0], panel[0]):
        openapi = client.get("/openapi.json").json()
        assert "HTTPValidationError" not in openapi["components"]["schemas"]
        for path, methods in openapi["paths"].items():
            for method, op in methods.items():
                for status, resp in op["responses"].items():
                    schema = resp["content"]["application/json"]["schema"]
                    if status == "200":
                        assert "$ref" in schema, (path, schema)  # a model, not "any JSON"
                    else:
                        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
    predict = openapi["paths"]["/v1/predict"]["post"]["responses"]
    assert {"200", "400", "413", "422", "500"} <= set(predict)
    prediction = openapi["components"]["schemas"]["Prediction"]
    assert set(prediction["properties"]) == {"impressions", "clicks", "cost", "active"} == set(prediction["required"])


def test_real_answers_are_what_the_openapi_documents(plain, panel, monkeypatch):
    """Real bodies of every endpoint and every error status validate against the schema the
    OpenAPI declares for that path and status."""
    client, row = plain
    openapi = client.get("/openapi.json").json()
    check_answer(client, openapi, "GET", "/healthz", 200)
    check_answer(client, openapi, "GET", "/v1/schema", 200)
    check_answer(client, openapi, "POST", "/v1/predict", 200, json={"rows": [row, row]})
    json_headers = {"content-type": "application/json"}
    for content in (b'{"rows": [', b"\xff\xfe"):
        check_answer(client, openapi, "POST", "/v1/predict", 400, content=content, headers=json_headers)
    check_answer(client, openapi, "POST", "/v1/predict", 413, content=b" " * 9000, headers=json_headers)
    bad = [
        {"rows": [{**row, "price": -1.0}]}, {"rows": [row] * 6}, {"rows": [{k: v for k, v in row.items() if k != "item_id"}]},
        {"rows": [{**row, "scenario": None}]}, {"rows": [{**row, "user_age": "old"}]}, {"data": []}, 3,
    ]
    for body in bad:
        answer = check_answer(client, openapi, "POST", "/v1/predict", 422, json=body)
        assert answer["detail"].startswith(answer["errors"][0]["field"] + ": ")
    check_answer(client, openapi, "POST", "/v1/predict", 422, content=b'{"rows": [{"a": 1, "a": 2}]}', headers=json_headers)
    check_answer(client, openapi, "POST", "/v1/observe", 404, json={"observations": []})

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app.state.scorer, "score", broken)
    answer = check_answer(client, openapi, "POST", "/v1/predict", 500, json={"rows": [row]})
    assert "RuntimeError" in answer["detail"]

    pclient, prow, obs = panel
    popenapi = pclient.get("/openapi.json").json()
    check_answer(pclient, popenapi, "POST", "/v1/observe", 200, json={"observations": [obs]})
    body = check_answer(pclient, popenapi, "POST", "/v1/predict", 200, json={"rows": [prow]})
    assert set(body) == {"predictions", "personal", "ignored", "history", "notes"}
    check_answer(pclient, popenapi, "POST", "/v1/observe", 422, json={"observations": [{**obs, "clicks": -1}]})
    check_answer(pclient, popenapi, "GET", "/v1/schema", 200)


def test_access_log_has_one_line_per_request(plain, caplog):
    """Method, path, status, latency in ms and request size, one record per request (also for a
    413 refused before the app reads the body, and a 422)."""
    client, row = plain
    content = json.dumps({"rows": [row]}).encode()
    caplog.set_level(logging.INFO, logger="msmt.serving.access")
    caplog.clear()
    assert client.post("/v1/predict", content=content, headers={"content-type": "application/json"}).status_code == 200
    assert client.post("/v1/predict", json={"rows": [{**row, "price": -1.0}]}).status_code == 422
    assert client.post("/v1/predict", content=b" " * 9000, headers={"content-type": "application/json"}).status_code == 413
    assert client.get("/healthz").status_code == 200
    records = [r for r in caplog.records if r.name == "msmt.serving.access"]
    assert [(r.method, r.path, r.status) for r in records] == [
        ("POST", "/v1/predict", 200), ("POST", "/v1/predict", 422), ("POST", "/v1/predict", 413), ("GET", "/healthz", 200),
    ]
    first = records[0]
    assert first.request_bytes == len(content) and first.latency_ms > 0 and first.response_bytes > 0
    line = first.getMessage()
    assert line.startswith("POST /v1/predict 200 ") and f"in={len(content)} B" in line and " ms " in line
    assert "\n" not in line
