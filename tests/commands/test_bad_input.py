"""Issue 19: bad input never gets a traceback or a silent wrong answer.

Every case of ``bad_input_corpus.CORPUS`` runs through ``msmt.cli.main`` in this process (a few
usage errors in a fresh process, where typer and click are what a shell gets) and must answer by
the contract: exit 2, one line on stderr naming the problem, no traceback, nothing at the output
paths, inputs unchanged, no ``.tmp`` file. The other tests here prove the guards that make a
wrong answer impossible (the scenario rule and its documented fallback, stale blocks, ``--overwrite``,
an interrupted adapt) and tally the corpus.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from bad_input_corpus import BAD_FILES, BAD_SPACES, BROKEN_RUNS, CORPUS, REQUESTS, Case

from helpers import run_cli, run_main
from msmt.rundir.blocks import read_block_set
from msmt.rundir.layout import load_run
from msmt.serving.app import create_app

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_runs"
FAST = ["train.epochs=1", "train.batch_size=64", "train.progress=false", "train.num_threads=1"]


# --------------------------------------------------------------------------- the workspace


def _edit_table(source: Path, target: Path, edits: list) -> None:
    text = None
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    for edit in edits:
        op = edit[0]
        if op == "set":
            _, row, column, value = edit
            frame.loc[row - 1, column] = value
        elif op == "drop":
            frame = frame.drop(columns=[edit[1]])
        elif op == "head":
            frame = frame.head(edit[1])
        elif op == "dupcol":
            lines = frame.to_csv(index=False).splitlines()
            cols = lines[0].split(",")
            j = cols.index(edit[1])
            lines = [",".join([*line.split(",")[: j + 1], line.split(",")[j], *line.split(",")[j + 1 :]]) for line in lines]
            text = "\n".join(lines) + "\n"
        elif op == "text":
            text = edit[1]
    target.write_text(text if text is not None else frame.to_csv(index=False))


def _set_key(data: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for part in path:
        data = data[part]
    data[last] = value


def _break_run(source: Path, target: Path, edits: list) -> None:
    shutil.copytree(source, target)
    for edit in edits:
        op, rel = edit[0], edit[1]
        if rel.startswith("blocks/@first"):
            rel = "blocks/" + sorted(read_block_set(target).files.values())[0]
        path = target / rel
        if op == "truncate":
            path.write_bytes(path.read_bytes()[: edit[2]])
        elif op == "flip":
            raw = bytearray(path.read_bytes())
            start = 8 + int.from_bytes(raw[:8], "little")  # past the safetensors header
            generator = torch.Generator().manual_seed(0)
            raw[start:] = bytes(torch.randint(0, 256, (len(raw) - start,), generator=generator, dtype=torch.uint8).tolist())
            path.write_bytes(bytes(raw))
        elif op == "write":
            path.write_text(edit[2])
        elif op == "delete":
            path.unlink()
        elif op == "yaml":
            is_json = path.suffix == ".json"
            data = json.loads(path.read_text()) if is_json else yaml.safe_load(path.read_text())
            _set_key(data, edit[2], edit[3])
            path.write_text(json.dumps(data) if is_json else yaml.safe_dump(data))
        elif op == "blockindex":
            index = target / "blocks" / "index.json"
            data = json.loads(index.read_text())
            _set_key(data, rel, edit[2])
            index.write_text(json.dumps(data))


def _experiment(folder: Path, name: str, dataset: dict, overrides: dict | None = None) -> Path:
    cfg = {
        "dataset": dataset,
        "model": {"name": "mmoe", "embedding_dim": 4, "hidden_dims": [16], "tower_dims": [8]},
        "train": {"epochs": 1, "batch_size": 64, "progress": False, "num_threads": 1},
    }
    for key, value in (overrides or {}).items():
        _set_key(cfg, key, value)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, trained_run, trained_panel_run) -> dict[str, str]:
    """Every placeholder of the corpus, laid out once per module (copies: no case touches a
    run that other tests share)."""
    root = tmp_path_factory.mktemp("bad_input")
    ws = {"root": root}
    data = root / "data"
    shutil.copytree(trained_run.data_dir, data)
    dataset = yaml.safe_load((data / "dataset.yaml").read_text())
    dataset["files"] = {k: str(data / v) for k, v in dataset["files"].items()}
    dataset["group"] = "user_id"
    (data / "dataset.yaml").write_text(yaml.safe_dump(dataset))
    exp = _experiment(root, "exp.yaml", str(data / "dataset.yaml"))
    run = root / "run"
    shutil.copytree(trained_run("mmoe"), run)
    prun, pdata = root / "prun", root / "pdata"
    shutil.copytree(trained_panel_run("mmoe"), prun)
    shutil.copytree(trained_panel_run.data_dir, pdata)
    legacy = root / "legacy"
    shutil.copytree(LEGACY / "run_simple", legacy)
    shutil.copyfile(LEGACY / "simple_score.csv", root / "legacy_score.csv")
    ws.update(data=data, exp=exp, run=run, prun=prun, pdata=pdata, legacy=legacy, legacy_data=root / "legacy_score.csv")

    adapted = root / "adapted"
    assert run_main("adapt", run, "--data", data / "validation.csv", "--out", adapted) == 0
    ws["adapted"] = adapted

    bad = root / "bad"
    bad.mkdir()
    ws["bad"] = bad
    for name, (source, edits) in BAD_FILES.items():
        _edit_table(Path(source.format(**ws)), bad / f"{name}.csv", edits)
    for name, text in BAD_SPACES.items():
        (bad / f"{name}.yaml").write_text(text)
    (bad / "not_yaml.yaml").write_text("dataset: [unclosed\n")
    (bad / "a_list.yaml").write_text("- 1\n- 2\n")
    (bad / "no_dataset.yaml").write_text("model: {name: mmoe}\n")
    tasks = dataset["tasks"]
    _experiment(bad, "task_weight_inf.yaml", {**dataset, "tasks": [{**tasks[0], "weight": float("inf")}, *tasks[1:]]})
    _experiment(bad, "task_kind.yaml", {**dataset, "tasks": [{**tasks[0], "kind": "probability"}, *tasks[1:]]})
    _experiment(bad, "train_missing.yaml", {**dataset, "files": {**dataset["files"], "train": str(root / "nowhere.csv")}})
    for name in ("train_dense_huge", "train_log1p_negative", "train_label_5", "train_dup_column"):
        _experiment(bad, f"exp_{name}.yaml", {**dataset, "files": {**dataset["files"], "train": str(bad / f"{name}.csv")}})

    broken = root / "broken"
    broken.mkdir()
    ws["broken"] = broken
    for name, (source, edits) in BROKEN_RUNS.items():
        _break_run(Path(source.format(**ws)), broken / name, edits)
    return {k: str(v) for k, v in ws.items()}


# --------------------------------------------------------------------------- the contract


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _debris(*folders: Path) -> list[str]:
    return [str(p) for folder in folders if folder.exists() for p in folder.rglob("*.tmp")]


def _fill(text: str, ws: dict, tmp: Path) -> str:
    return text.format(**ws, tmp=tmp)


def _run_case(case: Case, ws: dict, tmp: Path, capsys) -> tuple[int, str]:
    argv = shlex.split(_fill(case.argv, ws, tmp))
    if case.fresh_process:
        res = run_cli(*argv)
        return res.returncode, res.stderr + res.stdout
    threads = torch.get_num_threads()  # `serve` sets its own before it loads the run
    try:
        code = run_main(*argv)
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr()
    return code, out.err + "\0" + out.out


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_bad_input_answers_by_the_contract(case, workspace, tmp_path, capsys):
    before = {p: _digest(Path(_fill(p, workspace, tmp_path))) for p in case.unchanged}
    code, output = _run_case(case, workspace, tmp_path, capsys)
    err = output.split("\0")[0] if not case.fresh_process else output
    assert "Traceback" not in output, output
    assert code == case.code, output
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("msmt: error: "), err
    for word in case.expect:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    for path in case.absent:
        assert not Path(_fill(path, workspace, tmp_path)).exists(), path
    for path, digest in before.items():
        assert _digest(Path(_fill(path, workspace, tmp_path))) == digest, f"{path} changed"
    if "only" in case.extra:
        folder, names = case.extra["only"]
        assert {p.name for p in Path(_fill(folder, workspace, tmp_path)).iterdir()} == names
    assert _debris(tmp_path, Path(workspace["root"])) == []


# --------------------------------------------------------------------------- the service


def _json_row(record: dict) -> dict:
    """A CSV record as a client sends it: numbers as numbers, text as text, empty cells as null."""
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and value != value:
            out[key] = None
        elif hasattr(value, "item"):
            out[key] = value.item()
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def services(workspace, tmp_path_factory):
    """A TestClient per run of :data:`REQUESTS` and the valid parts each case breaks."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's TestClient warns about its httpx transport
        from fastapi.testclient import TestClient

    data = pd.read_csv(Path(workspace["data"]) / "test.csv")
    rows = [_json_row(r) for r in data.head(2).to_dict("records")]
    for row in rows:
        row["user_id"], row["item_id"] = str(row["user_id"]), str(row["item_id"])
    panel = pd.read_csv(Path(workspace["pdata"]) / "test.csv")
    prow = _json_row(panel.iloc[0].to_dict())
    earlier = pd.read_csv(Path(workspace["pdata"]) / "validation.csv")
    unit = earlier[(earlier["advertiser_id"] == prow["advertiser_id"]) & (earlier["scenario"] == prow["scenario"])]
    ctx = _json_row(unit.iloc[-1][["advertiser_id", "scenario", "day", "impressions", "clicks", "cost", "event"]].to_dict())
    store = tmp_path_factory.mktemp("bad_requests") / "history.db"
    return {
        "run": TestClient(create_app(load_run(Path(workspace["run"])))),
        "prun": TestClient(create_app(load_run(Path(workspace["prun"])), history=store)),
        "ok": {"run": {"row": rows[0], "row2": rows[1]}, "prun": {"row": prow, "row2": prow, "ctx": ctx}},
    }


