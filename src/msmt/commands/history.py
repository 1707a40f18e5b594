"""``msmt history load RUN_DIR --data FILE [--data FILE ...] --db PATH``: fill a history store."""

from pathlib import Path

import typer

from msmt.commands import history_app


@history_app.command("load")
def history_load(
    run_dir: Path = typer.Argument(..., help="A run directory trained on panel data (its panel section says what to store)."),
    data: list[Path] = typer.Option(..., "--data", help="CSV or Parquet of observed rows (repeatable; a later file wins)."),
    db: Path = typer.Option(..., "--db", help="The SQLite history store (created when absent), for 'msmt serve --history'."),
) -> None:
    """Record each row's panel keys, time, metrics and event (an upsert per unit and time step)."""
    from msmt.data.loading import read_data
    from msmt.rundir.layout import SCHEMA
    from msmt.serving.history import last_of_duplicates, observations_from_frame, open_history
    from msmt.spec.errors import ConfigError
    from msmt.spec.fitted import FittedSchema

    if not (run_dir / SCHEMA).exists():
        raise ConfigError(f"{run_dir}: not a run directory (no {SCHEMA})")
    spec = FittedSchema.load(run_dir / SCHEMA).spec
    if spec.panel is None:
        raise ConfigError(f"{run_dir}: its dataset has no panel section, so its model reads no history to store")
    # every file read and checked before the store is opened: a bad file leaves no store and no partial load
    loaded = [(path, last_of_duplicates(observations_from_frame(read_data(path, spec), spec.panel))) for path in data]  # as predict --context reads a file
    store = open_history(db, spec.panel)
    try:
        for path, obs in loaded:
            counts = store.upsert(obs)
            typer.echo(f"{path}: {len(obs)} rows ({counts['inserted']} new, {counts['updated']} changed, {counts['unchanged']} unchanged)")
        s = store.summary()
        typer.echo(f"{db}: {s['rows']} rows of {s['units']} units, {spec.panel.time} steps {s['first_step']}..{s['last_step']}")
    finally:
        store.close()
