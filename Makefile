# The two commands in README.md are `make demo` and `make test`; both install
# what they need into .venv first and are safe to run again.
VENV ?= .venv
PY := $(VENV)/bin/python
# Extras installed for each goal (see pyproject.toml).
DEMO_EXTRAS ?= train,export,runtime,serve,play,envs,video
TEST_EXTRAS ?= dev,train,export,runtime,serve,play,capture,envs,video
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: demo bench test lint typecheck pytest install install-dev clean

# One stamp per extras set; it goes stale when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml tools/install.sh
	bash tools/install.sh $*
	touch $@

install: $(VENV)/.installed-$(DEMO_EXTRAS)
install-dev: $(VENV)/.installed-$(TEST_EXTRAS)

# Record Doom, train, evaluate, export, serve, report (runs/demo/report.html); then play.
demo: install
	$(PY) -m demo $(DEMO_ARGS)

# Every stage beside its alternatives, one run; figures in runs/bench/bench.json.
bench: install
	$(PY) -m benchmarks $(BENCH_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: install-dev
	$(VENV)/bin/mypy

pytest: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
