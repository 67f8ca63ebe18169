"""An independent statement of "a scope's keys", used to judge what the writer touches.

It does not reuse ``cache_pipeline.keys``: the layout of CONTRACT.md v2 section 2 is
restated here (raw ids; ``S``, ``S:metadata``, ``S:f_<featureId>``,
``S:credit_<currencyId>``, their ``#timestamp`` siblings, and the private ``S#keys``,
``S#invalidated``, ``S#deleted`` and ``S#lock``, and the environment's
``P:__invalidated__``), and every key a write names must be one of the keys of a
scope the message names, with a feature or currency id the message names.
"""

from __future__ import annotations

from collections.abc import Iterable

from cache_pipeline.contract.messages import (
    CacheInvalidated,
    CreditsUpdated,
    EntitlementsUpdated,
    Message,
    UsageUpdated,
)

TIMESTAMP = "#timestamp"
PRIVATE = ("#keys", "#invalidated", "#deleted", "#lock")


def scope_base(prefix: str, customer: str, resource: str | None, *, cluster: bool) -> str:
    scope = f"c_{customer}" + ("" if resource is None else f":r_{resource}")
    return f"{prefix}:{{{scope}}}" if cluster else f"{prefix}:{scope}"


def scopes_of(message: Message) -> list[tuple[str, str | None]]:
    """The (customer, resource) scopes a message may write."""
    if isinstance(message, CacheInvalidated):
        return [(ref.customer_id, ref.resource_id) for ref in message.data.customers]
    data = message.data
    return [(data.customer_id, data.resource_id)]


def item_ids(message: Message) -> tuple[set[str], set[str]]:
    """Feature ids and currency ids the message names."""
    if isinstance(message, EntitlementsUpdated):
        features = {str(entry["feature"]["refId"]) for entry in message.data.entitlements}
        return features, {credit.currency_id for credit in message.data.credits}
    if isinstance(message, UsageUpdated):
        return {message.data.feature_id}, set()
    if isinstance(message, CreditsUpdated):
        return set(), {message.data.currency_id}
    return set(), set()


def allowed_keys(prefix: str, messages: Iterable[Message], *, cluster: bool) -> set[str]:
    """Every key the messages may name: value keys, and the private keys of their scopes."""
    allowed: set[str] = set() if cluster else {f"{prefix}:__invalidated__"}
    for message in messages:
        features, currencies = item_ids(message)
        for customer, resource in scopes_of(message):
            base = scope_base(prefix, customer, resource, cluster=cluster)
            allowed |= {base, f"{base}:metadata", *(base + suffix for suffix in PRIVATE)}
            allowed |= {f"{base}:f_{feature}" for feature in features}
            allowed |= {f"{base}:credit_{currency}" for currency in currencies}
    return allowed


def outside_scope(
    keys: Iterable[str],
    prefix: str,
    messages: Iterable[Message],
    *,
    cluster: bool = False,
    versions: bool = False,
) -> list[str]:
    """Keys that do not belong to a scope the messages name (``versions``: allow ``#timestamp``)."""
    allowed = allowed_keys(prefix, list(messages), cluster=cluster)
    stray = []
    for key in keys:
        value_key = key[: -len(TIMESTAMP)] if versions and key.endswith(TIMESTAMP) else key
        if value_key not in allowed or (value_key != key and value_key.endswith(PRIVATE)):
            stray.append(key)
    return stray
