"""The suite's own environment is exactly what uv.lock pins: `make install` installs the lock."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Collection

import pytest
from packaging.utils import canonicalize_name

from tests.support.lock import locked_versions

# `make test-latest` and `make test-floor` run on purpose in environments that differ.
pytestmark = pytest.mark.lock


def installed_versions(locked: Collection[str]) -> dict[str, str]:
    found = {
        str(canonicalize_name(dist.metadata["Name"])): dist.version
        for dist in importlib.metadata.distributions()
    }
    # The project itself, and what a venv made by `python -m venv` seeds, unless locked.
    for name in {"cache-pipeline", "pip", "setuptools", "wheel"} - set(locked):
        found.pop(name, None)
    return found


def test_the_environment_equals_the_lock() -> None:
    locked = locked_versions(extras=("worker",), dev=True)
    installed = installed_versions(locked)
    differ = {
        name: (locked.get(name), installed.get(name))
        for name in locked.keys() | installed.keys()
        if locked.get(name) != installed.get(name)
    }
    assert not differ, f"(locked, installed) differ; run `make install`: {differ}"
