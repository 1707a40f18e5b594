# ruff: noqa: E501  (a table: one case per line)
"""The bad-input corpus of issue 19: every case is a command line that must fail by the contract.

The contract (``msmt.cli``): exit code 2, exactly one line on stderr that starts with
``msmt: error:`` and names the file / column / key / option and the problem (``expect``: words
that line must hold), no traceback, nothing at the output paths the command would have written
(``absent``), inputs untouched (``unchanged``), no ``.tmp`` file left anywhere.

Placeholders (laid out by ``workspace`` in ``test_bad_input.py``):

* ``{exp}`` an experiment config over ``{data}`` (400 synthetic rows, 1 epoch, group ``user_id``);
  ``{data}`` its folder (``train.csv``, ``validation.csv``, ``test.csv``, ``dataset.yaml``)
* ``{run}`` a trained run of it; ``{adapted}`` that run with personal blocks (``msmt adapt``)
* ``{pdata}`` / ``{prun}`` the same for panel data (advertiser simulator, scenario attributes)
* ``{legacy}`` a copy of a run directory written by msmt 0.1 (``tests/fixtures/legacy_runs``)
* ``{bad}/NAME.csv`` a file of :data:`BAD_FILES`; ``{broken}/NAME`` a run of :data:`BROKEN_RUNS`
* ``{tmp}`` a fresh folder of the case (where outputs would go)

:data:`REQUESTS` is the service's part: request bodies that ``msmt serve`` must answer with the
documented error (status, ``{"detail": "<field>: <problem>", "errors": [{"field", "problem"}]}``,
``detail`` one line naming the item and column), as valid JSON, by the rules files get.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # usage | config | data | numbers | output | rundir | scenario | stale | history
    argv: str
    expect: tuple[str, ...]
    absent: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    code: int = 2
    fresh_process: bool = False  # run as `python -m msmt` (what a shell runs), not in-process
    extra: dict = field(default_factory=dict)


# Bad data files: NAME -> (source file, edits). Edits: ("set", data_row, column, value),
# ("drop", column), ("text", raw text of the whole file), ("dupcol", column), ("head", n rows).
BAD_FILES: dict[str, tuple[str, list]] = {
    "dense_huge": ("{data}/test.csv", [("set", 3, "user_age", "1e300")]),
    "dense_neg_huge": ("{data}/test.csv", [("set", 2, "user_age", "-4e38")]),
    "dense_inf": ("{data}/test.csv", [("set", 5, "user_age", "inf")]),
    "dense_neg_inf": ("{data}/test.csv", [("set", 1, "user_age", "-inf")]),
    "dense_text": ("{data}/test.csv", [("set", 4, "user_age", "abc")]),
    "log1p_negative": ("{data}/test.csv", [("set", 2, "price", "-3.5")]),
    "log1p_huge": ("{data}/test.csv", [("set", 7, "price", "1e39")]),
    "dense_far": ("{data}/test.csv", [("set", 3, "user_age", "3e38")]),
    "label_binary_5": ("{data}/test.csv", [("set", 1, "click", "5")]),
    "label_binary_text": ("{data}/test.csv", [("set", 2, "click", "yes")]),
    "label_missing_value": ("{data}/test.csv", [("set", 6, "purchase", "")]),
    "label_count_negative": ("{data}/test.csv", [("set", 3, "dwell", "-2")]),
    "label_count_huge": ("{data}/test.csv", [("set", 3, "dwell", "1e39")]),
    "label_count_inf": ("{data}/test.csv", [("set", 4, "dwell", "inf")]),
    "no_label_column": ("{data}/test.csv", [("drop", "click")]),
    "no_feature_column": ("{data}/test.csv", [("drop", "item_id")]),
    "no_scenario_column": ("{data}/test.csv", [("drop", "scenario")]),
    "duplicate_column": ("{data}/test.csv", [("dupcol", "user_age")]),
    "unseen_scenario": ("{data}/test.csv", [("set", 4, "scenario", "tv_ads")]),
    "null_scenario": ("{data}/test.csv", [("set", 2, "scenario", "")]),
    "empty": ("{data}/test.csv", [("text", "")]),
    "header_only": ("{data}/test.csv", [("head", 0)]),
    "not_csv": ("{data}/test.csv", [("text", 'a,b\n1,"2\n3,4\n')]),
    "binary_junk": ("{data}/test.csv", [("text", "\x00\x01\x02PK\x03\x04" * 40)]),
    "train_dense_huge": ("{data}/train.csv", [("set", 10, "user_age", "1e300")]),
    "train_log1p_negative": ("{data}/train.csv", [("set", 11, "price", "-1")]),
    "train_label_5": ("{data}/train.csv", [("set", 12, "click", "5")]),
    "train_dup_column": ("{data}/train.csv", [("dupcol", "price")]),
    "no_group_column": ("{data}/validation.csv", [("drop", "user_id")]),
    "adapt_label_bad": ("{data}/validation.csv", [("set", 2, "purchase", "7")]),
    "adapt_unseen_scenario": ("{data}/validation.csv", [("set", 1, "scenario", "tv_ads")]),
    "adapt_dense_huge": ("{data}/validation.csv", [("set", 1, "price", "1e300")]),
    "panel_metric_huge": ("{pdata}/test.csv", [("set", 2, "impressions", "1e300")]),
    "panel_metric_negative": ("{pdata}/test.csv", [("set", 3, "clicks", "-4")]),
    "panel_metric_inf": ("{pdata}/test.csv", [("set", 1, "cost", "inf")]),
    "panel_time_bad": ("{pdata}/test.csv", [("set", 2, "day", "yesterday")]),
    "panel_time_missing": ("{pdata}/test.csv", [("set", 2, "day", "")]),
    "panel_no_key": ("{pdata}/test.csv", [("drop", "advertiser_id")]),
    "panel_attr_huge": ("{pdata}/test.csv", [("set", 5, "traffic_volume", "1e300")]),
    "panel_attr_negative": ("{pdata}/test.csv", [("set", 5, "traffic_volume", "-10")]),
    "panel_null_scenario": ("{pdata}/test.csv", [("set", 3, "scenario", "")]),
    "context_no_key": ("{pdata}/validation.csv", [("drop", "advertiser_id")]),
    "context_metric_huge": ("{pdata}/validation.csv", [("set", 2, "clicks", "1e300")]),
    "context_time_bad": ("{pdata}/validation.csv", [("set", 2, "day", "soon")]),
    "legacy_unseen_scenario": ("{legacy_data}", [("set", 1, "scenario", "tv_ads")]),
}

# Damaged run directories: NAME -> (source run, edits). Edits: ("truncate", file, bytes kept),
# ("flip", file) randomises bytes past the header, ("write", file, text), ("delete", file),
# ("yaml", file, dotted key, value) edits a YAML/JSON value, ("blockindex", key, value).
BROKEN_RUNS: dict[str, tuple[str, list]] = {
    "weights_truncated": ("{run}", [("truncate", "model.safetensors", 200)]),
    "weights_randomised": ("{run}", [("flip", "model.safetensors")]),
    "weights_missing": ("{run}", [("delete", "model.safetensors")]),
    "weights_empty": ("{run}", [("write", "model.safetensors", "")]),
    "schema_truncated": ("{run}", [("truncate", "schema.json", 100)]),
    "schema_edited": ("{run}", [("yaml", "schema.json", "scenarios", ["feed", "search"])]),
    "schema_missing": ("{run}", [("delete", "schema.json")]),
    "config_edited": ("{run}", [("yaml", "config.yaml", "model.hidden_dims", [8])]),
    "config_not_yaml": ("{run}", [("write", "config.yaml", "model: [unclosed\n")]),
    "config_missing": ("{run}", [("delete", "config.yaml")]),
    "metrics_edited": ("{run}", [("write", "metrics.json", "{}")]),
    "manifest_missing": ("{run}", [("delete", "manifest.json")]),
    "manifest_damaged": ("{run}", [("write", "manifest.json", '{"format": 1, "fil')]),
    "manifest_future": ("{run}", [("yaml", "manifest.json", "format", 99)]),
    "provenance_damaged": ("{run}", [("write", "provenance.json", "{not json")]),
    "unfinished": ("{run}", [("delete", "manifest.json"), ("delete", "model.safetensors"), ("delete", "metrics.json")]),
    "legacy_weights_truncated": ("{legacy}", [("truncate", "model.safetensors", 300)]),
    "legacy_weights_empty": ("{legacy}", [("write", "model.safetensors", "")]),
    "legacy_schema_truncated": ("{legacy}", [("truncate", "schema.json", 80)]),
    "legacy_config_edited": ("{legacy}", [("yaml", "config.yaml", "model.hidden_dims", [5])]),
    "legacy_provenance_damaged": ("{legacy}", [("write", "provenance.json", "[1,")]),
    "blocks_stale_base": ("{adapted}", [("blockindex", "base.sha256", "0" * 64)]),
    "blocks_index_damaged": ("{adapted}", [("write", "blocks/index.json", '{"format": 2, "blo')]),
    "blocks_file_missing": ("{adapted}", [("delete", "blocks/@first")]),
    "blocks_file_randomised": ("{adapted}", [("flip", "blocks/@first")]),
    "blocks_index_unknown_format": ("{adapted}", [("blockindex", "format", 7)]),
}

P = "--out {tmp}/p.csv"
M = "--out {tmp}/m.json"

# Bad search spaces of `msmt tune` (written to {bad}/NAME.yaml): NAME -> text of the file.
BAD_SPACES: dict[str, str] = {
    "space_unknown_key": "train.lrx: {low: 0.001, high: 0.01}\n",
    "space_unknown_section_key": "model.mmoe.num_expertz: {choices: [2, 4]}\n",
    "space_low_above_high": "train.lr: {low: 0.1, high: 0.01}\n",
    "space_log_zero": "train.lr: {low: 0.0, high: 0.01, log: true}\n",
    "space_no_high": "train.lr: {low: 0.001}\n",
    "space_unknown_setting": "train.lr: {low: 0.001, high: 0.01, lg: true}\n",
    "space_empty_choices": "model.embedding_dim: {choices: []}\n",
    "space_refused_choice": "model.embedding_dim: {choices: [0, 8]}\n",
    "space_int_fraction": "train.batch_size: {low: 32, high: 64.5}\n",
    "space_not_yaml": "train.lr: {low: [\n",
    "space_a_list": "- train.lr\n",
    "space_not_a_range": "train.lr: 0.01\n",
}

CORPUS: list[Case] = [
    # ----------------------------------------------------------------- usage (click / typer)
    Case("usage-typo-command", "usage", "trian", ("No such command 'trian'", "msmt --help"), fresh_process=True),
    Case("usage-train-no-config", "usage", "train", ("missing CONFIG",), fresh_process=True),
    Case("usage-evaluate-no-data", "usage", "evaluate {run}", ("evaluate", "Missing option '--data'"), fresh_process=True),
    Case("usage-set-no-value", "usage", "train {exp} --set", ("--set", "requires an argument"), fresh_process=True),
    Case("usage-port-not-int", "usage", "serve {run} --port abc", ("serve", "--port", "abc")),
    Case("usage-port-range", "usage", "serve {run} --port 70000", ("--port", "70000")),
    Case("usage-unknown-option", "usage", "train {exp} --epochs 3", ("No such option", "--epochs")),
    Case("usage-no-such-subcommand", "usage", "synth bogus", ("synth", "No such command 'bogus'")),
    Case("usage-synth-no-subcommand", "usage", "synth", ("synth", "missing command")),
    Case("usage-synth-rows-text", "usage", "synth simple --out {tmp}/s --rows many", ("--rows", "many"), absent=("{tmp}/s",)),
    Case("usage-synth-rows-small", "usage", "synth simple --out {tmp}/s --rows 5", ("--rows", "5"), absent=("{tmp}/s",)),
    Case("usage-synth-days-small", "usage", "synth advertiser --out {tmp}/s --days 3", ("--days",), absent=("{tmp}/s",)),
    Case("usage-synth-advertisers-small", "usage", "synth advertiser --out {tmp}/s --advertisers 2", ("--advertisers",), absent=("{tmp}/s",)),
    Case("usage-synth-no-out", "usage", "synth funnel", ("synth funnel", "Missing option '--out'")),
    Case("usage-evaluate-no-run", "usage", "evaluate", ("evaluate", "Missing argument 'RUN_DIR'")),
    Case("usage-predict-no-out", "usage", "predict {run} --data {data}/test.csv", ("predict", "--out")),
    Case("usage-batch-size-zero", "usage", f"predict {{run}} --data {{data}}/test.csv {P} --batch-size 0", ("--batch-size", "0"), absent=("{tmp}/p.csv",)),
    Case("usage-batch-size-text", "usage", "evaluate {run} --data {data}/test.csv --batch-size x", ("--batch-size",)),
    Case("usage-precision", "usage", f"predict {{run}} --data {{data}}/test.csv {P} --precision fp8", ("--precision", "fp8"), absent=("{tmp}/p.csv",)),
    Case("usage-autotune-alone", "usage", f"predict {{run}} --data {{data}}/test.csv {P} --autotune", ("--autotune", "--compile"), absent=("{tmp}/p.csv",)),
    Case("usage-export-format", "usage", "export {run} --format tflite --out {tmp}/m.x", ("--format", "tflite"), absent=("{tmp}/m.x",)),
    Case("usage-export-no-out", "usage", "export {run} --format onnx", ("export", "--out")),
    Case("usage-export-rows-small", "usage", "export {run} --format onnx --out {tmp}/m.onnx --rows 2", ("--rows",), absent=("{tmp}/m.onnx",)),
    Case("usage-adapt-no-out", "usage", "adapt {run} --data {data}/validation.csv", ("adapt", "--out")),
    Case("usage-adapt-steps-negative", "usage", "adapt {run} --data {data}/validation.csv --out {tmp}/a --steps -1", ("--steps",), absent=("{tmp}/a",)),
    Case("usage-adapt-lr-negative", "usage", "adapt {run} --data {data}/validation.csv --out {tmp}/a --lr -0.1", ("--lr",), absent=("{tmp}/a",)),
    Case("usage-serve-backend", "usage", "serve {run} --backend tensorflow", ("--backend", "tensorflow")),
    Case("usage-bench-no-out", "usage", "bench --datasets {exp}", ("bench", "--out")),
    Case("usage-bench-seeds-zero", "usage", "bench --datasets {exp} --out {tmp}/b --seeds 0", ("--seeds",), absent=("{tmp}/b",)),
    Case("usage-bench-unknown-model", "usage", "bench --datasets {exp} --out {tmp}/b --models nosuch", ("--models", "nosuch"), absent=("{tmp}/b",)),
    Case("usage-bench-model-set-no-model", "usage", "bench --datasets {exp} --out {tmp}/b --models mmoe --model-set train.lr=0.1", ("--model-set", "MODEL:KEY=VALUE"), absent=("{tmp}/b",)),
    Case("usage-bench-model-set-unbenched", "usage", "bench --datasets {exp} --out {tmp}/b --models mmoe --model-set ple:train.lr=0.1", ("--model-set", "'ple' is not benched"), absent=("{tmp}/b",)),
    Case("usage-bench-model-set-bad-key", "usage", "bench --datasets {exp} --out {tmp}/b --models mmoe --model-set mmoe:train.lrr=0.1", ("unknown key 'train.lrr'",), absent=("{tmp}/b/leaderboard.md",)),
    Case("usage-bench-bad-set", "usage", "bench --datasets {exp} --out {tmp}/b --models mmoe --set train.epocs=1", ("unknown key 'train.epocs'",), absent=("{tmp}/b/leaderboard.md",)),
    Case("usage-resume-with-config", "history", "train {exp} --resume {run}", ("--resume", "takes no CONFIG")),
    Case("usage-resume-with-overwrite", "history", "train --resume {run} --overwrite", ("--resume", "--overwrite")),
    Case("usage-resume-not-a-run", "history", "train --resume {data}", ("not a run directory",)),
    Case("usage-resume-finished", "history", "train --resume {run}", ("nothing to resume",), unchanged=("{run}/manifest.json",)),
    # ----------------------------------------------------------------- config: every setting before work
    Case("config-unknown-key", "config", "train {exp} --out {tmp}/r --set train.epocs=1", ("unknown key 'train.epocs'",), absent=("{tmp}/r",)),
    Case("config-monitor-task", "config", "train {exp} --out {tmp}/r --set train.monitor=foo.auc", ("train.monitor", "foo.auc"), absent=("{tmp}/r",)),
    Case("config-monitor-measure", "config", "train {exp} --out {tmp}/r --set train.monitor=click.rmse", ("train.monitor", "rmse", "auc"), absent=("{tmp}/r",)),
    Case("config-monitor-no-measure", "config", "train {exp} --out {tmp}/r --set train.monitor=click", ("train.monitor", "'click'"), absent=("{tmp}/r",)),
    Case("config-lr-inf", "config", "train {exp} --out {tmp}/r --set train.lr=.inf", ("train.lr", "finite"), absent=("{tmp}/r",)),
    Case("config-lr-nan", "config", "train {exp} --out {tmp}/r --set train.lr=.nan", ("train.lr", "finite"), absent=("{tmp}/r",)),
    Case("config-lr-zero", "config", "train {exp} --out {tmp}/r --set train.lr=0", ("train.lr", "greater than 0"), absent=("{tmp}/r",)),
    Case("config-lr-text", "config", "train {exp} --out {tmp}/r --set train.lr=fast", ("train.lr",), absent=("{tmp}/r",)),
    Case("config-weight-decay-inf", "config", "train {exp} --out {tmp}/r --set train.weight_decay=.inf", ("train.weight_decay", "finite"), absent=("{tmp}/r",)),
    Case("config-grad-norm-negative", "config", "train {exp} --out {tmp}/r --set train.max_grad_norm=-1", ("train.max_grad_norm",), absent=("{tmp}/r",)),
    Case("config-grad-norm-nan", "config", "train {exp} --out {tmp}/r --set train.max_grad_norm=.nan", ("train.max_grad_norm", "finite"), absent=("{tmp}/r",)),
    Case("config-threads-zero", "config", "train {exp} --out {tmp}/r --set train.num_threads=0", ("train.num_threads",), absent=("{tmp}/r",)),
    Case("config-epochs-zero", "config", "train {exp} --out {tmp}/r --set train.epochs=0", ("train.epochs",), absent=("{tmp}/r",)),
    Case("config-batch-negative", "config", "train {exp} --out {tmp}/r --set train.batch_size=-8", ("train.batch_size",), absent=("{tmp}/r",)),
    Case("config-device", "config", "train {exp} --out {tmp}/r --set train.device=tpu", ("train.device", "tpu"), absent=("{tmp}/r",)),
    Case("config-precision", "config", "train {exp} --out {tmp}/r --set train.precision=fp16", ("train.precision",), absent=("{tmp}/r",)),
    Case("config-hidden-negative", "config", "train {exp} --out {tmp}/r --set model.hidden_dims=[-4]", ("model.hidden_dims", "greater than or equal to 1"), absent=("{tmp}/r",)),
    Case("config-hidden-zero", "config", "train {exp} --out {tmp}/r --set model.hidden_dims=[16,0]", ("model.hidden_dims.1",), absent=("{tmp}/r",)),
    Case("config-hidden-not-list", "config", "train {exp} --out {tmp}/r --set model.hidden_dims=16", ("model.hidden_dims", "list"), absent=("{tmp}/r",)),
    Case("config-tower-negative", "config", "train {exp} --out {tmp}/r --set model.tower_dims=[-1]", ("model.tower_dims",), absent=("{tmp}/r",)),
    Case("config-embedding-zero", "config", "train {exp} --out {tmp}/r --set model.embedding_dim=0", ("model.embedding_dim",), absent=("{tmp}/r",)),
    Case("config-dropout", "config", "train {exp} --out {tmp}/r --set model.dropout=1.5", ("model.dropout",), absent=("{tmp}/r",)),
    Case("config-model-name", "config", "train {exp} --out {tmp}/r --set model.name=transformer", ("unknown model 'transformer'",), absent=("{tmp}/r",)),
    Case("config-mmoe-experts", "config", "train {exp} --out {tmp}/r --set model.mmoe.num_experts=0", ("model.mmoe.num_experts",), absent=("{tmp}/r",)),
    Case("config-m2m-expert-dims", "config", "train {exp} --out {tmp}/r --set model.m2m.expert_dims=[0]", ("model.m2m.expert_dims",), absent=("{tmp}/r",)),
    Case("config-m2m-heads", "config", "train {exp} --out {tmp}/r --set model.m2m.seq_heads=3", ("seq_heads",), absent=("{tmp}/r",)),
    Case("config-ple-expert-dims", "config", "train {exp} --out {tmp}/r --set model.ple.expert_dims=[-2]", ("model.ple.expert_dims",), absent=("{tmp}/r",)),
    Case("config-star-aux-dims", "config", "train {exp} --out {tmp}/r --set model.star.aux_dims=[0]", ("model.star.aux_dims",), absent=("{tmp}/r",)),
    Case("config-loss-strategy", "config", "train {exp} --out {tmp}/r --set loss.strategy=magic", ("loss strategy 'magic'",), absent=("{tmp}/r",)),
    Case("config-gradnorm-alpha-inf", "config", "train {exp} --out {tmp}/r --set loss.gradnorm.alpha=.inf", ("loss.gradnorm.alpha", "finite"), absent=("{tmp}/r",)),
    Case("config-meta-personal-string", "config", "train {exp} --out {tmp}/r --set meta.personal=towers.*", ("meta.personal", "list"), absent=("{tmp}/r",)),
    Case("config-meta-inner-lr-inf", "config", "train {exp} --out {tmp}/r --set meta.inner_lr=.inf", ("meta.inner_lr", "finite"), absent=("{tmp}/r",)),
    Case("config-dense-string", "config", "train {exp} --out {tmp}/r --set dataset.features.dense=price", ("dataset.features", "'dense' must be a list", "[price]"), absent=("{tmp}/r",)),
    Case("config-sparse-string", "config", "train {exp} --out {tmp}/r --set dataset.features.sparse=user_id", ("'sparse' must be a list",), absent=("{tmp}/r",)),
    Case("config-no-tasks", "config", "train {exp} --out {tmp}/r --set dataset.tasks=[]", ("tasks", "at least one task"), absent=("{tmp}/r",)),
    Case("config-scenario-column", "config", "train {exp} --out {tmp}/r --set dataset.scenario.column=placement", ("column 'placement'", "missing column"), absent=("{tmp}/r",)),
    Case("config-not-a-section", "config", "train {exp} --out {tmp}/r --set train.epochs.value=1", ("--set", "'epochs' is not a section"), absent=("{tmp}/r",)),
    Case("config-set-no-equals", "config", "train {exp} --out {tmp}/r --set train.lr", ("--set", "key=value"), absent=("{tmp}/r",)),
    Case("config-set-empty-key", "config", "train {exp} --out {tmp}/r --set =3", ("--set", "empty key"), absent=("{tmp}/r",)),
    Case("config-file-missing", "config", "train {tmp}/nope.yaml --out {tmp}/r", ("nope.yaml", "no such config file"), absent=("{tmp}/r",)),
    Case("config-file-not-yaml", "config", "train {bad}/not_yaml.yaml --out {tmp}/r", ("not_yaml.yaml", "not valid YAML"), absent=("{tmp}/r",)),
    Case("config-file-a-list", "config", "train {bad}/a_list.yaml --out {tmp}/r", ("a_list.yaml", "mapping"), absent=("{tmp}/r",)),
    Case("config-no-dataset", "config", "train {bad}/no_dataset.yaml --out {tmp}/r", ("missing key 'dataset'",), absent=("{tmp}/r",)),
    Case("config-task-weight-inf", "config", "train {bad}/task_weight_inf.yaml --out {tmp}/r", ("weight", "finite"), absent=("{tmp}/r",)),
    Case("config-task-kind", "config", "train {bad}/task_kind.yaml --out {tmp}/r", ("unknown task kind 'probability'",), absent=("{tmp}/r",)),
    Case("config-backtest-fold-no-split", "config", "train {exp} --out {tmp}/r --set dataset.split.backtest_fold=1", ("split.backtest_fold",), absent=("{tmp}/r",)),
    Case("config-train-file-missing", "config", "train {bad}/train_missing.yaml --out {tmp}/r", ("nowhere.csv", "no such file"), absent=("{tmp}/r",)),
    # ----------------------------------------------------------------- training data and numbers
    Case("train-dense-huge", "numbers", "train {bad}/exp_train_dense_huge.yaml --out {tmp}/r", ("train_dense_huge.csv", "column 'user_age'", "data row 10", "float32"), absent=("{tmp}/r",)),
    Case("train-log1p-negative", "numbers", "train {bad}/exp_train_log1p_negative.yaml --out {tmp}/r", ("column 'price'", "log1p", "data row 11"), absent=("{tmp}/r",)),
    Case("train-label-5", "data", "train {bad}/exp_train_label_5.yaml --out {tmp}/r", ("column 'click'", "0 or 1", "data row 12"), absent=("{tmp}/r",)),
    Case("bench-jobs-label-5", "data", "bench --datasets {bad}/exp_train_label_5.yaml --models mmoe --models shared_bottom --out {tmp}/b --jobs 2 --set train.epochs=1", ("column 'click'", "0 or 1", "data row 12"), absent=("{tmp}/b/leaderboard.md",)),
    Case("train-duplicate-column", "data", "train {bad}/exp_train_dup_column.yaml --out {tmp}/r", ("column 'price'", "duplicate column"), absent=("{tmp}/r",)),
    Case("train-diverges", "numbers", "train {exp} --out {tmp}/r --set train.lr=1e30", ("training stopped", "epoch 1", "train.lr"), absent=("{tmp}/r",)),
    Case("train-diverges-checkpointing", "numbers", "train {exp} --out {tmp}/r --set train.lr=1e30 --set train.checkpoint_every=1", ("training stopped",), extra={"only": ("{tmp}/r", {"config.yaml", "provenance.json", "checkpoint.pt"})}),
    # ----------------------------------------------------------------- output paths
    Case("out-train-nonempty", "stale", "train {exp} --out {run}", ("not empty", "--overwrite"), unchanged=("{run}/manifest.json", "{run}/model.safetensors")),
    Case("out-train-not-a-run", "output", "train {exp} --out {data} --overwrite", ("not a run directory", "--overwrite"), unchanged=("{data}/train.csv",)),
    Case("out-train-a-file", "output", "train {exp} --out {data}/test.csv", ("test.csv", "not a folder"), unchanged=("{data}/test.csv",)),
    Case("out-train-proc", "output", "train {exp} --out /proc/msmt-run", ("/proc/msmt-run",), absent=("/proc/msmt-run",)),
    Case("out-predict-is-data", "output", "predict {run} --data {data}/test.csv --out {data}/test.csv", ("--out", "--data", "overwrite the input"), unchanged=("{data}/test.csv",)),
    Case("out-predict-is-folder", "output", "predict {run} --data {data}/test.csv --out {tmp}", ("--out", "is a folder"), absent=("{tmp}/p.csv",)),
    Case("out-predict-proc", "output", "predict {run} --data {data}/test.csv --out /proc/msmt.csv", ("/proc",), absent=("/proc/msmt.csv",)),
    Case("out-predict-under-file", "output", "predict {run} --data {data}/test.csv --out {data}/test.csv/p.csv", ("test.csv", "not a folder"), unchanged=("{data}/test.csv",)),
    Case("out-predict-run-weights", "output", "predict {run} --data {data}/test.csv --out {run}/model.safetensors", ("run directory", "model.safetensors"), unchanged=("{run}/model.safetensors",)),
    Case("out-evaluate-is-data", "output", "evaluate {run} --data {data}/test.csv --out {data}/test.csv", ("--out", "--data"), unchanged=("{data}/test.csv",)),
    Case("out-evaluate-run-metrics", "output", "evaluate {run} --data {data}/test.csv --out {run}/metrics.json", ("run directory", "metrics.json"), unchanged=("{run}/metrics.json",)),
    Case("out-evaluate-is-folder", "output", "evaluate {run} --data {data}/test.csv --out {tmp}", ("is a folder",)),
    Case("out-export-is-folder", "output", "export {run} --format onnx --out {tmp}", ("is a folder",)),
    Case("out-export-run-weights", "output", "export {run} --format torchscript --out {run}/model.safetensors", ("run directory",), unchanged=("{run}/model.safetensors",)),
    Case("out-export-proc", "output", "export {run} --format torchscript --out /proc/m.pt", ("/proc",), absent=("/proc/m.pt",)),
    Case("out-adapt-nonempty", "output", "adapt {run} --data {data}/validation.csv --out {data}", ("--out", "not empty"), unchanged=("{data}/validation.csv",)),
    Case("out-adapt-a-file", "output", "adapt {run} --data {data}/validation.csv --out {data}/test.csv", ("not a folder",), unchanged=("{data}/test.csv",)),
    Case("out-synth-a-file", "output", "synth simple --out {data}/test.csv", ("not a folder",), unchanged=("{data}/test.csv",)),
    Case("out-synth-proc", "output", "synth simple --out /proc/msmt-synth --rows 100", ("/proc/msmt-synth",), absent=("/proc/msmt-synth",)),
    Case("out-bench-a-file", "output", "bench --datasets {exp} --models mmoe --out {data}/test.csv", ("not a folder",), unchanged=("{data}/test.csv",)),
    # ----------------------------------------------------------------- data to score
    Case("data-missing-file", "data", f"predict {{run}} --data {{tmp}}/nope.csv {P}", ("nope.csv", "no such file"), absent=("{tmp}/p.csv",)),
    Case("data-a-folder", "data", f"predict {{run}} --data {{data}} {P}", ("cannot read table",), absent=("{tmp}/p.csv",)),
    Case("data-empty", "data", f"predict {{run}} --data {{bad}}/empty.csv {P}", ("empty.csv", "empty file"), absent=("{tmp}/p.csv",)),
    Case("data-header-only", "data", f"predict {{run}} --data {{bad}}/header_only.csv {P}", ("header_only.csv", "no data rows"), absent=("{tmp}/p.csv",)),
    Case("data-malformed", "data", f"predict {{run}} --data {{bad}}/not_csv.csv {P}", ("not_csv.csv",), absent=("{tmp}/p.csv",)),
    Case("data-binary-junk", "data", f"predict {{run}} --data {{bad}}/binary_junk.csv {P}", ("binary_junk.csv",), absent=("{tmp}/p.csv",)),
    Case("data-missing-feature", "data", f"predict {{run}} --data {{bad}}/no_feature_column.csv {P}", ("column 'item_id'", "missing column"), absent=("{tmp}/p.csv",)),
    Case("data-missing-scenario-column", "data", f"predict {{run}} --data {{bad}}/no_scenario_column.csv {P}", ("column 'scenario'", "missing column"), absent=("{tmp}/p.csv",)),
    Case("data-duplicate-column", "data", f"predict {{run}} --data {{bad}}/duplicate_column.csv {P}", ("column 'user_age'", "duplicate column"), absent=("{tmp}/p.csv",)),
    Case("data-dense-text", "data", f"predict {{run}} --data {{bad}}/dense_text.csv {P}", ("column 'user_age'", "non-numeric", "'abc'", "data row 4"), absent=("{tmp}/p.csv",)),
    Case("data-missing-label", "data", f"evaluate {{run}} --data {{bad}}/no_label_column.csv {M}", ("column 'click'", "missing column"), absent=("{tmp}/m.json",)),
    Case("data-label-5", "data", f"evaluate {{run}} --data {{bad}}/label_binary_5.csv {M}", ("column 'click'", "0 or 1", "data row 1"), absent=("{tmp}/m.json",)),
    Case("data-label-text", "data", f"evaluate {{run}} --data {{bad}}/label_binary_text.csv {M}", ("column 'click'", "non-numeric", "'yes'"), absent=("{tmp}/m.json",)),
    Case("data-label-missing-value", "data", f"evaluate {{run}} --data {{bad}}/label_missing_value.csv {M}", ("column 'purchase'", "missing value", "data row 6"), absent=("{tmp}/m.json",)),
    Case("data-count-negative", "data", f"evaluate {{run}} --data {{bad}}/label_count_negative.csv {M}", ("column 'dwell'", ">= 0", "data row 3"), absent=("{tmp}/m.json",)),
    Case("numbers-dense-huge", "numbers", f"predict {{run}} --data {{bad}}/dense_huge.csv {P}", ("dense_huge.csv", "column 'user_age'", "data row 3", "float32"), absent=("{tmp}/p.csv",)),
    Case("numbers-dense-neg-huge", "numbers", f"predict {{run}} --data {{bad}}/dense_neg_huge.csv {P}", ("column 'user_age'", "data row 2", "float32"), absent=("{tmp}/p.csv",)),
    Case("numbers-dense-inf", "numbers", f"predict {{run}} --data {{bad}}/dense_inf.csv {P}", ("column 'user_age'", "infinite", "data row 5"), absent=("{tmp}/p.csv",)),
    Case("numbers-dense-neg-inf", "numbers", f"evaluate {{run}} --data {{bad}}/dense_neg_inf.csv {M}", ("column 'user_age'", "infinite", "data row 1"), absent=("{tmp}/m.json",)),
    Case("numbers-dense-far", "numbers", f"predict {{run}} --data {{bad}}/dense_far.csv {P}", ("dense_far.csv", "non-finite prediction", "data row 3"), absent=("{tmp}/p.csv",)),
    Case("numbers-log1p-negative", "numbers", f"predict {{run}} --data {{bad}}/log1p_negative.csv {P}", ("column 'price'", "log1p", "-3.5", "data row 2"), absent=("{tmp}/p.csv",)),
    Case("numbers-log1p-huge", "numbers", f"predict {{run}} --data {{bad}}/log1p_huge.csv {P}", ("column 'price'", "data row 7", "float32"), absent=("{tmp}/p.csv",)),
    Case("numbers-label-huge", "numbers", f"evaluate {{run}} --data {{bad}}/label_count_huge.csv {M}", ("column 'dwell'", "data row 3", "float32"), absent=("{tmp}/m.json",)),
    Case("numbers-label-inf", "numbers", f"evaluate {{run}} --data {{bad}}/label_count_inf.csv {M}", ("column 'dwell'", "infinite", "data row 4"), absent=("{tmp}/m.json",)),
    Case("numbers-export-data-huge", "numbers", "export {run} --format torchscript --data {bad}/dense_huge.csv --out {tmp}/m.pt", ("column 'user_age'", "float32"), absent=("{tmp}/m.pt",)),
    Case("export-data-missing", "data", "export {run} --format torchscript --data {tmp}/nope.csv --out {tmp}/m.pt", ("nope.csv", "no such file"), absent=("{tmp}/m.pt",)),
    # ----------------------------------------------------------------- unseen scenarios (one rule)
    Case("scenario-unseen-predict", "scenario", f"predict {{run}} --data {{bad}}/unseen_scenario.csv {P}", ("column 'scenario'", "'tv_ads'", "data row 4", "not seen in training"), absent=("{tmp}/p.csv",)),
    Case("scenario-unseen-evaluate", "scenario", f"evaluate {{run}} --data {{bad}}/unseen_scenario.csv {M}", ("column 'scenario'", "'tv_ads'", "not seen in training"), absent=("{tmp}/m.json",)),
    Case("scenario-null-predict", "scenario", f"predict {{run}} --data {{bad}}/null_scenario.csv {P}", ("column 'scenario'", "missing scenario", "data row 2"), absent=("{tmp}/p.csv",)),
    Case("scenario-null-with-attributes", "scenario", f"predict {{prun}} --data {{bad}}/panel_null_scenario.csv --context {{pdata}}/validation.csv {P}", ("column 'scenario'", "missing scenario", "data row 3"), absent=("{tmp}/p.csv",)),
    Case("scenario-unseen-adapt", "scenario", "adapt {run} --data {bad}/adapt_unseen_scenario.csv --out {tmp}/a", ("column 'scenario'", "'tv_ads'"), absent=("{tmp}/a",)),
    Case("scenario-unseen-legacy", "scenario", f"predict {{legacy}} --data {{bad}}/legacy_unseen_scenario.csv {P}", ("column 'scenario'", "'tv_ads'"), absent=("{tmp}/p.csv",)),
    # ----------------------------------------------------------------- panel history (--context)
    Case("history-metric-huge", "history", f"predict {{prun}} --data {{bad}}/panel_metric_huge.csv --context {{pdata}}/validation.csv {P}", ("column 'impressions'", "data row 2", "float32"), absent=("{tmp}/p.csv",)),
    Case("history-metric-negative", "history", f"predict {{prun}} --data {{bad}}/panel_metric_negative.csv {P}", ("column 'clicks'", "panel metric", "data row 3"), absent=("{tmp}/p.csv",)),
    Case("history-metric-inf", "history", f"evaluate {{prun}} --data {{bad}}/panel_metric_inf.csv {M}", ("column 'cost'", "infinite"), absent=("{tmp}/m.json",)),
    Case("history-time-bad", "history", f"predict {{prun}} --data {{bad}}/panel_time_bad.csv {P}", ("column 'day'", "'yesterday'", "data row 2"), absent=("{tmp}/p.csv",)),
    Case("history-time-missing", "history", f"predict {{prun}} --data {{bad}}/panel_time_missing.csv {P}", ("column 'day'", "missing time value", "data row 2"), absent=("{tmp}/p.csv",)),
    Case("history-no-key", "history", f"predict {{prun}} --data {{bad}}/panel_no_key.csv {P}", ("column 'advertiser_id'", "missing column"), absent=("{tmp}/p.csv",)),
    Case("history-attribute-huge", "numbers", f"predict {{prun}} --data {{bad}}/panel_attr_huge.csv {P}", ("column 'traffic_volume'", "data row 5", "float32"), absent=("{tmp}/p.csv",)),
    Case("history-attribute-negative", "numbers", f"predict {{prun}} --data {{bad}}/panel_attr_negative.csv {P}", ("column 'traffic_volume'", "log1p"), absent=("{tmp}/p.csv",)),
    Case("history-context-missing", "history", f"predict {{prun}} --data {{pdata}}/test.csv --context {{tmp}}/nope.csv {P}", ("nope.csv", "no such file"), absent=("{tmp}/p.csv",)),
    Case("history-context-no-key", "history", f"predict {{prun}} --data {{pdata}}/test.csv --context {{bad}}/context_no_key.csv {P}", ("context_no_key.csv", "column 'advertiser_id'"), absent=("{tmp}/p.csv",)),
    Case("history-context-metric-huge", "history", f"predict {{prun}} --data {{pdata}}/test.csv --context {{bad}}/context_metric_huge.csv {P}", ("context_metric_huge.csv", "column 'clicks'", "float32"), absent=("{tmp}/p.csv",)),
    Case("history-context-time-bad", "history", f"predict {{prun}} --data {{pdata}}/test.csv --context {{bad}}/context_time_bad.csv {P}", ("context_time_bad.csv", "column 'day'", "'soon'"), absent=("{tmp}/p.csv",)),
    Case("history-context-is-out", "output", "predict {prun} --data {pdata}/test.csv --context {pdata}/validation.csv --out {pdata}/validation.csv", ("--out", "--context"), unchanged=("{pdata}/validation.csv",)),
    # ----------------------------------------------------------------- adapt
    Case("adapt-diverges", "numbers", "adapt {run} --data {data}/validation.csv --out {tmp}/a --lr 1e30 --backtrack 0", ("diverged", "--lr", "Nothing was written"), absent=("{tmp}/a",)),
    Case("adapt-diverges-in-place", "numbers", "adapt {adapted} --data {data}/validation.csv --out {adapted} --lr 1e30 --backtrack 0", ("diverged",), unchanged=("{adapted}/blocks/index.json",)),
    Case("adapt-lr-inf", "numbers", "adapt {run} --data {data}/validation.csv --out {tmp}/a --lr inf", ("--lr", "finite"), absent=("{tmp}/a",)),
    Case("adapt-lr-nan", "numbers", "adapt {run} --data {data}/validation.csv --out {tmp}/a --lr nan", ("--lr",), absent=("{tmp}/a",)),
    Case("adapt-no-group-setting", "config", "adapt {legacy} --data {legacy_data} --out {tmp}/a", ("dataset.group",), absent=("{tmp}/a",)),
    Case("adapt-no-group-column", "data", "adapt {run} --data {bad}/no_group_column.csv --out {tmp}/a", ("column 'user_id'",), absent=("{tmp}/a",)),
    Case("adapt-label-bad", "data", "adapt {run} --data {bad}/adapt_label_bad.csv --out {tmp}/a", ("column 'purchase'", "0 or 1", "data row 2"), absent=("{tmp}/a",)),
    Case("adapt-dense-huge", "numbers", "adapt {run} --data {bad}/adapt_dense_huge.csv --out {tmp}/a", ("column 'price'", "float32"), absent=("{tmp}/a",)),
    Case("adapt-missing-data", "data", "adapt {run} --data {tmp}/nope.csv --out {tmp}/a", ("nope.csv", "no such file"), absent=("{tmp}/a",)),
    # ----------------------------------------------------------------- run directories
    # ----------------------------------------------------------------- msmt history load (nothing at --db on any error)
    Case("history-load-no-panel", "config", "history load {run} --data {pdata}/test.csv --db {tmp}/h.db", ("no panel section",), absent=("{tmp}/h.db",)),
    Case("history-load-not-a-run", "rundir", "history load {tmp}/norun --data {pdata}/test.csv --db {tmp}/h.db", ("norun", "not a run directory"), absent=("{tmp}/h.db",)),
    Case("history-load-missing-data", "data", "history load {prun} --data {tmp}/nope.csv --db {tmp}/h.db", ("nope.csv", "no such file"), absent=("{tmp}/h.db",)),
    Case("history-load-no-key", "history", "history load {prun} --data {bad}/panel_no_key.csv --db {tmp}/h.db", ("panel_no_key.csv", "column 'advertiser_id'", "missing column"), absent=("{tmp}/h.db",)),
    Case("history-load-metric-huge", "numbers", "history load {prun} --data {bad}/panel_metric_huge.csv --db {tmp}/h.db", ("column 'impressions'", "float32", "data row 2"), absent=("{tmp}/h.db",)),
    Case("history-load-metric-negative", "numbers", "history load {prun} --data {bad}/panel_metric_negative.csv --db {tmp}/h.db", ("column 'clicks'", ">= 0", "data row 3"), absent=("{tmp}/h.db",)),
    Case("history-load-metric-inf", "numbers", "history load {prun} --data {bad}/panel_metric_inf.csv --db {tmp}/h.db", ("column 'cost'", "infinite", "data row 1"), absent=("{tmp}/h.db",)),
    Case("history-load-time-bad", "history", "history load {prun} --data {bad}/panel_time_bad.csv --db {tmp}/h.db", ("column 'day'", "'yesterday'", "data row 2"), absent=("{tmp}/h.db",)),
    Case("history-load-time-missing", "history", "history load {prun} --data {bad}/panel_time_missing.csv --db {tmp}/h.db", ("column 'day'", "missing time value", "data row 2"), absent=("{tmp}/h.db",)),
    Case("history-load-second-file-bad", "history", "history load {prun} --data {pdata}/validation.csv --data {bad}/panel_metric_huge.csv --db {tmp}/h.db", ("panel_metric_huge.csv", "float32"), absent=("{tmp}/h.db",)),
    Case("history-load-db-is-data", "output", "history load {prun} --data {pdata}/test.csv --db {pdata}/validation.csv", ("validation.csv", "not a usable history store"), unchanged=("{pdata}/validation.csv",)),
    Case("history-load-db-folder", "output", "history load {prun} --data {pdata}/test.csv --db {tmp}", ("not a usable history store",)),
    Case("history-load-db-proc", "output", "history load {prun} --data {pdata}/test.csv --db /proc/msmt-h.db", ("/proc/msmt-h.db",), absent=("/proc/msmt-h.db",)),
    Case("history-load-db-under-file", "output", "history load {prun} --data {pdata}/test.csv --db {pdata}/test.csv/h.db", ("test.csv/h.db",), unchanged=("{pdata}/test.csv",)),
    Case("history-load-no-data-option", "usage", "history load {prun} --db {tmp}/h.db", ("history load", "Missing option '--data'"), absent=("{tmp}/h.db",)),
    Case("history-load-no-db-option", "usage", "history load {prun} --data {pdata}/test.csv", ("history load", "Missing option '--db'")),
    Case("history-load-no-run", "usage", "history load", ("history load", "Missing argument 'RUN_DIR'")),
    Case("history-no-subcommand", "usage", "history", ("history", "missing command")),
    Case("history-unknown-subcommand", "usage", "history bogus", ("history", "No such command 'bogus'")),
    # ----------------------------------------------------------------- msmt init (nothing at --out on any error)
    Case("init-missing-file", "data", "init {tmp}/nope.csv --scenario scenario --task click --out {tmp}/o", ("nope.csv", "no such file"), absent=("{tmp}/o",)),
    Case("init-no-scenario", "usage", "init {data}/test.csv --task click --out {tmp}/o", ("--scenario",), absent=("{tmp}/o",)),
    Case("init-scenario-not-a-column", "data", "init {data}/test.csv --scenario placement --task click --out {tmp}/o", ("test.csv", "column 'placement'", "--scenario"), absent=("{tmp}/o",)),
    Case("init-time-not-a-column", "data", "init {data}/test.csv --scenario scenario --task click --time when --out {tmp}/o", ("column 'when'", "--time"), absent=("{tmp}/o",)),
    Case("init-group-not-a-column", "data", "init {data}/test.csv --scenario scenario --task click --group who --out {tmp}/o", ("column 'who'", "--group"), absent=("{tmp}/o",)),
    Case("init-drop-not-a-column", "data", "init {data}/test.csv --scenario scenario --task click --drop what --out {tmp}/o", ("column 'what'", "--drop"), absent=("{tmp}/o",)),
    Case("init-task-no-label", "data", "init {data}/test.csv --scenario scenario --task clicked --out {tmp}/o", ("--task clicked", "no label column 'clicked'"), absent=("{tmp}/o",)),
    Case("init-task-label-column", "data", "init {data}/test.csv --scenario scenario --task click:binary:clk --out {tmp}/o", ("no label column 'clk'",), absent=("{tmp}/o",)),
    Case("init-task-kind", "config", "init {data}/test.csv --scenario scenario --task click:probability --out {tmp}/o", ("--task", "unknown kind 'probability'"), absent=("{tmp}/o",)),
    Case("init-model", "config", "init {data}/test.csv --scenario scenario --task click --model transformer --out {tmp}/o", ("--model", "'transformer'"), absent=("{tmp}/o",)),
    Case("init-sample-rows-small", "usage", "init {data}/test.csv --scenario scenario --task click --sample-rows 5 --out {tmp}/o", ("--sample-rows", "5"), absent=("{tmp}/o",)),
    Case("init-sample-rows-text", "usage", "init {data}/test.csv --scenario scenario --task click --sample-rows many --out {tmp}/o", ("--sample-rows", "many"), absent=("{tmp}/o",)),
    Case("init-example-unknown", "config", "init --example nosuch --out {tmp}/o", ("--example", "'nosuch'"), absent=("{tmp}/o",)),
    Case("init-example-with-data", "usage", "init {data}/test.csv --example movielens --out {tmp}/o", ("--example", "no DATA"), absent=("{tmp}/o",)),
    Case("init-no-out", "usage", "init {data}/test.csv --scenario scenario --task click", ("init", "Missing option '--out'")),
    Case("init-empty", "data", "init {bad}/empty.csv --scenario scenario --task click --out {tmp}/o", ("empty.csv", "cannot read table"), absent=("{tmp}/o",)),
    Case("init-header-only", "data", "init {bad}/header_only.csv --scenario scenario --task click --out {tmp}/o", ("header_only.csv", "no data rows"), absent=("{tmp}/o",)),
    Case("init-binary-junk", "data", "init {bad}/binary_junk.csv --scenario scenario --task click --out {tmp}/o", ("binary_junk.csv",), absent=("{tmp}/o",)),
    Case("init-label-5", "data", "init {bad}/label_binary_5.csv --scenario scenario --task click:binary --out {tmp}/o", ("label_binary_5.csv", "column 'click'", "0 or 1", "data row 1"), absent=("{tmp}/o",)),
    Case("init-count-negative", "numbers", "init {bad}/label_count_negative.csv --scenario scenario --task dwell:count --out {tmp}/o", ("label_count_negative.csv", "column 'dwell'", ">= 0", "data row 3"), absent=("{tmp}/o",)),
    Case("init-count-inf", "numbers", "init {bad}/label_count_inf.csv --scenario scenario --task dwell:count --out {tmp}/o", ("column 'dwell'", "infinite value inf", "data row 4"), absent=("{tmp}/o",)),
    Case("init-dense-huge", "numbers", "init {bad}/dense_huge.csv --scenario scenario --task click --out {tmp}/o", ("dense_huge.csv", "column 'user_age'", "float32", "data row 3"), absent=("{tmp}/o",)),
    Case("init-out-a-file", "output", "init {data}/test.csv --scenario scenario --task click --out {data}/test.csv", ("--out", "not a folder"), unchanged=("{data}/test.csv",)),
    Case("init-out-under-file", "output", "init {data}/test.csv --scenario scenario --task click --out {data}/test.csv/o", ("test.csv", "not a folder"), unchanged=("{data}/test.csv",)),
    Case("init-out-proc", "output", "init {data}/test.csv --scenario scenario --task click --out /proc/msmt-init", ("/proc/msmt-init",), absent=("/proc/msmt-init",)),
    Case("init-out-holds-configs", "stale", "init {data}/test.csv --scenario scenario --task click --out {data}", ("dataset.yaml", "already exist", "--force"), unchanged=("{data}/dataset.yaml", "{data}/experiment.yaml")),
    Case("rundir-missing", "rundir", f"predict {{tmp}}/norun --data {{data}}/test.csv {P}", ("norun", "not a run directory"), absent=("{tmp}/p.csv",)),
    Case("rundir-a-file", "rundir", f"predict {{data}}/test.csv --data {{data}}/test.csv {P}", ("not a run directory",), absent=("{tmp}/p.csv",)),
    Case("rundir-a-data-folder", "rundir", f"evaluate {{data}} --data {{data}}/test.csv {M}", ("no config.yaml",), absent=("{tmp}/m.json",)),
    # ----------------------------------------------------------------- msmt tune: the space and the settings, before any trial
    Case("usage-tune-no-trials", "usage", "tune {exp}", ("tune", "--trials")),
    Case("usage-tune-trials-zero", "usage", "tune {exp} --trials 0 --study-dir {tmp}/s", ("--trials",), absent=("{tmp}/s",)),
    Case("usage-tune-timeout-negative", "usage", "tune {exp} --trials 2 --study-dir {tmp}/s --timeout -1", ("--timeout",), absent=("{tmp}/s",)),
    Case("config-tune-no-space", "config", "tune {exp} --trials 2 --study-dir {tmp}/s", ("exp.tune.yaml", "no such search-space file"), absent=("{tmp}/s",)),
    Case("config-tune-space-missing", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {tmp}/nope.yaml", ("nope.yaml", "no such search-space file"), absent=("{tmp}/s",)),
    Case("config-tune-unknown-key", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_unknown_key.yaml", ("space_unknown_key.yaml", "train.lrx", "not a config key"), absent=("{tmp}/s",)),
    Case("config-tune-unknown-section-key", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_unknown_section_key.yaml", ("model.mmoe.num_expertz", "not a config key"), absent=("{tmp}/s",)),
    Case("config-tune-low-above-high", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_low_above_high.yaml", ("space_low_above_high.yaml", "train.lr", "below high"), absent=("{tmp}/s",)),
    Case("config-tune-log-zero", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_log_zero.yaml", ("train.lr", "low > 0"), absent=("{tmp}/s",)),
    Case("config-tune-no-high", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_no_high.yaml", ("train.lr", "low and high"), absent=("{tmp}/s",)),
    Case("config-tune-unknown-setting", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_unknown_setting.yaml", ("train.lr", "'lg'"), absent=("{tmp}/s",)),
    Case("config-tune-empty-choices", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_empty_choices.yaml", ("model.embedding_dim", "non-empty"), absent=("{tmp}/s",)),
    Case("config-tune-refused-choice", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_refused_choice.yaml", ("model.embedding_dim", "value 0", "refused"), absent=("{tmp}/s",)),
    Case("config-tune-int-fraction", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_int_fraction.yaml", ("train.batch_size", "integer"), absent=("{tmp}/s",)),
    Case("config-tune-space-not-yaml", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_not_yaml.yaml", ("space_not_yaml.yaml", "not valid YAML"), absent=("{tmp}/s",)),
    Case("config-tune-space-a-list", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_a_list.yaml", ("space_a_list.yaml", "mapping"), absent=("{tmp}/s",)),
    Case("config-tune-not-a-range", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_not_a_range.yaml", ("train.lr", "expected"), absent=("{tmp}/s",)),
    Case("config-tune-searched-and-set", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --space {bad}/space_low_above_high.yaml --set train.lr=0.01", ("train.lr", "--set"), absent=("{tmp}/s",)),
    Case("config-tune-bad-set", "config", "tune {exp} --trials 2 --study-dir {tmp}/s --set train.epocs=1", ("unknown key 'train.epocs'",), absent=("{tmp}/s",)),
    Case("out-tune-study-a-file", "output", "tune {exp} --trials 2 --study-dir {data}/test.csv", ("--study-dir", "not a folder"), unchanged=("{data}/test.csv",)),
]

# every damaged run directory, through each command that loads a run
_BROKEN_EXPECT = {
    "weights_truncated": ("model.safetensors", "bytes", "manifest.json"),
    "weights_randomised": ("model.safetensors", "sha256"),
    "weights_missing": ("model.safetensors", "missing"),
    "weights_empty": ("model.safetensors",),
    "schema_truncated": ("schema.json",),
    "schema_edited": ("schema.json", "manifest.json"),
    "schema_missing": ("schema.json", "missing"),
    "config_edited": ("config.yaml", "manifest.json"),
    "config_not_yaml": ("config.yaml",),
    "config_missing": ("no config.yaml",),
    "metrics_edited": ("metrics.json", "manifest.json"),
    "manifest_missing": ("manifest.json", "did not finish"),
    "manifest_damaged": ("manifest.json", "damaged"),
    "manifest_future": ("manifest.json", "format 99"),
    "provenance_damaged": ("provenance.json", "damaged"),
    "unfinished": ("manifest.json", "did not finish"),
    "legacy_weights_truncated": ("model.safetensors",),
    "legacy_weights_empty": ("model.safetensors",),
    "legacy_schema_truncated": ("schema.json",),
    "legacy_config_edited": ("model.safetensors", "tensor '", "the model of config.yaml/schema.json has"),
    "legacy_provenance_damaged": ("provenance.json", "damaged"),
    "blocks_stale_base": ("blocks/index.json", "another base"),
    "blocks_index_damaged": ("blocks/index.json", "damaged"),
    "blocks_file_missing": ("blocks/", "missing"),
    "blocks_file_randomised": ("blocks/", "sha256"),
    "blocks_index_unknown_format": ("blocks/index.json", "format"),
}
_DATA = {"{legacy}": "{legacy_data}"}
for _name, (_source, _edits) in BROKEN_RUNS.items():
    _data = _DATA.get(_source, "{data}/validation.csv" if _name.startswith("blocks") else "{data}/test.csv")
    _commands = [("predict", f"predict {{broken}}/{_name} --data {_data} {P}", ("{tmp}/p.csv",))]
    if not _name.startswith("blocks"):
        _commands += [
            ("evaluate", f"evaluate {{broken}}/{_name} --data {_data} {M}", ("{tmp}/m.json",)),
            ("export", f"export {{broken}}/{_name} --format torchscript --out {{tmp}}/m.pt", ("{tmp}/m.pt",)),
        ]
    if _source == "{run}" or (_name.startswith("blocks") and _name != "blocks_file_randomised"):  # re-adapting every group repairs that one
        _commands.append(("adapt", f"adapt {{broken}}/{_name} --data {{data}}/validation.csv --out {{tmp}}/a", ("{tmp}/a",)))
    if _name in ("weights_randomised", "schema_edited", "manifest_missing", "legacy_weights_truncated"):
        _commands.append(("serve", f"serve {{broken}}/{_name} --port 0", ()))
    for _command, _argv, _absent in _commands:
        CORPUS.append(Case(f"rundir-{_name}-{_command}", "rundir", _argv, _BROKEN_EXPECT[_name], absent=_absent))


# ----------------------------------------------------------------------------------- the service
@dataclass(frozen=True)
class Request:
    """A bad request to the service of ``run`` (``run``: no panel; ``prun``: panel data, with a
    history store). ``body(ok)`` builds it from valid parts (``ok["row"]``, ``ok["row2"]``: rows
    to score; ``ok["ctx"]``: a history row of ``ok["row"]``'s unit, earlier); a ``str`` is sent
    as it is (JSON that ``json.dumps`` would not write). ``field``: the exact ``errors[0].field``."""

    id: str
    kind: str  # numbers | scenario | json | history
    run: str
    path: str
    body: Callable[[dict], object]
    field: str
    expect: tuple[str, ...] = ()
    status: int = 422


def literal(row: dict, key: str, text: str) -> str:
    """``row`` as JSON with ``key``'s value written as the raw ``text`` (``NaN``, ``Infinity``, ``1e400``)."""
    return json.dumps({**row, key: "@@"}).replace('"@@"', text)


def twice(row: dict, key: str, value) -> str:
    """``row`` as JSON with ``key`` given a second time (``json.dumps`` cannot write that)."""
    return json.dumps(row)[:-1] + f", {json.dumps(key)}: {json.dumps(value)}}}"


def body(*rows: str, top: str = "rows", **parts: str) -> str:
    """A body from JSON texts of rows (and of other parts: ``context=...``)."""
    items = [f'"{top}": [{", ".join(rows)}]', *(f'"{k}": {v}' for k, v in parts.items())]
    return "{" + ", ".join(items) + "}"


PR, OB = "/v1/predict", "/v1/observe"
REQUESTS: list[Request] = [
    # numbers: the rules of data/validate.py (numeric_rules, number_problem), by row and column
    Request("serve-log1p-negative", "numbers", "run", PR, lambda ok: {"rows": [ok["row"], {**ok["row"], "price": -3.5}]}, "rows[1].price", ("log1p", ">= 0", "-3.5")),
    Request("serve-log1p-huge", "numbers", "run", PR, lambda ok: {"rows": [{**ok["row"], "price": 1e39}]}, "rows[0].price", ("float32",)),
    Request("serve-dense-huge", "numbers", "run", PR, lambda ok: {"rows": [ok["row"], ok["row2"], {**ok["row"], "user_age": 1e300}]}, "rows[2].user_age", ("float32", "1e+300")),
    Request("serve-dense-neg-huge", "numbers", "run", PR, lambda ok: {"rows": [{**ok["row"], "user_age": -4e38}]}, "rows[0].user_age", ("float32",)),
    Request("serve-dense-far", "numbers", "run", PR, lambda ok: {"rows": [ok["row"], {**ok["row"], "user_age": 3e38}]}, "rows[1]", ("non-finite prediction",)),
    Request("serve-dense-nan", "numbers", "run", PR, lambda ok: body(literal(ok["row"], "user_age", "NaN")), "rows[0].user_age", ("NaN", "finite")),
    Request("serve-dense-infinity", "numbers", "run", PR, lambda ok: body(json.dumps(ok["row"]), literal(ok["row"], "price", "Infinity")), "rows[1].price", ("Infinity",)),
    Request("serve-dense-neg-infinity", "numbers", "run", PR, lambda ok: body(literal(ok["row"], "user_age", "-Infinity")), "rows[0].user_age", ("-Infinity",)),
    Request("serve-dense-1e400", "numbers", "run", PR, lambda ok: body(literal(ok["row"], "user_age", "1e400")), "rows[0].user_age", ("1e400", "finite")),
    Request("serve-nan-in-ignored-column", "numbers", "run", PR, lambda ok: body(literal(ok["row"], "click", "NaN")), "rows[0].click", ("NaN",)),
    Request("serve-nan-in-bare-list", "numbers", "run", PR, lambda ok: "[" + literal(ok["row"], "price", "NaN") + "]", "rows[0].price", ("NaN",)),
    Request("serve-nan-nested", "numbers", "run", PR, lambda ok: body(literal(ok["row"], "meta", '{"a": [1, NaN]}')), "rows[0].meta.a[1]", ("NaN",)),
    Request("serve-attribute-log1p-negative", "numbers", "prun", PR, lambda ok: {"rows": [{**ok["row"], "traffic_volume": -10.0}]}, "rows[0].traffic_volume", ("log1p", ">= 0")),
    Request("serve-attribute-huge", "numbers", "prun", PR, lambda ok: {"rows": [{**ok["row"], "traffic_volume": 1e300}]}, "rows[0].traffic_volume", ("float32",)),
    Request("serve-row-metric-huge", "numbers", "prun", PR, lambda ok: {"rows": [{**ok["row"], "impressions": 1e300}]}, "rows[0].impressions", ("float32",)),
    # the one scenario rule (data/validate.py: scenario_problem)
    Request("serve-scenario-null", "scenario", "run", PR, lambda ok: {"rows": [ok["row"], {**ok["row"], "scenario": None}]}, "rows[1].scenario", ("missing scenario",)),
    Request("serve-scenario-empty", "scenario", "run", PR, lambda ok: {"rows": [{**ok["row"], "scenario": ""}]}, "rows[0].scenario", ("missing scenario",)),
    Request("serve-scenario-blank", "scenario", "run", PR, lambda ok: {"rows": [{**ok["row"], "scenario": "  "}]}, "rows[0].scenario", ("missing scenario",)),
    Request("serve-scenario-unseen", "scenario", "run", PR, lambda ok: {"rows": [ok["row"], ok["row2"], {**ok["row"], "scenario": "tv_ads"}]}, "rows[2].scenario", ("'tv_ads'", "not seen in training")),
    Request("serve-scenario-unseen-int", "scenario", "run", PR, lambda ok: {"rows": [{**ok["row"], "scenario": 7}]}, "rows[0].scenario", ("7", "not seen in training")),
    Request("serve-scenario-null-with-attributes", "scenario", "prun", PR, lambda ok: {"rows": [{**ok["row"], "scenario": None}]}, "rows[0].scenario", ("missing scenario",)),
    # duplicate keys (object_pairs_hook)
    Request("serve-duplicate-key-in-row", "json", "run", PR, lambda ok: body(json.dumps(ok["row"]), twice(ok["row"], "price", 3.0)), "rows[1].price", ("duplicate key",)),
    Request("serve-duplicate-scenario", "json", "run", PR, lambda ok: body(twice(ok["row"], "scenario", "feed")), "rows[0].scenario", ("duplicate key",)),
    Request("serve-duplicate-key-bare-list", "json", "run", PR, lambda ok: "[" + twice(ok["row"], "user_id", "u1") + "]", "rows[0].user_id", ("duplicate key",)),
    Request("serve-duplicate-top-level", "json", "run", PR, lambda ok: body(json.dumps(ok["row"])) [:-1] + f', "rows": [{json.dumps(ok["row2"])}]}}', "rows", ("duplicate key",)),
    Request("serve-duplicate-in-ignored-value", "json", "run", PR, lambda ok: body(literal(ok["row"], "meta", '{"a": 1, "a": 2}')), "rows[0].meta.a", ("duplicate key",)),
    # history rows: the same rules as a --context file or `msmt history load`
    Request("serve-context-metric-huge", "history", "prun", PR, lambda ok: {"rows": [ok["row"]], "context": [{**ok["ctx"], "clicks": 1e300}]}, "context[0].clicks", ("float32",)),
    Request("serve-context-nan", "history", "prun", PR, lambda ok: body(json.dumps(ok["row"]), context="[" + literal(ok["ctx"], "cost", "NaN") + "]"), "context[0].cost", ("NaN",)),
    Request("serve-context-duplicate-key", "history", "prun", PR, lambda ok: body(json.dumps(ok["row"]), context="[" + twice(ok["ctx"], "day", 3) + "]"), "context[0].day", ("duplicate key",)),
    Request("serve-observe-metric-huge", "history", "prun", OB, lambda ok: {"observations": [ok["ctx"], {**ok["ctx"], "impressions": 4e38}]}, "observations[1].impressions", ("float32",)),
    Request("serve-observe-nan-bare-list", "history", "prun", OB, lambda ok: "[" + literal(ok["ctx"], "clicks", "NaN") + "]", "observations[0].clicks", ("NaN",)),
    Request("serve-observe-duplicate-key", "history", "prun", OB, lambda ok: body(twice(ok["ctx"], "cost", 1.0), top="observations"), "observations[0].cost", ("duplicate key",)),
]
