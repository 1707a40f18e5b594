"""msmt tune: trials are ordinary runs, best.yaml trains, a study resumes to N trials drawing what
an uninterrupted one draws, the space is checked first, pruning stops a trial, the direction
follows train.monitor."""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
import pytest
import yaml

from helpers import run_main
from msmt.experiments import tune as tune_mod
from msmt.experiments.tune import EpochReporter, Param, default_pruner, load_space, monitor_direction, trial_seed, tune
from msmt.spec.config import load_experiment
from msmt.spec.errors import ConfigError
from msmt.synth.simple import write_simple

FAST = ["train.epochs=2", "train.num_threads=1", "model.tower_dims=[4]", "train.patience=5"]
SPACE = {
    "train.lr": {"low": 1.0e-3, "high": 3.0e-2, "log": True},
    "model.embedding_dim": {"choices": [4, 8]},
    "model.hidden_dims": {"choices": [[16], [8, 4]]},
    "train.batch_size": {"low": 32, "high": 128, "step": 32},  # an int range: the key's value is an int
}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """400 synthetic rows; the space beside the config, as msmt tune finds it by default."""
    folder = write_simple(tmp_path_factory.mktemp("tune_data"), rows=400, seed=0)
    (folder / "experiment.tune.yaml").write_text(yaml.safe_dump(SPACE))
    return folder / "experiment.yaml"


@pytest.fixture(scope="module")
def straight(config, tmp_path_factory):
    """3 trials in one go, through the command line."""
    study = tmp_path_factory.mktemp("straight") / "study"
    sets = [a for s in FAST for a in ("--set", s)]
    assert run_main("tune", config, "--trials", 3, "--study-dir", study, "--seed", 7, *sets) == 0
    return study


def _params(study) -> list[dict]:
    frame = pd.read_csv(study / "trials.csv")
    return frame[list(SPACE)].to_dict("records")


def test_three_trials_are_runs_and_best_yaml_trains(straight, tmp_path, capsys):
    frame = pd.read_csv(straight / "trials.csv")
    assert list(frame["number"]) == [0, 1, 2] and set(frame["state"]) == {"COMPLETE"}
    assert (frame["seconds"] > 0).all() and (straight / "trials.png").stat().st_size > 0
    for n in range(3):
        cfg = load_experiment(straight / "trials" / str(n) / "config.yaml")
        assert (straight / "trials" / str(n) / "manifest.json").exists()  # a finished, ordinary run
        assert cfg.train.lr == pytest.approx(frame["train.lr"][n])
        assert cfg.train.batch_size in (32, 64, 96, 128) and isinstance(cfg.train.batch_size, int)
    best = frame.loc[frame["value"].idxmin()]  # monitor: loss, minimised
    best_cfg = load_experiment(straight / "best.yaml")
    assert best_cfg.train.lr == pytest.approx(best["train.lr"])
    assert best_cfg.model.hidden_dims == json.loads(best["model.hidden_dims"])
    assert best_cfg.train.epochs == 2 and best_cfg.train.progress  # the --set values, not the trials' quiet mode
    # the validation loss of the best trial's best epoch is its objective
    history = pd.read_csv(straight / "trials" / str(int(best["number"])) / "history.csv")
    assert history["val_loss"].min() == pytest.approx(best["value"])
    assert "budget: 3 trials ×" in (straight / "best.yaml").read_text()

    capsys.readouterr()
    assert run_main("train", straight / "best.yaml", "--out", tmp_path / "best_run", "--quiet") == 0
    assert (tmp_path / "best_run" / "manifest.json").exists()


def test_resume_continues_to_n_and_draws_what_one_go_draws(config, straight, tmp_path):
    study = tmp_path / "study"
    assert run_main("tune", config, "--trials", 2, "--study-dir", study, "--seed", 7, *[a for s in FAST for a in ("--set", s)]) == 0
    first = {n: (study / "trials" / str(n) / "manifest.json").stat().st_mtime_ns for n in (0, 1)}
    assert run_main("tune", config, "--trials", 3, "--study-dir", study, "--seed", 7, *[a for s in FAST for a in ("--set", s)]) == 0
    frame = pd.read_csv(study / "trials.csv")
    assert list(frame["number"]) == [0, 1, 2]  # one more trial, not three
    assert {n: (study / "trials" / str(n) / "manifest.json").stat().st_mtime_ns for n in (0, 1)} == first  # not rerun
    assert _params(study) == _params(straight)  # same seed: same values, resumed or not
    assert run_main("tune", config, "--trials", 3, "--study-dir", study, "--seed", 7, *[a for s in FAST for a in ("--set", s)]) == 0
    assert len(pd.read_csv(study / "trials.csv")) == 3  # already N: nothing to run


