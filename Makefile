# Two commands on a fresh clone: `make demo` and `make test`.
# CPU torch is pinned through constraints/cpu.txt so pip never pulls CUDA wheels here.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
MSMT   := $(VENV)/bin/msmt
STAMP  := $(VENV)/.installed

.PHONY: install demo test clean

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -c constraints/cpu.txt -e '.[test,serve,export]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf demo
	$(MSMT) synth simple --out demo/data --seed 0
	$(MSMT) train demo/data/experiment.yaml --out demo/run
	@echo "report: demo/run/report.md"

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo runs .pytest_cache
