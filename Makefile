# The two commands in README.md are `make demo` and `make test`; both install
# what they need into .venv first and are safe to run again.
VENV ?= .venv
PY := $(VENV)/bin/python
# Extras installed for each goal (see pyproject.toml).
DEMO_EXTRAS ?= train
TEST_EXTRAS ?= dev,train,export,serve,play,envs
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck pytest install install-dev clean

# One stamp per extras set; it goes stale when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml tools/install.sh
	bash tools/install.sh $*
	touch $@

install: $(VENV)/.installed-$(DEMO_EXTRAS)
install-dev: $(VENV)/.installed-$(TEST_EXTRAS)

demo: install
	$(PY) -m models --preset tiny

lint: install-dev
	$(VENV)/bin/ruff check .

typecheck: install-dev
	$(VENV)/bin/mypy

pytest: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
