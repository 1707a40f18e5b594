"""``msmt tune CONFIG --trials N [--study-dir DIR] [--space SPACE.yaml] [--seed S] [--timeout SECONDS] [--set KEY=VALUE ...]``."""

from pathlib import Path

import typer

from msmt.commands import SET_METAVAR, app


@app.command("tune")
def tune(
    config: Path = typer.Argument(..., help="Experiment YAML whose keys are searched."),
    trials: int = typer.Option(..., "--trials", min=1, help="Finished trials the study should hold (a rerun continues up to N)."),
    study_dir: Path = typer.Option(None, "--study-dir", help="Folder of the study: study.db, trials/<n>/, best.yaml, trials.csv/.png (default: runs/tune-<config name>)."),
    space: Path = typer.Option(None, "--space", help="Search-space YAML (default: <config name>.tune.yaml beside the config)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler (trial n draws from (seed, n))."),
    timeout: float = typer.Option(None, "--timeout", min=0, help="Start no trial after this many seconds (a started one finishes)."),
    overrides: list[str] = typer.Option(None, "--set", metavar=SET_METAVAR, help="Override a config key in every trial: --set train.epochs=5"),
) -> None:
    """Search hyper-parameters with Optuna (TPE, median pruning on the validation metric); write the best config."""
    from msmt.commands.paths import check_output_dir
    from msmt.experiments.tune import tune as run_tune

    study_dir = study_dir or Path("runs") / f"tune-{config.stem}"
    check_output_dir(study_dir, "--study-dir")
    run_tune(config, trials, study_dir, space=space, seed=seed, timeout=timeout, overrides=overrides or [], log=typer.echo)
