"""The Lua scripts under ``cache_pipeline/store/lua``, as Redis gets them."""

from __future__ import annotations

from importlib import resources

PRELUDE = "_prelude"
# The write scripts share the prelude's versioned writes and type checks.
WITH_PRELUDE = frozenset(
    {
        "v2_write_scope",
        "v2_write_usage",
        "v2_invalidate_scope",
        "v2_invalidate_key",
        "v2_invalidate_environment",
    }
)


def script_source(name: str) -> str:
    """The text of one script, with the shared prelude in front of a write script."""
    folder = resources.files("cache_pipeline.store") / "lua"
    text = (folder / f"{name}.lua").read_text()
    if name in WITH_PRELUDE:
        return (folder / f"{PRELUDE}.lua").read_text() + "\n" + text
    return text
