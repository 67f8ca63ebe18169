"""An independent statement of "a customer's keys", used to judge what the writer touches.

It does not reuse ``cache_pipeline.keys``: the encoding of CONTRACT.md section 2
is restated here, and every key a write names must decode back to the ids of
the message that caused it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

from cache_pipeline.messages import (
    CacheInvalidated,
    CreditsUpdated,
    EntitlementsUpdated,
    Message,
    UsageUpdated,
)

TIMESTAMP = "#timestamp"
_SPECIAL = re.compile(r"[%:{}#]")
_REST = re.compile(
    r"(?P<kind>|:metadata|:keys|:f_(?P<feature>[^:{}#]+)|:credit_(?P<credit>[^:{}#]+))"
)


def pct(value: str) -> str:
    """CONTRACT.md: ``%``, ``:``, ``{``, ``}`` and ``#`` of an id are percent-encoded."""
    return _SPECIAL.sub(lambda m: f"%{ord(m.group()):02X}", value)


def scope_base(prefix: str, customer: str, resource: str | None, *, cluster: bool) -> str:
    scope = f"c_{pct(customer)}" + ("" if resource is None else f":r_{pct(resource)}")
    return f"{prefix}:{{{scope}}}" if cluster else f"{prefix}:{scope}"


def scopes_of(message: Message) -> list[tuple[str, str | None]]:
    """The (customer, resource) scopes a message may write."""
    if isinstance(message, CacheInvalidated):
        return [(ref.customer_id, ref.resource_id) for ref in message.data.customers]
    data = message.data
    return [(data.customer_id, data.resource_id)]


def item_ids(message: Message) -> set[str]:
    """Feature and currency ids the message names."""
    if isinstance(message, EntitlementsUpdated):
        return {item.id for item in message.data.entitlements}
    if isinstance(message, UsageUpdated):
        return {message.data.feature_id}
    if isinstance(message, CreditsUpdated):
        return {message.data.currency_id}
    return set()


def outside_scope(
    keys: Iterable[str],
    prefix: str,
    messages: Iterable[Message],
    *,
    cluster: bool = False,
    versions: bool = False,
) -> list[str]:
    """Keys that do not belong to a scope the messages name (``versions``: allow ``#timestamp``)."""
    bases: dict[str, None] = {}
    ids: set[str] = set()
    for message in messages:
        ids |= item_ids(message)
        for customer, resource in scopes_of(message):
            bases[scope_base(prefix, customer, resource, cluster=cluster)] = None
    stray = []
    for key in keys:
        value_key = key[: -len(TIMESTAMP)] if versions and key.endswith(TIMESTAMP) else key
        if not any(_belongs(value_key, base, ids) for base in bases):
            stray.append(key)
    return stray


def _belongs(key: str, base: str, ids: set[str]) -> bool:
    if not key.startswith(base):
        return False
    match = _REST.fullmatch(key[len(base) :])
    if match is None:
        return False
    encoded = match.group("feature") or match.group("credit")
    return encoded is None or unquote(encoded) in ids
