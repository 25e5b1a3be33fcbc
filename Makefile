# hierbench: every target does its own set-up (virtual environment, pinned dependencies, native
# build), so `make test` and `make reproduce` work as single commands on a fresh machine.
#   make reproduce   the main job          make test     the test suite (what CI runs)
#   make bench       pytest-benchmark (one JSON per run)   make lint   ruff check + format
#   make gpu-check   CUDA build + tests + GPU benchmarks (on a machine with a GPU)
#   make wheel       the reuse wheel -> dist/ (C++ only; HIERBENCH_CUDA=1 adds CUDA), timed
#   make reuse-check the wheel in a fresh venv with only its dependencies + the example (CI)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
EXT    := $(VENV)/.ext-built
PRESET ?= quick
# `make reproduce` regenerates results/$(PRESET) in place (git diff shows what changed);
# REPRODUCE_FLAGS=--resume continues an interrupted run instead.
REPRODUCE_FLAGS ?= --overwrite

.PHONY: all setup build test reproduce readme-results bench lint format gpu-check clean \
	wheel reuse-check

all: test

$(DEPS): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(DEPS)

# Rebuild the extension when any native source or the build script changes.
$(EXT): $(DEPS) setup.py $(shell find csrc -type f 2>/dev/null)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

build: $(EXT)

test: $(EXT)
	$(PY) -m pytest -q --durations=25

reproduce: $(EXT)
	$(VENV)/bin/hierbench reproduce --preset $(PRESET) $(REPRODUCE_FLAGS)
	@if [ "$(PRESET)" = quick ]; then $(MAKE) --no-print-directory readme-results; fi

# The README's results block, generated from the committed results folders.
readme-results: $(DEPS)
	$(VENV)/bin/hierbench report --readme-only --readme README.md \
	    $(wildcard results/quick results/accuracy results/paper)

# One JSON per run, never overwritten: results/bench/<UTC start>_<cpu>_<git sha>[-dirty]_<SUITE>.json
# (benchmarks/record.py), with the load average at the start and the end. E.g.
#   make bench BENCH=benchmarks/bench_quant.py SUITE=quant
BENCH ?= benchmarks
SUITE ?= all
bench: $(EXT)
	$(PY) -m pytest $(BENCH) -q -p no:cacheprovider --bench-save=$(SUITE)

lint: $(DEPS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(DEPS)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

gpu-check:
	bash scripts/gpu_check.sh

# Built out of tree (a temporary copy of the sources), checked (pinned torch, core dependencies
# only, LICENSE, py.typed, no debug sections); prints the build time and the sizes.
# WHEEL_FLAGS=--record results/wheel/FILE.json keeps the measurements.
wheel: $(DEPS)
	$(PY) scripts/build_wheel.py --out dist $(WHEEL_FLAGS)

reuse-check: wheel
	PYTHON=$(PYTHON) bash scripts/reuse_check.sh

clean:
	rm -rf build dist hierbench/_C*.so $(EXT)
