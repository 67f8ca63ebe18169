"""The Lua scripts under ``cache_pipeline/store/lua``, as Redis gets them."""

from __future__ import annotations

from importlib import resources
from typing import get_args

from cache_pipeline.contract.plan import ScriptName

PRELUDE = "_prelude"
# The write scripts (every ``ScriptName``) share the prelude's versioned writes and type checks.
WITH_PRELUDE: frozenset[str] = frozenset(get_args(ScriptName))


def script_source(name: str) -> str:
    """The text of one script, with the shared prelude in front of a write script."""
    folder = resources.files("cache_pipeline.store") / "lua"
    text = (folder / f"{name}.lua").read_text()
    if name in WITH_PRELUDE:
        return (folder / f"{PRELUDE}.lua").read_text() + "\n" + text
    return text
