# The two quick-start commands: `make run` and `make test`. Each creates .venv when it is
# missing or older than pyproject.toml / constraints.txt, so a fresh machine needs only
# Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: run test lint bench params install clean-venv pr-report sweep-table

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	dvc repro

test: $(STAMP)
	python -m pytest -q

lint: $(STAMP)
	ruff check src stages tests bench

bench: $(STAMP)
	python bench/bench_render.py
	python bench/bench_extract.py
	python bench/pretrain.py
	python bench/features.py

params: $(STAMP)
	python -m demystify.params_file

# markdown for a pull-request comment: metrics, params and plots against BASE (default main)
BASE ?= main
pr-report: $(STAMP)
	python -m demystify.report.pr_comment --base $(BASE) --out reports/pr.md

# every experiment's results (e.g. a seed sweep) as one table the report stage reads
sweep-table: $(STAMP)
	python -m demystify.report.sweep --out results/sweep/runs.csv

clean-venv:
	rm -rf $(VENV)
