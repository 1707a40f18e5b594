# Two commands on a fresh clone: `make demo` and `make test`.
# CPU torch is pinned through constraints/cpu.txt so pip never pulls CUDA wheels here.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
MSMT   := $(VENV)/bin/msmt
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint wheel-check mutation-check clean

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -c constraints/cpu.txt -e '.[test,serve,export,tune]'
	touch $(STAMP)

install: $(STAMP)

# The advertiser simulator (docs/architecture.md "Advertiser simulator"): per scenario and task,
# the model next to the oracle (true expected values) on the test days and on the new scenario;
# then what a practitioner would try first (yesterday's value, the trailing mean) beside M2M and
# the oracle (msmt bench, one seed: the NMAE and AUC tables of its leaderboard).
demo: $(STAMP)
	rm -rf demo
	$(MSMT) synth advertiser --out demo/data --advertisers 300 --days 60 --seed 0
	$(MSMT) train demo/data/experiment.yaml --out demo/run --quiet
	@echo "\nnew scenario (never seen in training), model (oracle):\n"
	$(MSMT) evaluate demo/run --data demo/data/new_scenario.csv --out demo/run/new_scenario_metrics.json
	$(MSMT) bench --datasets advertiser=demo/data/experiment.yaml --models naive_last --models naive_mean \
		--models logistic_regression --model-set logistic_regression:model.history_summary=true --models m2m --seeds 1 --out demo/bench
	@echo "\nthe naive forecasts and a logistic regression on the history summary beside M2M and the oracle (test split; demo/bench/leaderboard.md):\n"
	@awk '/^\*\*/ { show = ($$0 ~ /nmae|auc/) } show' demo/bench/leaderboard.md
	@echo "report: demo/run/report.md; cross-scenario correlations: demo/data/plots/scenario_correlation.png"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# One pytest worker per core (pytest-xdist), one torch thread per worker: the suite is many small
# single-threaded tests, so two workers on two cores take about half the time of one two-thread run.
# The tests marked slow are collected first (tests/conftest.py) and an idle worker takes half of the
# other's queue (worksteal), so both end on short tests at about the same time.
test: $(STAMP) lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist worksteal

# The wheel in a clean virtualenv with no extras: --help, --version, synth -> train -> predict
# (.ci/wheel-check; about 80 s on 2 cores, most of it installing torch into the new venv).
wheel-check: $(STAMP)
	PY=$(PY) PYTHON=$(PYTHON) .ci/wheel-check

# Break each mechanism of tests/mutations.yaml in a copy of the working tree and check its proof tests fail
# (.ci/mutation_check.py; about 1.5 h on 2 cores; not part of `make test`).
mutation-check: $(STAMP)
	$(PY) .ci/mutation_check.py

clean:
	rm -rf $(VENV) demo runs .pytest_cache