def _strict_json(text: str):
    def refuse(token):
        raise AssertionError(f"{token} in an answer: not JSON")

    return json.loads(text, parse_constant=refuse)


def test_the_valid_parts_of_the_bad_requests_are_valid(services):
    """Each bad request breaks one thing of a request the service answers with 200."""
    for run, ok in services["ok"].items():
        client = services[run]
        resp = client.post("/v1/predict", json={"rows": [ok["row"], ok["row2"]], **({"context": [ok["ctx"]]} if "ctx" in ok else {})})
        assert resp.status_code == 200, resp.text
        if "ctx" in ok:
            assert client.post("/v1/observe", json={"observations": [ok["ctx"]]}).status_code == 200


@pytest.mark.parametrize("case", REQUESTS, ids=[c.id for c in REQUESTS])
def test_bad_request_answers_by_the_contract(case, services):
    """The documented error: status, valid JSON ``{"detail", "errors"}`` whose first error names
    the exact item and column, a one-line ``detail`` holding the problem's words."""
    payload = case.body(services["ok"][case.run])
    content = payload if isinstance(payload, str) else json.dumps(payload, allow_nan=False)
    resp = services[case.run].post(case.path, content=content, headers={"content-type": "application/json"})
    assert resp.status_code == case.status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    answer = _strict_json(resp.text)
    assert set(answer) == {"detail", "errors"}, answer
    assert answer["errors"][0]["field"] == case.field, answer
    assert "\n" not in answer["detail"] and answer["detail"].startswith(f"{case.field}: "), answer
    for word in case.expect:
        assert word in answer["errors"][0]["problem"], f"{word!r} not in {answer['detail']!r}"


