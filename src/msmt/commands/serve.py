"""``msmt serve RUN_DIR [--host 127.0.0.1] [--port 8000] [--backend torch|onnx] [--history PATH] [--workers N]``."""

from pathlib import Path

import typer

from msmt.commands import BACKEND_CHOICES, app


@app.command("serve")
def serve(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'msmt train' (or 'msmt adapt')."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    backend: str = typer.Option("torch", "--backend", metavar=BACKEND_CHOICES, help="torch (eager, personal blocks) or onnx (onnxruntime)."),
    onnx_file: Path = typer.Option(
        None, "--onnx", help="An ONNX file from 'msmt export' (onnx backend; default: export at start, parity-checked)."
    ),
    max_rows: int = typer.Option(1000, "--max-rows", min=1, help="Most rows per request."),
    max_body_bytes: int = typer.Option(2 * 1024 * 1024, "--max-body-bytes", min=1024, help="Largest request body."),
    block_cache: int = typer.Option(128, "--block-cache", min=0, help="Personal blocks kept in memory (LRU)."),
    threads: int = typer.Option(1, "--threads", min=1, help="Intra-op threads of torch / onnxruntime."),
    history: Path = typer.Option(
        None, "--history", help="SQLite history store (panel runs; created when absent, filled by 'msmt history load' and POST /v1/observe)."
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Server processes (each holds its own model, block cache and store connections)."
    ),
    access_log: bool = typer.Option(
        True, "--access-log/--no-access-log", help="One line per request on stderr: method, path, status, latency, sizes."
    ),
) -> None:
    """Serve predictions over HTTP: POST /v1/predict, POST /v1/observe, GET /v1/schema, GET /healthz, /docs."""
    import json
    import os
    import tempfile

    import torch
    import uvicorn

    from msmt.rundir.layout import load_run
    from msmt.serving.app import SERVE_OPTIONS, create_app, enable_access_log
    from msmt.spec.errors import ConfigError

    if backend not in ("torch", "onnx"):
        raise ConfigError(f"--backend: unknown backend '{backend}' (expected torch or onnx)")
    torch.set_num_threads(threads)
    run = load_run(run_dir)
    store = None
    if history is not None:
        from msmt.serving.history import open_history

        store = open_history(history, run.schema.spec.panel)
        s = store.summary()
        typer.echo(f"history store {history}: {s['rows']} rows of {s['units']} units")
    with tempfile.TemporaryDirectory(prefix="msmt-serve-") as tmp:
        if backend == "onnx" and onnx_file is None:
            from msmt.scoring.export import export_model, validation_batch

            result = export_model(run.model, validation_batch(run), "onnx", Path(tmp) / "model.onnx")
            typer.echo(f"exported ONNX (parity max abs diff {result.max_abs_diff:.2e})")
            onnx_file = result.path
        # built here also with --workers: a bad block, store or ONNX file stops the command with one line
        application = create_app(run, backend, onnx_file, max_rows, max_body_bytes, block_cache, threads, store)
        typer.echo(
            f"serving {run_dir} ({run.config.model.name}, {backend}, {workers} worker{'s' if workers > 1 else ''}) "
            f"on http://{host}:{port}  (docs: /docs)"
        )
        if access_log:
            enable_access_log()
        try:
            if workers == 1:
                uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)
            else:  # each worker process builds its own app from the same options (serving.app.app_from_env)
                del application, run
                options = {
                    "run_dir": str(run_dir.resolve()), "backend": backend, "onnx": str(onnx_file) if onnx_file else None,
                    "max_rows": max_rows, "max_body_bytes": max_body_bytes, "block_cache": block_cache, "threads": threads,
                    "history": str(history.resolve()) if history else None, "access_log": access_log,
                }
                os.environ[SERVE_OPTIONS] = json.dumps(options)
                uvicorn.run(
                    "msmt.serving.app:app_from_env", factory=True, workers=workers, host=host, port=port,
                    log_level="warning", access_log=False,
                )
        finally:
            if store is not None:
                store.close()
