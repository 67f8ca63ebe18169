"""The layout's rules, checked: one installed name, concerns that depend one way, a pure core.

``cache_pipeline`` is the only top-level package. Inside it each folder names a
concern, and a concern may use only those below it (``ALLOWED``): an import or a
subprocess entry point (``python -m cache_pipeline...``, the ``cache-pipeline``
script) that points up fails here. The contract and the pipeline's pure steps load
no messaging library, AWS client or Redis client, and the reader SDK loads nothing
of the worker, not even indirectly.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cache_pipeline"
BASE = "base"  # errors, keys, config: the package's own top-level modules
# Which concerns each concern may use (besides itself and ``base``).
ALLOWED: dict[str, set[str]] = {
    BASE: set(),
    "contract": set(),
    "store": {"contract"},
    "ops": set(),
    "sqs": {"ops"},
    "client": {"contract", "store"},
    "tasks": {"contract", "store", "sqs", "ops", "api"},  # the worker serves its probes
    "api": {"store", "ops"},
    "cli": {"contract", "store", "sqs", "ops", "client", "tasks", "api"},
    "dev": {"contract", "store", "sqs", "ops", "client", "tasks", "api", "cli"},
}
PURE = [
    "cache_pipeline.contract.messages",
    "cache_pipeline.contract.plan",
    "cache_pipeline.tasks.delivery",
    "cache_pipeline.tasks.flood_window",
]
CLIENT_LIBRARIES = ("kombu", "celery", "boto3", "botocore", "redis", "fastapi", "httpx")
WORKER_ONLY = ("celery", "kombu", "boto3", "botocore", "fastapi", "loguru", "sentry_sdk")


def concern_of(module: str) -> str | None:
    """The concern of a ``cache_pipeline`` module name (None for another package)."""
    parts = module.split(".")
    if parts[0] != "cache_pipeline":
        return None
    if len(parts) == 1 or parts[1] == "__main__":
        return "cli"  # ``python -m cache_pipeline`` is the command line
    return parts[1] if (PACKAGE / parts[1]).is_dir() else BASE


def used_modules(path: Path) -> set[str]:
    """Modules a file imports (wherever the statement is) or starts as a subprocess."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.List | ast.Tuple):
            found |= entry_points(node)
    return found


def entry_points(node: ast.List | ast.Tuple) -> set[str]:
    """``[..., "-m", "cache_pipeline.x", ...]`` and ``["cache-pipeline", ...]`` in a command."""
    values = [item.value if isinstance(item, ast.Constant) else None for item in node.elts]
    found = {
        str(values[i + 1])
        for i, value in enumerate(values[:-1])
        if value == "-m" and isinstance(values[i + 1], str)
    }
    if "cache-pipeline" in values:
        found.add("cache_pipeline.cli")
    return found


def files_of(concern: str) -> list[Path]:
    if concern == BASE:
        return [path for path in PACKAGE.glob("*.py") if path.name != "__main__.py"]
    return sorted((PACKAGE / concern).rglob("*.py"))


def test_one_top_level_package() -> None:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages - {"tests", "bench"} == {"cache_pipeline"}
    assert len([path for path in PACKAGE.glob("*.py")]) <= 14  # 12 modules, __init__, __main__


@pytest.mark.parametrize("concern", sorted(ALLOWED))
def test_concerns_depend_one_way(concern: str) -> None:
    allowed = ALLOWED[concern] | {concern, BASE}
    wrong = {
        str(path.relative_to(ROOT)): sorted(
            module
            for module in used_modules(path)
            if concern_of(module) is not None and concern_of(module) not in allowed
        )
        for path in files_of(concern)
    }
    assert {path: modules for path, modules in wrong.items() if modules} == {}


def test_the_checker_sees_subprocess_entry_points() -> None:
    """An upward subprocess (the local stack starting the command line) counts as a use."""
    stack = PACKAGE / "dev" / "devstack" / "stack.py"
    assert {"cache_pipeline", "cache_pipeline.dev"} <= used_modules(stack)
    assert concern_of("cache_pipeline") == "cli"


def test_the_test_oracles_are_not_shipped() -> None:
    for oracle in ("model.py", "snapshot.py"):
        assert not list(PACKAGE.rglob(oracle))
        assert (ROOT / "tests" / "support" / oracle).exists()


def loaded_by(*modules: str) -> set[str]:
    """Top-level packages loaded by importing ``modules`` in a fresh interpreter."""
    script = (
        "import json, sys\n"
        + "".join(f"import {module}\n" for module in modules)
        + "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout))


def test_the_pure_steps_load_no_client_library() -> None:
    assert sorted(loaded_by(*PURE) & set(CLIENT_LIBRARIES)) == []


def test_the_reader_sdk_loads_nothing_of_the_worker() -> None:
    assert sorted(loaded_by("cache_pipeline", "cache_pipeline.client") & set(WORKER_ONLY)) == []