def test_the_corpus_covers_every_command_and_kind():
    """The tally of issue 19: at least 100 cases, every command and every kind of problem."""
    assert len(CORPUS) >= 100
    assert len({c.id for c in CORPUS}) == len(CORPUS)
    commands = Counter(c.argv.split()[0] for c in CORPUS)
    assert set(commands) >= {"train", "evaluate", "predict", "adapt", "export", "synth", "bench", "serve", "history", "init", "tune"}
    kinds = Counter(c.kind for c in CORPUS)
    assert set(kinds) == {"usage", "config", "data", "numbers", "output", "rundir", "scenario", "stale", "history"}
    assert sum(c.fresh_process for c in CORPUS) >= 4
    assert len({r.id for r in REQUESTS}) == len(REQUESTS) >= 30
    assert {r.kind for r in REQUESTS} == {"numbers", "scenario", "json", "history"}
    assert {r.path for r in REQUESTS} == {"/v1/predict", "/v1/observe"}


# --------------------------------------------------------------------------- no silent wrong answers


def test_a_new_scenario_is_scored_from_its_attributes(workspace, tmp_path):
    """The documented fallback of the scenario rule: a dataset with scenario attributes scores a
    scenario never seen in training (the simulator's ``mini_program``) as the unknown scenario,
    from its attributes, in predict and evaluate alike."""
    pdata = Path(workspace["pdata"])
    new = pdata / "new_scenario.csv"
    assert "mini_program" in set(pd.read_csv(new)["scenario"])
    assert run_main("predict", workspace["prun"], "--data", new, "--context", pdata / "validation.csv", "--out", tmp_path / "p.csv") == 0
    preds = pd.read_csv(tmp_path / "p.csv")
    assert len(preds) == len(pd.read_csv(new)) and preds.filter(like="pred_").notna().all().all()
    assert run_main("evaluate", workspace["prun"], "--data", new, "--context", pdata / "validation.csv", "--out", tmp_path / "m.json") == 0
    assert "mini_program" in json.loads((tmp_path / "m.json").read_text())["scenarios"]


