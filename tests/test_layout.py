"""The layout's rules, checked: dependencies point one way and the batch core is pure.

``cache_pipeline`` (the core) imports neither ``api``, ``tasks`` nor ``cli``;
``api`` and ``tasks`` never import ``cli`` (the command line sits on top); the
test oracles live under ``tests/``; and the batch algorithm imports no
messaging library, no AWS client and no Redis client, not even indirectly.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"cache_pipeline": {"api", "tasks", "cli"}, "api": {"cli"}, "tasks": {"cli"}}
PURE = ["cache_pipeline.batch", "cache_pipeline.plan", "cache_pipeline.envelope"]
NOT_IN_THE_CORE = ("kombu", "celery", "boto3", "botocore", "redis", "fastapi", "httpx")


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports (wherever the import statement is)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_dependencies_point_one_way(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & LAYERS[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_test_oracles_are_not_shipped() -> None:
    for oracle in ("reference.py", "snapshot.py"):
        assert not (ROOT / "cache_pipeline" / oracle).exists()
        assert (ROOT / "tests" / "support" / oracle).exists()


def test_the_batch_core_loads_no_client_library() -> None:
    script = (
        "import json, sys\n"
        + "".join(f"import {module}\n" for module in PURE)
        + "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    )
    assert sorted(set(loaded) & set(NOT_IN_THE_CORE)) == []
