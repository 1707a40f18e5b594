"""``train.refit``: after early stopping, a fresh model trained on the training and validation rows
for the best epoch's number of epochs is the one the run stores (msmt.training.refit).

Checked against what the run directory alone shows (history.csv's best epoch), against a run of
the same config without the refit (its first fit must be the same), and against counts made with
pandas on the split files (the popularity model's closed-form statistics)."""

from __future__ import annotations

import pandas as pd
import pytest

from msmt.experiments.run import run_experiment
from msmt.rundir.layout import load_run
from msmt.spec.config import load_experiment
from msmt.spec.errors import ConfigError
from msmt.synth.simple import write_simple

SMALL = ["model.embedding_dim=4", "model.hidden_dims=[16]", "model.tower_dims=[8]", "train.batch_size=64", "train.lr=0.01"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_simple(tmp_path_factory.mktemp("refit_data"), rows=800, seed=2)


def _train(data, out, *sets):
    cfg = load_experiment(data / "experiment.yaml", [*SMALL, *sets])
    cfg.train.progress = False
    return run_experiment(cfg, out)


@pytest.fixture(scope="module")
def pair(data, tmp_path_factory):
    """The same config trained without and with the refit: (metrics, run dir) each."""
    sets = ("model.name=shared_bottom", "train.epochs=6", "train.patience=2")
    plain, refitted = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("refitted")
    return (_train(data, plain, *sets), plain), (_train(data, refitted, *sets, "train.refit=true"), refitted)


def test_refit_keeps_the_first_fits_validation_and_trains_its_best_epoch_count(pair):
    (plain_metrics, plain), (metrics, run) = pair
    assert metrics["val"] == plain_metrics["val"]  # the first fit, scored out of sample, is the same run
    assert metrics["test"] != plain_metrics["test"]  # the stored model is another one
    history = pd.read_csv(run / "history.csv")
    assert history.equals(pd.read_csv(plain / "history.csv"))
    best = int(history["val_loss"].idxmin()) + 1  # train.monitor: loss
    refit = pd.read_csv(run / "refit_history.csv")
    assert refit["epoch"].tolist() == list(range(1, best + 1))  # every epoch up to the best one, none stopped early
    assert not (plain / "refit_history.csv").exists()
    assert "refit" in (run / "report.md").read_text()


def test_the_stored_model_is_the_refit_and_scores_the_test_split(pair, data):
    from msmt.data.loading import read_data
    from msmt.data.tensorize import encode_frame
    from msmt.evaluation.evaluate import evaluate_model

    _, (metrics, run) = pair
    loaded = load_run(run)
    frame = read_data(data / "test.csv", loaded.config.dataset)
    again = evaluate_model(loaded.model, frame, encode_frame(frame, loaded.schema))
    for task, block in metrics["test"]["overall"].items():  # what msmt evaluate reads back is what the run scored
        assert again["overall"][task] == pytest.approx(block), task


@pytest.mark.parametrize("refit", [False, True])
def test_a_refit_closed_form_model_counts_the_training_and_validation_rows(data, tmp_path, refit):
    """Popularity's per-scenario row counts are buffers of the stored weights: with the refit they
    are the training and validation files' rows per scenario, without it the training file's."""
    _train(data, tmp_path / "run", "model.name=popularity", "train.epochs=1", f"train.refit={str(refit).lower()}")
    model = load_run(tmp_path / "run").model
    files = ["train.csv", "validation.csv"] if refit else ["train.csv"]
    rows = pd.concat([pd.read_csv(data / f) for f in files])
    expected = rows.groupby("scenario").size()
    counted = {s: float(model.scenario_rows[model.schema.scenario_index(s), 0]) for s in expected.index}
    assert counted == {s: float(n) for s, n in expected.items()}


@pytest.mark.parametrize("sets,named", [(("train.streaming=true",), "train.streaming"),
                                        (("meta.algorithm=fomaml", "dataset.group=user_id"), "meta.algorithm")])
def test_refit_rejects_what_it_cannot_retrain(data, sets, named):
    with pytest.raises((ConfigError, ValueError)) as err:
        load_experiment(data / "experiment.yaml", ["train.refit=true", *sets])
    message = str(err.value)
    assert "train.refit" in message and named in message