def test_retraining_needs_overwrite_and_clears_stale_blocks(workspace, tmp_path, capsys):
    """Retraining into an adapted run: refused without --overwrite; with it the old blocks,
    adapt.json and any stray file are gone, so predict scores every row with the new base."""
    run = tmp_path / "run"
    shutil.copytree(workspace["adapted"], run)
    (run / "checkpoint.pt").write_bytes(b"stale")
    data = Path(workspace["data"])
    assert run_main("train", workspace["exp"], "--out", run, "--set", "train.seed=1") == 2
    assert (run / "blocks" / "index.json").exists()
    assert run_main("train", workspace["exp"], "--out", run, "--overwrite", "--set", "train.seed=1") == 0
    assert not (run / "blocks").exists() and not (run / "adapt.json").exists() and not (run / "checkpoint.pt").exists()
    capsys.readouterr()
    assert run_main("predict", run, "--data", data / "validation.csv", "--out", tmp_path / "p.csv") == 0
    assert "scored with their group's block" not in capsys.readouterr().err


def test_blocks_of_another_base_are_refused(workspace, tmp_path):
    """Blocks copied beside a retrained base (same architecture, other weights) are refused, never paired."""
    run = tmp_path / "run"
    assert run_main("train", workspace["exp"], "--out", run, "--set", "train.seed=2") == 0
    shutil.copytree(Path(workspace["adapted"]) / "blocks", run / "blocks")
    assert run_main("predict", run, "--data", Path(workspace["data"]) / "validation.csv", "--out", tmp_path / "p.csv") == 2
    assert not (tmp_path / "p.csv").exists()


def test_an_interrupted_adapt_leaves_the_published_set_in_force(workspace, tmp_path, capsys):
    """Block files written without their index (a killed adapt) are never used; the next adapt
    publishes a new set (index last) and removes them."""
    run = tmp_path / "run"
    shutil.copytree(workspace["adapted"], run)
    published = read_block_set(run)
    orphan = run / "blocks" / "0123456789abcdef.deadbeef.safetensors"
    shutil.copyfile(run / "blocks" / sorted(published.files.values())[0], orphan)
    data = Path(workspace["data"])
    assert run_main("predict", run, "--data", data / "validation.csv", "--out", tmp_path / "p.csv") == 0
    assert "not in its index" in capsys.readouterr().err
    assert run_main("adapt", run, "--data", data / "test.csv", "--out", run) == 0
    now = read_block_set(run)
    assert not orphan.exists()
    assert set(now.files) >= set(published.files)  # the groups adapted before are carried over
    assert {p.name for p in (run / "blocks").glob("*.safetensors")} == set(now.files.values())
    assert now.base_sha256 == hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()


def test_a_damaged_block_is_refused_not_skipped(workspace, tmp_path):
    """A block file whose bytes changed is an error naming it, never a silent fall-back to the
    base: in predict, and in an adapt that would carry it into the new set; an adapt that
    re-adapts its group replaces it."""
    run = tmp_path / "run"
    shutil.copytree(workspace["adapted"], run)
    blocks = read_block_set(run)
    group, name = sorted(blocks.files.items())[0]
    raw = bytearray((run / "blocks" / name).read_bytes())
    raw[-4:] = b"\xff\xff\xff\x7f"  # a NaN in the last float
    (run / "blocks" / name).write_bytes(bytes(raw))
    validation = pd.read_csv(Path(workspace["data"]) / "validation.csv")
    assert run_main("predict", run, "--data", Path(workspace["data"]) / "validation.csv", "--out", tmp_path / "p.csv") == 2
    assert not (tmp_path / "p.csv").exists()
    other = tmp_path / "other.csv"
    validation[validation["user_id"] != group].head(5).to_csv(other, index=False)
    assert run_main("adapt", run, "--data", other, "--out", run) == 2
    assert read_block_set(run).files == blocks.files  # nothing published
    assert run_main("adapt", run, "--data", Path(workspace["data"]) / "validation.csv", "--out", run) == 0
    assert run_main("predict", run, "--data", Path(workspace["data"]) / "validation.csv", "--out", tmp_path / "p.csv") == 0


def test_a_diverging_run_keeps_no_half_run(workspace, tmp_path):
    """Training that diverges at its first steps leaves nothing; with checkpoints, the last good one
    (and the config that resumes it), never a run directory that looks finished."""
    assert run_main("train", workspace["exp"], "--out", tmp_path / "r", "--set", "train.lr=1e30") == 2
    assert not (tmp_path / "r").exists()


def test_help_and_version_flags_never_trace(workspace):
    """``-h`` / ``--version`` may become real options (the CLI's help is another issue's); until then
    they are usage errors. Either way: no traceback, and a usage error is one line with exit 2."""
    for flag in ("-h", "--version"):
        res = run_cli(flag)
        assert "Traceback" not in res.stderr
        assert res.returncode in (0, 2)
        if res.returncode == 2:
            assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("msmt: error: ")
