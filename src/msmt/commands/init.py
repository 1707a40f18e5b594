"""``msmt init DATA --scenario COL --task NAME[:KIND[:LABEL]] ... --out DIR``: configs for one's own data.

Writes ``DIR/dataset.yaml`` (feature kinds inferred from the columns, each with its reason as a
comment; :mod:`msmt.data.infer`) and ``DIR/experiment.yaml``, which ``msmt train`` reads as they
are. ``msmt init --example NAME --out DIR`` writes one of the example configs shipped with the
package instead (the public datasets of README.md, read from ``--data-dir``).
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import typer

from msmt.commands import app


def example_names() -> list[str]:
    # not the search spaces of msmt tune beside them (<name>.tune.yaml)
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("msmt").joinpath("configs").iterdir() if p.name.endswith(".yaml") and not p.name.endswith(".tune.yaml"))


SHARED_PREFIX = re.compile(r"(?m)^(\s*(?:train|validation|test):\s*)(?:\.\./)+shared/data/(\S+)")


def write_example(name: str, out: Path, data_dir: Path, force: bool) -> list[Path]:
    """The example experiment config ``name`` and its dataset config, data paths under ``data_dir``."""
    from msmt.data.io import atomic_write_text
    from msmt.spec.errors import ConfigError

    if name not in example_names():
        raise ConfigError(f"--example: unknown example '{name}' (expected one of {example_names()})")
    root = resources.files("msmt").joinpath("configs")
    experiment = root.joinpath(f"{name}.yaml").read_text()
    match = re.search(r"(?m)^dataset:\s*(\S+)", experiment)
    dataset_rel = match.group(1)
    dataset = root.joinpath(*dataset_rel.split("/")).read_text()
    dataset = SHARED_PREFIX.sub(lambda m: m.group(1) + str((data_dir / m.group(2)).resolve()), dataset)
    written = [out / f"{name}.yaml", out / dataset_rel]
    _refuse_overwrite(written, force)
    atomic_write_text(written[0], experiment)
    atomic_write_text(written[1], dataset)
    return written


def _refuse_overwrite(paths: list[Path], force: bool) -> None:
    from msmt.spec.errors import ConfigError

    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise ConfigError(f"{', '.join(existing)} already exist(s); add --force to overwrite")


@app.command("init")
def init(
    data: Path = typer.Argument(None, help="CSV or Parquet with your rows: features, the scenario column and the labels."),
    out: Path = typer.Option(..., "--out", help="Folder for dataset.yaml and experiment.yaml (created)."),
    scenario: str = typer.Option(None, "--scenario", metavar="COLUMN", help="The column that names each row's scenario."),
    tasks: list[str] = typer.Option(
        None, "--task", metavar="NAME[:KIND[:LABEL]]",
        help="A task to predict (repeat for several): KIND binary, count or regression (default: from the labels); LABEL its column (default: NAME).",
    ),
    time: str = typer.Option(None, "--time", metavar="COLUMN", help="Time column: validation/test are the latest rows (default: random split)."),
    group: str = typer.Option(None, "--group", metavar="COLUMN", help="Group column (user, advertiser): the unit of 'msmt adapt'."),
    drop: list[str] = typer.Option(None, "--drop", metavar="COLUMN", help="A column that must not be a feature (repeat), e.g. one derived from a label."),
    model: str = typer.Option("mmoe", "--model", help="model.name of experiment.yaml."),
    sample_rows: int = typer.Option(100_000, "--sample-rows", min=100, help="Rows read to infer the feature kinds."),
    example: str = typer.Option(None, "--example", metavar="[" + "|".join(example_names()) + "]", help="Write an example config shipped with msmt instead."),
    data_dir: Path = typer.Option(
        Path(os.environ.get("MSMT_DATA", "data")), "--data-dir",
        help="With --example: the folder holding the public datasets (README.md; default $MSMT_DATA or ./data).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Write dataset.yaml + experiment.yaml for your own data (feature kinds inferred), or an example config."""
    from msmt.data.io import atomic_write_text
    from msmt.spec.errors import ConfigError

    if example is not None:
        if data is not None:
            raise ConfigError("--example writes an example config: give no DATA file with it")
        written = write_example(example, out, data_dir, force)
        typer.echo(f"wrote {written[0]} and {written[1]} (data files under {data_dir.resolve()})\nnext: msmt train {written[0]}")
        return
    if data is None or scenario is None:
        raise ConfigError("msmt init needs DATA and --scenario COLUMN (and --task NAME[:KIND[:LABEL]] ...), or --example NAME")

    import yaml

    from msmt.commands.paths import check_output_dir
    from msmt.data.infer import dataset_yaml, experiment_yaml, infer_dataset, read_sample
    from msmt.data.loading import frame_as_read
    from msmt.data.validate import validate_frame
    from msmt.spec.config import dataset_spec_from, experiment_from_dict
    from msmt.spec.errors import DataError
    from msmt.spec.sections import model_names

    check_output_dir(out)
    if model not in model_names():
        raise ConfigError(f"--model: unknown model '{model}' (registered: {model_names()})")
    frame = read_sample(data, sample_rows)
    for option, columns in (("--scenario", [scenario]), ("--time", [time]), ("--group", [group]), ("--drop", drop or [])):
        for column in columns:
            if column and column not in frame.columns:
                raise DataError(str(data), column, f"missing column (named by {option}; the file has {list(frame.columns)})")
    train_file = os.path.relpath(data.resolve(), out.resolve())
    inferred = infer_dataset(frame, scenario, list(tasks or []), name=data.stem, train_file=train_file, time=time, group=group, drop=tuple(drop or []))
    files = [out / "dataset.yaml", out / "experiment.yaml"]
    _refuse_overwrite(files, force)
    texts = [dataset_yaml(inferred, str(data)), experiment_yaml("dataset.yaml", model)]
    # what train will read must hold before anything is written: the spec, the labels as train checks them, the experiment
    raw = yaml.safe_load(texts[0])
    spec = dataset_spec_from(raw, files[0])
    validate_frame(frame_as_read(frame, spec), spec, with_labels=True)
    experiment_from_dict({**yaml.safe_load(texts[1]), "dataset": raw}, base=out, source=str(files[1]))
    for path, text in zip(files, texts):
        atomic_write_text(path, text)

    width = max(len(c.column) for c in inferred.choices)
    for c in inferred.choices:
        typer.echo(f"  {c.column:<{width}}  {c.kind:<12}  {c.why}")
    typer.echo(f"wrote {files[0]} and {files[1]}\nnext: msmt train {files[1]}")