def test_an_interrupted_trial_is_drawn_again_and_not_counted(config, straight, tmp_path, monkeypatch):
    calls = []
    real = tune_mod.run_experiment

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C in the first trial
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_mod, "run_experiment", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        tune(config, 2, tmp_path / "s", seed=7, overrides=FAST, log=lambda m: None)
    result = tune(config, 2, tmp_path / "s", seed=7, overrides=FAST, log=lambda m: None)
    assert list(result.trials["state"]) == ["INTERRUPTED", "COMPLETE", "COMPLETE"]
    assert _params(tmp_path / "s")[1:] == _params(straight)[:2]  # the interrupted values are drawn again, the rest follows
    assert result.budget().startswith("2 trials")


def test_another_seed_draws_other_values():
    param = Param("train.lr", "float", 1e-4, 1e-2, log=True)

    def first_value(seed: int) -> float:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=trial_seed(seed, 0)))
        return param.suggest(study.ask())

    assert first_value(3) == first_value(3)
    assert first_value(3) != first_value(4)
    assert trial_seed(0, 1) != trial_seed(1, 0)


def test_a_study_of_other_settings_is_refused(config, straight, capsys):
    code = run_main("tune", config, "--trials", 4, "--study-dir", straight, "--set", "train.epochs=3")
    assert code == 2
    assert "another config" in capsys.readouterr().err
    assert len(pd.read_csv(straight / "trials.csv")) == 3


def test_timeout_starts_no_trial(config, tmp_path):
    logs: list[str] = []
    result = tune(config, 3, tmp_path / "s", overrides=FAST, timeout=0, log=logs.append)
    assert len(result.trials) == 0 and result.best_config is None
    assert any("--timeout" in line for line in logs)


def test_the_python_api_is_the_command(config, tmp_path):
    import msmt

    result = msmt.tune(config, 1, study_dir=tmp_path / "s", overrides={"train.epochs": 1}, timeout=0)
    assert len(result.trials) == 0 and (tmp_path / "s" / "study.db").exists() and (tmp_path / "s" / "trials.csv").exists()
    with pytest.raises(ConfigError, match="no such search-space file"):
        msmt.tune(config, 1, study_dir=tmp_path / "t", space=tmp_path / "nope.yaml")


