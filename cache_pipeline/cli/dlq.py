"""``cache-pipeline dlq``: look at the dead-letter queue and move it back.

``dlq list`` shows every parked message (its ids, why it was parked, how often it
was received, how long it has been there) and leaves it in the queue
(``SqsQueue.peek``); ``dlq redrive`` sends messages back to QUEUE_URL, all of them
or those of one reason, or with ``--dry-run`` lists what it would move.
``cache-pipeline redrive`` is the same command as ``dlq redrive``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from cache_pipeline.cli.failures import ExitCode, naming
from cache_pipeline.config import WorkerSettings, load_worker_settings
from cache_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from cache_pipeline.sqs.client import SqsQueue
    from cache_pipeline.sqs.queue import Parked

REDRIVE_MAX = 100_000


@click.group("dlq")
def dlq() -> None:
    """The dead-letter queue (DEAD_LETTER_QUEUE_URL): list it, move it back."""


@dlq.command("list")
@click.option("--reason", default=None, help="Only messages parked for this reason.")
@click.option(
    "--limit", type=click.IntRange(1, REDRIVE_MAX), default=100, show_default=True,
    help="List at most this many messages.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
def list_parked(reason: str | None, limit: int, as_json: bool) -> None:
    """List the messages of the dead-letter queue and leave them there.

    One line per message (SQS MessageId, reason, contract id, receive count, age,
    detail) and a count by reason. Listing receives each message once (its receive
    count goes up) and hides it for at most 30 seconds while the listing goes on;
    every one is visible again when the command ends.
    """
    with _dead_letter_queue() as queue:
        parked = queue.peek(limit, reason=reason)
    now = time.time()
    for message in parked:
        click.echo(json.dumps(as_json_line(message, now)) if as_json else text_line(message, now))
    if not as_json:
        click.echo(count_line(parked, limit=limit, reason=reason))


_REASON = click.option("--reason", default=None, help="Only messages parked for this reason.")
_DRY_RUN = click.option("--dry-run", is_flag=True, help="List what would be moved; move nothing.")
_MAX = click.option(
    "--max", "limit", type=click.IntRange(min=1), default=REDRIVE_MAX, show_default=True,
    help="Move at most this many messages.",
)  # fmt: skip


def redrive_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options of ``dlq redrive`` and of its alias ``redrive``."""
    return _REASON(_DRY_RUN(_MAX(command)))


REDRIVE_HELP = """Move messages from DEAD_LETTER_QUEUE_URL back to QUEUE_URL.

Each body goes back unchanged, and leaves the dead-letter queue only once the
queue took it. With --reason only messages parked for that reason move; the
others stay, visible. With --dry-run the messages that would move are listed
(as `dlq list` lists them) and nothing moves. Exits 1 when a message could not
be moved.
"""


@dlq.command("redrive", help=REDRIVE_HELP)
@redrive_options
def redrive(reason: str | None, dry_run: bool, limit: int) -> None:
    run_redrive(reason=reason, dry_run=dry_run, limit=limit)


@click.command("redrive", help=REDRIVE_HELP + "\n\nThe same command as `dlq redrive`.")
@redrive_options
def redrive_alias(reason: str | None, dry_run: bool, limit: int) -> None:
    run_redrive(reason=reason, dry_run=dry_run, limit=limit)


def run_redrive(*, reason: str | None, dry_run: bool, limit: int) -> None:
    """Redrive, or list what a redrive would move, and print what was done."""
    if dry_run:
        with _dead_letter_queue() as queue:
            parked = queue.peek(limit, reason=reason)
        now = time.time()
        for message in parked:
            click.echo(text_line(message, now))
        click.echo(f"would move {len(parked)} message(s) (dry run: nothing was moved)")
        return
    with _dead_letter_queue(redrive=True) as queue:
        counts = queue.redrive(limit, reason=reason)
    others = f", {counts.skipped} of other reasons left" if reason is not None else ""
    click.echo(f"moved {counts.moved} message(s), {counts.failed} failed{others}")
    if counts.failed:
        sys.exit(ExitCode.FAILED)


@contextmanager
def _dead_letter_queue(*, redrive: bool = False) -> Iterator[SqsQueue]:
    """The configured queue and its dead-letter queue; a failure of SQS inside ends
    the command naming the queue(s)."""
    settings = _settings_with_dead_letter()
    from cache_pipeline.sqs.client import SqsQueue

    named = settings.dead_letter_queue_url
    if redrive:
        named = f"{settings.dead_letter_queue_url} (redriving to {settings.queue_url})"
    with naming(settings, queue=named):
        queue = SqsQueue.from_settings(settings)
        try:
            yield queue
        finally:
            queue.close()


def _settings_with_dead_letter() -> WorkerSettings:
    settings = load_worker_settings()
    if not settings.dead_letter_queue_url:
        raise ConfigError("DEAD_LETTER_QUEUE_URL is not set: there is no dead-letter queue")
    return settings


# -- what is printed ---------------------------------------------------------------------------


def contract_id(message: Parked) -> str | None:
    """The contract id of a parked message: as parked, else the body's ``id`` when it has one."""
    if message.contract_id:
        return message.contract_id
    try:
        body = json.loads(message.body)
    except ValueError:
        return None
    found = body.get("id") if isinstance(body, dict) else None
    return found if isinstance(found, str) else None


def age(seconds: float) -> str:
    """``45s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    whole = max(int(seconds), 0)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def text_line(message: Parked, now: float) -> str:
    """One message on one line; the detail last, its whitespace folded."""
    waited = age(now - message.sent_at) if message.sent_at is not None else "?"
    detail = " ".join((message.detail or "").split()) or "-"
    return (
        f"{message.message_id}  {message.reason or '-'}  id={contract_id(message) or '-'}"
        f"  received={message.receive_count}  age={waited}  {detail}"
    )


def as_json_line(message: Parked, now: float) -> dict[str, Any]:
    """One message as a JSON object (``sentAt`` in ISO 8601, UTC)."""
    sent = message.sent_at
    return {
        "sqsMessageId": message.message_id,
        "id": contract_id(message),
        "reason": message.reason,
        "detail": message.detail,
        "receiveCount": message.receive_count,
        "sentAt": None if sent is None else datetime.fromtimestamp(sent, UTC).isoformat(),
        "ageSeconds": None if sent is None else round(max(now - sent, 0.0), 3),
    }


def count_line(parked: Sequence[Parked], *, limit: int, reason: str | None) -> str:
    """``3 message(s): not_json 2, invalid_field 1``, saying when the limit cut it short."""
    by_reason = Counter(message.reason or "(no reason)" for message in parked)
    counts = ", ".join(f"{name} {count}" for name, count in by_reason.most_common())
    line = f"{len(parked)} message(s)" + (f": {counts}" if counts else "")
    if reason is not None:
        line += f" (reason {reason} only)"
    if len(parked) >= limit:
        line += f"; stopped at --limit {limit}, there may be more"
    return line
