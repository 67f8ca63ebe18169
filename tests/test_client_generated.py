"""One source for both readers: ``sync.py`` is ``aio.py`` through scripts/unasync_client.py."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cache_pipeline.client import AsyncEntitlementsCache, EntitlementsCache

ROOT = Path(__file__).resolve().parents[1]
SYNC_NAMES = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}
DUNDERS = {"__init__", "__enter__", "__exit__", "__aenter__", "__aexit__"}


def test_the_committed_sync_reader_is_what_make_generate_writes() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/unasync_client.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_the_sync_reader_says_it_is_generated() -> None:
    head = (ROOT / "cache_pipeline/client/sync.py").read_text().splitlines()[:2]
    assert head[0].startswith("# Generated from cache_pipeline/client/aio.py by `make generate`")
    assert head[1].startswith("# Do not edit")


def test_both_readers_offer_the_same_calls_with_the_same_parameters() -> None:
    asynchronous, synchronous = _calls(AsyncEntitlementsCache), _calls(EntitlementsCache)
    assert {name for name, call in asynchronous.items() if not _coroutine(call)} == {"__init__"}
    assert not any(_coroutine(call) for call in synchronous.values())
    assert {SYNC_NAMES.get(name, name) for name in asynchronous} == set(synchronous)
    for name, call in asynchronous.items():
        assert _parameters(call) == _parameters(synchronous[SYNC_NAMES.get(name, name)]), name


def _calls(reader: type) -> dict[str, Callable[..., object]]:
    return {
        name: value
        for name, value in vars(reader).items()
        if inspect.isfunction(value) and (not name.startswith("_") or name in DUNDERS)
    }


def _coroutine(call: Callable[..., object]) -> bool:
    return inspect.iscoroutinefunction(call)


def _parameters(call: Callable[..., object]) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(call).parameters.values()]