def test_a_diverging_trial_fails_and_the_study_goes_on(config, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.lr": {"choices": [1.0e30]}}))
    result = tune(config, 1, tmp_path / "s", space=space, overrides=FAST, log=lambda m: None)
    assert list(result.trials["state"]) == ["FAIL"]
    assert result.best_config is None and not (tmp_path / "s" / "best.yaml").exists()


def test_a_trial_without_a_monitored_value_fails_and_counts(config, tmp_path, monkeypatch):
    monkeypatch.setattr(tune_mod, "run_experiment", lambda cfg, out, **kw: kw["on_epoch"](1, math.nan))
    result = tune(config, 2, tmp_path / "s", overrides=FAST, timeout=20, log=lambda m: None)  # the timeout only guards the test
    assert list(result.trials["state"]) == ["FAIL", "FAIL"]  # two trials, then stop: never an endless loop


# --------------------------------------------------------------------------- pruning


class FakeTrial:
    def __init__(self, prune_at: int):
        self.prune_at, self.reported = prune_at, []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return len(self.reported) >= self.prune_at


def test_the_reporter_reports_each_epoch_and_raises_when_told():
    trial = FakeTrial(prune_at=2)
    reporter = EpochReporter(trial, higher=True, pruned=optuna.TrialPruned)
    reporter(1, 0.6)
    with pytest.raises(optuna.TrialPruned):
        reporter(2, 0.7)
    assert trial.reported == [(1, 0.6), (2, 0.7)] and reporter.best == 0.7
    low = EpochReporter(FakeTrial(prune_at=99), higher=False, pruned=optuna.TrialPruned)
    for epoch, value in enumerate([3.0, math.nan, 2.0, 2.5], 1):
        low(epoch, value)
    assert low.best == 2.0  # a loss: the lowest, NaN ignored


def test_the_default_pruner_stops_a_clearly_worse_curve():
    study = optuna.create_study(direction="minimize", pruner=default_pruner(optuna))
    for _ in range(5):  # five finished trials with a falling loss
        trial = study.ask()
        reporter = EpochReporter(trial, higher=False, pruned=optuna.TrialPruned)
        for epoch, value in enumerate([1.0, 0.8, 0.6], 1):
            reporter(epoch, value)
        study.tell(trial, reporter.best)
    bad = EpochReporter(study.ask(), higher=False, pruned=optuna.TrialPruned)
    bad(1, 5.0)  # epoch 1: warm-up, never pruned
    with pytest.raises(optuna.TrialPruned):
        bad(2, 5.0)


def test_pruned_trials_stop_early_in_a_real_study(config, tmp_path):
    pruner = optuna.pruners.ThresholdPruner(upper=0.0)  # every validation loss is above 0: prune after epoch 1
    result = tune(config, 2, tmp_path / "s", overrides=[*FAST, "train.epochs=3"], pruner=pruner, log=lambda m: None)
    assert list(result.trials["state"]) == ["PRUNED", "PRUNED"]
    for n in (0, 1):
        run = tmp_path / "s" / "trials" / str(n)
        assert (run / "config.yaml").exists() and not (run / "manifest.json").exists()  # stopped after epoch 1
    assert result.best_config is None and (tmp_path / "s" / "trials.png").exists()


# --------------------------------------------------------------------------- direction and space


@pytest.mark.parametrize(("monitor", "direction"), [("loss", "minimize"), ("click.auc", "maximize"), ("click.logloss", "minimize"), ("dwell.nmae", "minimize")])
def test_direction_follows_the_monitor(config, monitor, direction):
    assert monitor_direction(load_experiment(config, [f"train.monitor={monitor}"]))[0] == direction


@pytest.mark.parametrize(
    ("space", "words"),
    [
        ({"train.lrx": {"low": 0.1, "high": 0.2}}, ["train.lrx", "not a config key"]),
        ({"model.mmoe.num_expertz": {"choices": [2]}}, ["model.mmoe.num_expertz", "not a config key"]),
        ({"train.lr": {"low": 0.2, "high": 0.1}}, ["train.lr", "below high"]),
        ({"train.lr": {"low": 0.0, "high": 0.1, "log": True}}, ["train.lr", "low > 0"]),
        ({"train.lr": {"low": 0.01}}, ["train.lr", "low and high"]),
        ({"train.lr": {"low": 0.01, "high": 0.1, "lg": True}}, ["train.lr", "'lg'"]),
        ({"train.lr": {"choices": []}}, ["train.lr", "non-empty"]),
        ({"train.lr": [0.1, 0.2]}, ["train.lr", "expected"]),
        ({"train.batch_size": {"low": 32, "high": 64.5}}, ["train.batch_size", "integer"]),
        ({"model.embedding_dim": {"choices": [0, 8]}}, ["model.embedding_dim", "value 0"]),
        ({"model.dropout": {"low": 0.0, "high": 1.0}}, ["model.dropout", "value 1.0"]),
        ({"train.epochs": {"choices": [1, 2]}}, ["train.epochs", "--set"]),
    ],
)
def test_a_bad_space_is_one_error_naming_file_and_key(config, tmp_path, space, words):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    base = load_experiment(config, ["train.epochs=1"]).to_dict()
    with pytest.raises(ConfigError) as err:
        load_space(path, base, ["train.epochs=1"])
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    for word in words:
        assert word in message


def test_range_types_follow_the_config(config, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"train.batch_size": {"low": 32, "high": 128}, "train.weight_decay": {"low": 0, "high": 1},
                                    "model.mmoe.num_experts": {"low": 2, "high": 4}, "train.lr": {"low": 1, "high": 2, "type": "float"}}))
    params = {p.key: p.kind for p in load_space(path, load_experiment(config).to_dict())}
    assert params == {"train.batch_size": "int", "train.weight_decay": "float", "model.mmoe.num_experts": "int", "train.lr": "float"}


def test_the_example_spaces_fit_their_configs():
    from helpers import REPO

    spaces = sorted((REPO / "configs").glob("*.tune.yaml"))
    assert spaces
    for space in spaces:
        cfg = REPO / "configs" / space.name.replace(".tune.yaml", ".yaml")
        assert load_space(space, load_experiment(cfg).to_dict()), space


def test_the_space_default_path(config):
    assert tune_mod.default_space(config) == config.with_name("experiment.tune.yaml")


def test_a_log_range_is_searched_on_a_log_scale():
    """`train.lr: {low: 1e-5, high: 1e-1, log: true}`: random draws spread evenly over the decades
    (median near 1e-3), where a linear range would put half of them above 0.05."""
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    for kind, log in (("float", True), ("int", True)):
        param = Param(key=f"{kind}_key", kind=kind, low=1 if kind == "int" else 1e-5, high=10_000 if kind == "int" else 1e-1, log=log)
        draws = []
        for _ in range(400):
            trial = study.ask()
            draws.append(param.suggest(trial))
            study.tell(trial, 0.0)
        middle = math.sqrt(param.low * param.high)  # the geometric middle of the range
        assert 0.35 < sum(d < middle for d in draws) / len(draws) < 0.65, kind


def test_each_trial_gets_its_own_sampler_seed_and_the_same_one_again():
    """The n-th trial's seed depends on (seed, n) only: distinct over trials and seeds, equal when drawn again."""
    seeds = {(s, n): trial_seed(s, n) for s in (0, 1) for n in range(20)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(trial_seed(s, n) == value for (s, n), value in seeds.items())
