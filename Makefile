# Contributor commands. `make install` once, then `make test` / `make lint`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test image-test lint format run bench clean

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

# The worker's extra and the dev tools (the bare package is only the reader SDK).
install: $(PY)
	$(VENV)/bin/pip install --quiet -e '.[worker,dev]'
	npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error >/dev/null

# The whole stack on this machine without Docker: Redis, SQS (moto), the edge stub, the worker
# and a demo feed; Ctrl-C stops it. Installs first when the venv lacks the project (fresh clone).
run: $(PY)
	@$(PY) -c 'import importlib.metadata as m, moto, celery; m.version("cache-pipeline")' \
		2>/dev/null || $(MAKE) install
	$(PY) -m cache_pipeline.devstack $(RUN_ARGS)

# The whole suite, the image test included (it needs podman, runc and debootstrap: see .ci/run).
test: $(PY)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Only the image: build it with podman and run it hardened against the suite's servers.
image-test: $(PY)
	$(VENV)/bin/pytest -m image tests/test_image.py $(PYTEST_ARGS)

lint: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(PY)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# End-to-end figures against SQS_ENDPOINT_URL (LocalStack is started when unset) and an own
# redis-server; docs/benchmarks.md explains them. Example: make bench BENCH_ARGS="--rounds 3".
BENCH_ARGS ?=
bench: $(PY)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
