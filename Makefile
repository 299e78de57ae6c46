# The README's commands, by name. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help install up test test-fast lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV):
	python3 -m venv $(VENV)

install: $(VENV)  ## install bulksms and its development tools into .venv
	$(VENV)/bin/pip install -q -e '.[dev]'

up: install  ## run everything on this machine (Redis, web, worker, Flower, sandbox)
	$(VENV)/bin/bulksms up

test: install  ## run the whole test suite (tests/unit and tests/integration)
	$(PY) -m pytest

test-fast: install  ## the unit tests only: no processes, well under a minute
	$(PY) -m pytest tests/unit

bench: install  ## benchmarks against floors measured in the same run (bench/RESULTS.md)
	$(PY) -m bench.run

lint: install  ## ruff and mypy
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

clean:  ## remove the virtual environment and caches (keeps data/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
