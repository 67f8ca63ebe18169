# Contributor commands. `make install` once, then `make test` / `make lint`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test lint format run bench clean

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

install: $(PY)
	$(VENV)/bin/pip install --quiet -e '.[dev]'

test: $(PY)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(PY)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
