"""libFuzzer target (atheris): the parser, SNS unwrapping and the planner.

Run: ``python -m tests.fuzz.fuzz_parser -runs=100000 [corpus_dir]``. Any exception
other than ``InvalidMessage`` with a known reason, or a planned key outside the
message's customer scope, is a crash that libFuzzer reports with its input.
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["cache_pipeline"]):
    from cache_pipeline.config import CacheUpdatePolicy
    from cache_pipeline.contract.messages import parse_message
    from cache_pipeline.contract.plan import ScriptCall, plan
    from cache_pipeline.errors import InvalidMessage, InvalidReason
    from cache_pipeline.keys import KeyLayout

from tests.fuzz.scope import outside_scope

LAYOUTS = (KeyLayout("P"), KeyLayout("P", cluster=True))
REASONS = frozenset(InvalidReason)


def test_one_input(data: bytes) -> None:
    """One fuzz case: parse, then check every planned key."""
    try:
        message = parse_message(data, "production")
    except InvalidMessage as exc:
        if exc.reason not in REASONS or not exc.detail:
            raise AssertionError(f"rejection without a known reason: {exc!r}") from None
        return
    for layout in LAYOUTS:
        steps = plan(message, layout, ttl=60, policy=CacheUpdatePolicy.UPSERT)
        keys = [k for step in steps if isinstance(step, ScriptCall) for k in step.keys]
        stray = outside_scope(keys, "P", [message], cluster=layout.cluster)
        if stray:
            raise AssertionError(f"keys outside the scope: {stray}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
