"""Reading a JSON-lines file of contract messages for ``python -m cache_pipeline.dev publish``.

Every line is validated before anything is sent, so a file with one bad line
sends nothing; the error names the line. Blank lines are skipped. Bodies are
sent exactly as written in the file.
"""

from __future__ import annotations

from collections.abc import Iterable

import click

from cache_pipeline.contract.messages import parse_message
from cache_pipeline.errors import InvalidMessage


class InvalidLine(click.ClickException):
    """A line of the file is not a valid contract message."""

    exit_code = 1


def read_messages(lines: Iterable[str], environment: str) -> list[str]:
    """The message bodies of ``lines``; raises ``InvalidLine`` at the first invalid one."""
    bodies: list[str] = []
    for number, line in enumerate(lines, start=1):
        body = line.strip()
        if not body:
            continue
        try:
            parse_message(body, environment)
        except InvalidMessage as exc:
            raise InvalidLine(f"line {number}: {exc}; nothing was sent") from None
        bodies.append(body)
    return bodies
