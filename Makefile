# The two quick-start commands: `make run` and `make test`. Each creates .venv when it is
# missing or older than pyproject.toml / constraints.txt, so a fresh machine needs only
# Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: run test lint bench params install clean-venv

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

params: $(STAMP)
	python -m demystify.params_file

clean-venv:
	rm -rf $(VENV)
