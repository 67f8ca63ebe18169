# Contributor commands. `make install` once, then `make test` / `make lint`.
#
# Installs come from uv.lock (hash-checked): the same versions on every machine until
# `make lock` refreshes it. uv itself is bootstrapped into .tools/ from requirements-uv.txt
# (pip --require-hashes). docs/development.md explains the lock, the floors and the upgrades.
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
UV := $(TOOLS)/bin/uv
PYTEST_ARGS ?=
# uv uses the machine's python3 and never downloads an interpreter.
export UV_PYTHON ?= python3
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install lock test test-latest test-floor image-test lint format generate run bench clean

$(UV): requirements-uv.txt
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --require-hashes -r requirements-uv.txt
	@touch $(UV)

# The worker's extra and the dev group, exactly as uv.lock says (fails if the lock is stale).
# Bytecode is compiled as in the image: without .pyc files (PYTHONDONTWRITEBYTECODE=1 on many
# machines) every start compiles in memory, and the worker's RSS is 5-8 MB above production's.
install: $(UV)
	$(UV) sync --locked --extra worker --compile-bytecode
	$(PY) -m compileall -q cache_pipeline
	npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error >/dev/null

# Re-resolve every dependency to the newest release the ranges of pyproject.toml allow.
lock: $(UV)
	$(UV) lock --upgrade

$(PY):
	$(MAKE) install

# The whole stack on this machine without Docker: Redis, SQS (moto), the edge stub, the worker
# and a demo feed; Ctrl-C stops it. Installs from the lock first when the venv lacks the project.
run: $(PY)
	@$(PY) -c 'import importlib.metadata as m, moto, celery; m.version("cache-pipeline")' \
		2>/dev/null || $(MAKE) install
	$(PY) -m cache_pipeline.dev stack $(RUN_ARGS)

# The whole suite, the image test included (it needs podman, runc and debootstrap: see .ci/run).
test: $(PY)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The suite against the newest release every range allows, in a scratch venv (.venv-latest):
# what the next `make lock` would break. LATEST_TESTS narrows it (default: all but the image).
LATEST_TESTS ?= -m 'not image and not lock'
test-latest: $(UV)
	rm -rf .venv-latest
	$(UV) venv --quiet .venv-latest
	VIRTUAL_ENV=.venv-latest $(UV) pip install --quiet --upgrade -e '.[worker]' --group dev
	@echo "Newer than uv.lock:"
	@VIRTUAL_ENV=.venv-latest $(UV) pip freeze --quiet --exclude-editable | sort >.venv-latest/freeze.txt
	@$(UV) export --quiet --frozen --no-hashes --no-emit-project --extra worker \
		| grep '==' | sed 's/ *;.*//' | sort >.venv-latest/locked.txt
	@comm -13 .venv-latest/locked.txt .venv-latest/freeze.txt | sed 's/^/  /'
	npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error >/dev/null
	.venv-latest/bin/pytest $(LATEST_TESTS) $(PYTEST_ARGS)

# The reader SDK's tests at the lowest versions its ranges allow (redis, pydantic, ... at their
# floors; everything else resolved around them), in a scratch venv (.venv-floor).
SDK_TESTS ?= tests/test_client*.py tests/test_keys.py tests/test_sdk_package.py
test-floor: $(UV)
	rm -rf .venv-floor
	$(UV) venv --quiet .venv-floor
	$(UV) pip compile --quiet --resolution lowest-direct --no-header pyproject.toml \
		-o .venv-floor/floor.txt
	@echo "SDK floors:"; grep -E '^(redis|hiredis|pydantic|pydantic-core|pydantic-settings|httpx)==' \
		.venv-floor/floor.txt | sed 's/^/  /'
	VIRTUAL_ENV=.venv-floor $(UV) pip install --quiet -r .venv-floor/floor.txt
	VIRTUAL_ENV=.venv-floor $(UV) pip install --quiet -c .venv-floor/floor.txt \
		-e '.[worker]' --group dev
	npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error >/dev/null
	.venv-floor/bin/pytest $(SDK_TESTS) $(PYTEST_ARGS)

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

# The sync reader (cache_pipeline/client/sync.py) from the asyncio one (aio.py), with unasync;
# tests/test_client_generated.py fails while the committed sync.py differs from it.
generate: $(PY)
	$(PY) scripts/unasync_client.py

# End-to-end figures against SQS_ENDPOINT_URL (LocalStack is started when unset) and an own
# redis-server; docs/benchmarks.md explains them. Example: make bench BENCH_ARGS="--rounds 3".
BENCH_ARGS ?=
bench: $(PY)
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-latest .venv-floor $(TOOLS) .mypy_cache .pytest_cache .ruff_cache .hypothesis
