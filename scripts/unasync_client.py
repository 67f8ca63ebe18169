"""Writes ``cache_pipeline/client/sync.py`` from ``cache_pipeline/client/aio.py``.

The sync reader is the asyncio one without ``async``/``await``, with each asyncio name
replaced by its sync counterpart (unasync), the sync reader's own docstrings where the
asyncio one points to them, imports sorted and formatted by ruff, and a header saying so.

    python scripts/unasync_client.py          # write sync.py (make generate)
    python scripts/unasync_client.py --check  # exit 1, with a diff, when sync.py differs
"""

from __future__ import annotations

import argparse
import ast
import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path("cache_pipeline/client/aio.py")
TARGET = Path("cache_pipeline/client/sync.py")
HEADER = (
    f"# Generated from {SOURCE} by `make generate` (scripts/unasync_client.py).\n"
    "# Do not edit: edit aio.py (the sync docstrings: SYNC_DOCSTRINGS there), then regenerate.\n"
)

# asyncio name -> sync name; unasync also drops async/await and maps __aenter__/__aexit__.
REPLACEMENTS = {
    "AsyncEntitlementsCache": "EntitlementsCache",
    "AsyncClusterGate": "ClusterGate",
    "AsyncEdgeClient": "EdgeClient",
    "AsyncRedisClient": "RedisClient",
    "AsyncClient": "Client",  # httpx
    "connect_async": "connect",
    "fetch_with_global_async": "fetch_with_global",
    "aclose": "close",
    "asyncio": "time",  # from asyncio import sleep
}

# The sync reader's docstrings, by qualified name ("" is the module), where aio.py's differ.
SYNC_DOCSTRINGS = {
    "": "``EntitlementsCache``: the synchronous reader SDK (redis-py, httpx).",
    "EntitlementsCache": """\
Entitlement checks from the Redis cache, with Stigg's Edge API behind it.

``EntitlementsCache()`` reads the settings from the environment (REDIS_*,
ENVIRONMENT_PREFIX, KEYS_TTL_IN_SECS, EDGE_API_URL, SERVER_API_KEY,
REDIS_CLUSTER); keyword arguments named like the settings (``redis_host=``,
``environment_prefix=``, ...) override them, and ``redis=``/``http=`` take
ready-made clients. The getters answer as Stigg's Node SDK 3.95.0 does from the
same Redis. A hit is one Redis round trip; a miss asks the Edge API once per scope
across threads and processes, writes the answer back as Stigg's SDK would and
answers from it; when neither can answer, the getter's fallback. Bad arguments
raise ``InvalidArgument`` (a ``ValueError``) before any I/O.
""",
    "EntitlementsCache.get_boolean_entitlement": "Stigg's ``getBooleanEntitlement``.",
    "EntitlementsCache.get_numeric_entitlement": (
        "Stigg's ``getNumericEntitlement``: ``value`` is the limit."
    ),
    "EntitlementsCache.get_metered_entitlement": (
        "Stigg's ``getMeteredEntitlement``: may ``requested_usage`` more be used."
    ),
    "EntitlementsCache.get_enum_entitlement": (
        "Stigg's ``getEnumEntitlement``: are all ``requested_values`` allowed."
    ),
    "EntitlementsCache.get_entitlement": (
        "Stigg's untyped ``getEntitlement``: the answer's type follows the feature's."
    ),
    "EntitlementsCache.get_entitlements": (
        "Stigg's ``getEntitlements``: every entitlement of the customer (scope)."
    ),
    "EntitlementsCache.get_credit_entitlement": (
        "The credit balance of ``currency_id`` and whether ``requested_amount`` fits it."
    ),
}


def generate() -> str:
    """What sync.py must hold, from aio.py as it is now."""
    code = with_docstrings(unasynced(ROOT / SOURCE), SYNC_DOCSTRINGS)
    code = ruff(["check", "--select", "I", "--fix", "--exit-zero", "--quiet"], code)
    return HEADER + ruff(["format", "--quiet"], code)


def unasynced(source: Path) -> str:
    """``source`` through unasync with ``REPLACEMENTS``."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch, "_async", source.name)
        copy.parent.mkdir()
        copy.write_text(source.read_text())
        rule = unasync.Rule("/_async/", "/_sync/", additional_replacements=REPLACEMENTS)
        unasync.unasync_files([str(copy)], [rule])
        return Path(scratch, "_sync", source.name).read_text()


def with_docstrings(code: str, docstrings: dict[str, str]) -> str:
    """``code`` with the docstrings of the definitions named in ``docstrings`` replaced."""
    lines = code.splitlines(keepends=True)
    found = sorted(_docstring_nodes(ast.parse(code), docstrings), key=lambda f: -f[1].lineno)
    missing = set(docstrings) - {name for name, _ in found}
    if missing:
        raise SystemExit(f"{SOURCE} has no docstring for {sorted(missing)}")
    for name, node in found:
        indent = " " * node.col_offset
        lines[node.lineno - 1 : node.end_lineno] = [_literal(docstrings[name], indent)]
    return "".join(lines)


Documented = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def _docstring_nodes(tree: ast.Module, wanted: dict[str, str]) -> list[tuple[str, ast.stmt]]:
    """(qualified name, docstring statement) of the module, classes and methods wanted."""
    found: list[tuple[str, ast.stmt]] = []
    scopes: list[tuple[str, Documented]] = [("", tree)]
    while scopes:
        name, node = scopes.pop()
        if name in wanted and ast.get_docstring(node) is not None:
            found.append((name, node.body[0]))
        prefix = f"{name}." if name else ""
        scopes += [
            (prefix + child.name, child)
            for child in node.body
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        ]
    return found


def _literal(text: str, indent: str) -> str:
    """``text`` as a triple-quoted docstring line (or lines) at ``indent``."""
    head, *rest = text.split("\n")
    tail = [f"{indent}{line}" if line else "" for line in rest]
    if tail and not rest[-1]:
        tail[-1] = indent  # the closing quotes on a line of their own
    return indent + '"""' + "\n".join([head, *tail]) + '"""\n'


def ruff(command: list[str], code: str) -> str:
    """``code`` through ``ruff <command>`` with the project's settings, as sync.py."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(TARGET), "-"],
        input=code,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    expected = generate()
    if parser.parse_args().check:
        return check(expected)
    (ROOT / TARGET).write_text(expected)
    return 0


def check(expected: str) -> int:
    """0 when sync.py holds ``expected``; else 1, with the difference printed."""
    committed = (ROOT / TARGET).read_text()
    if committed == expected:
        return 0
    diff = difflib.unified_diff(
        committed.splitlines(keepends=True), expected.splitlines(keepends=True), "sync.py", "want"
    )
    sys.stdout.writelines(diff)
    print(f"{TARGET} differs from {SOURCE} unasynced: run `make generate`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
