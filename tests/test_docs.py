"""The docs stay true: every repository path, command and metric name they mention exists.

Read from README.md, docs/*.md and .env.example: relative links and paths in
backquotes must exist in the repository; ``cache-pipeline <command>`` and
``python -m cache_pipeline.dev <command>`` must be commands of those command lines;
``make <target>`` a target of the Makefile; ``python -m <module>`` an importable
module of the repository; every ``persistent_cache_*`` metric a name the service
declares (``cache_pipeline/ops/metrics.py``, with Prometheus' suffixes).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from cache_pipeline.cli.main import cli
from cache_pipeline.dev.cli import dev
from cache_pipeline.ops import metrics

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / ".env.example"]
TOP = ("cache_pipeline/", "tests/", "bench/", "deploy/", "charts/", "docs/", "scripts/", ".ci/")
PATH = re.compile(r"`((?:" + "|".join(re.escape(t) for t in TOP) + r")[^`\s]*?)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# Commands as written in code (a line or a backquoted span starting with the command).
COMMAND = re.compile(r"(?:^|`|\$ )cache-pipeline ([a-z][a-z-]+)", re.M)
DEV_COMMAND = re.compile(r"python -m cache_pipeline\.dev ([a-z][a-z-]+)")
MAKE = re.compile(r"(?:^|`|\$ )make ([a-z][a-z-]+)", re.M)
MODULE = re.compile(r"python -m ((?:bench|cache_pipeline|tests)(?:\.\w+)*)")
METRIC = re.compile(r"\bpersistent_cache_[a-z_]+")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created", "_info")


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def mentioned(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    return [
        (path.name, match.group(1)) for path in DOCS for match in pattern.finditer(text_of(path))
    ]


def exists(relative: str) -> bool:
    cleaned = relative.rstrip(".,:;)").split("::")[0]
    if any(char in cleaned for char in "*<>{}"):
        return True  # a pattern, not a path
    return (ROOT / cleaned).exists()


def test_paths_in_the_docs_exist() -> None:
    missing = [(doc, path) for doc, path in mentioned(PATH) if not exists(path)]
    assert missing == []


def test_relative_links_resolve() -> None:
    missing = []
    for path in DOCS:
        for match in LINK.finditer(text_of(path)):
            target = match.group(1)
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                missing.append((path.name, target))
    assert missing == []


def test_commands_exist() -> None:
    unknown = [(doc, name) for doc, name in mentioned(COMMAND) if name not in cli.commands]
    assert unknown == []
    unknown = [(doc, name) for doc, name in mentioned(DEV_COMMAND) if name not in dev.commands]
    assert unknown == []


def test_make_targets_exist() -> None:
    makefile = text_of(ROOT / "Makefile")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    unknown = [(doc, target) for doc, target in mentioned(MAKE) if target not in targets]
    assert unknown == []


@pytest.mark.parametrize("module", sorted({name for _, name in mentioned(MODULE)}))
def test_modules_run_with_python_m_exist(module: str) -> None:
    assert importlib.util.find_spec(module) is not None, module


def declared_metrics() -> set[str]:
    names: set[str] = set()
    for value in vars(metrics).values():
        name = getattr(value, "_name", None) or (value if isinstance(value, str) else None)
        if isinstance(name, str) and name.startswith("persistent_cache_"):
            names.add(name)
    return names


def test_metric_names_in_the_docs_are_declared() -> None:
    declared = declared_metrics()
    unknown = []
    for doc, name in [(d, m.group(0)) for d in DOCS for m in METRIC.finditer(text_of(d))]:
        base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        if name not in declared and base not in declared:
            unknown.append((doc.name, name))
    assert unknown == []


def test_every_declared_metric_is_in_the_observability_tables() -> None:
    documented = text_of(ROOT / "docs" / "observability.md")
    missing = sorted(
        name for name in declared_metrics() if name.removesuffix("_total") not in documented
    )
    assert missing == []
