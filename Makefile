# The two quick-start commands: `make run` and `make test`. Each creates .venv when it is
# missing or older than pyproject.toml / constraints.txt, so a fresh machine needs only
# Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: run test test-fast lint bench params install clean-venv clean-checkpoints pr-report sweep-table exp-table

# DVC's site cache inside the project, as an absolute path in the (untracked) local config: a
# relative one breaks queued experiments, which run in a temporary copy of the repository
SITE_CACHE := .dvc/config.local

install: $(STAMP) $(SITE_CACHE)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

$(SITE_CACHE): | $(STAMP)
	$(VENV)/bin/dvc config --local core.site_cache_dir $(CURDIR)/.dvc/site_cache

# first the folders of variants no longer in params.yaml: inside folders the summaries depend on,
# they would change their hash (src/demystify/tools/leftovers.py)
run: $(STAMP) $(SITE_CACHE)
	python -m demystify.tools.leftovers
	dvc repro

# two workers, one test module each (a module's tests share its fixtures, e.g. one DVC repository); the two
# end-to-end modules first, one per worker (tests/conftest.py; --no-loadscope-reorder needs pytest-xdist 3.8)
test: $(STAMP)
	python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# the inner loop: every test but the end-to-end ones (a stage, a DVC repository or a training run in
# processes of its own: marked e2e) and the statistical calibrations (slow); docs/develop.md
test-fast: $(STAMP)
	python -m pytest -q -n 2 --dist loadfile -m 'not e2e and not slow'

# the rules in pyproject.toml (an argument limit among them) and the formatter's layout
lint: $(STAMP)
	ruff check src stages tests bench
	ruff format --check src stages tests bench

# the benchmarks read the synthetic world's videos and corpora: synthesized first (or restored)
bench: $(STAMP) $(SITE_CACHE)
	dvc repro synthesize
	python bench/bench_render.py
	python bench/bench_extract.py
	python bench/pretrain.py
	python bench/features.py

params: $(STAMP)
	python -m demystify.tools.params_file

# markdown for a pull-request comment: BASE (default main) and the committed HEAD reproduced the same
# way (smoke scale, fp32) in worktrees under .pr/ sharing this DVC cache; only what differs is listed
BASE ?= main
pr-report: $(STAMP) $(SITE_CACHE)
	python -m demystify.tools.pr_comment --base $(BASE) --out reports/pr.md

# the runs of a seed sweep as one table the report stage reads: every experiment whose params but
# seeds equal the workspace's, one run per seed tuple (docs/howto.md, "A seed sweep")
sweep-table: $(STAMP) $(SITE_CACHE)
	python -m demystify.tools.sweep --out results/sweep/runs.csv

# every experiment in one narrow table: its pretraining seed and each claim's verdict
# (reports/headline.json); `dvc exp show` alone has about 670 columns. More: EXP_KEEP='pretrain\.seed|pretrain\.lr'
EXP_KEEP ?= pretrain\.seed
exp-table: $(STAMP)
	dvc exp show --no-pager --drop '.*' \
	  --keep '^(Experiment|Created)$$|^(reports/headline\.json:)?(claim[0-9]+|claims_of_record)$$|^($(EXP_KEEP))$$'

clean-venv:
	rm -rf $(VENV)

# resumable pretraining checkpoints of killed runs (a finished stage deletes its own; docs/pipeline.md)
clean-checkpoints:
	rm -rf $${DEMYSTIFY_CHECKPOINTS:-.checkpoints}/pretrain
