"""Realistic contract streams and the delivery orders a worker and SQS give them.

``realistic_stream`` mixes usage updates, credit updates, snapshots (whose metered
entries carry a ``usageUpdatedAt`` often older than the snapshot), scope
invalidations and a few ``{"all": true}`` over customer and resource scopes with
ids such as ``acme:eu-3`` and ``user-7@example.com``. Every version is unique per
key (message timestamps are multiples of 4, ``usageUpdatedAt`` values are 1 mod 4
and never reused), so any two writes of one key are ordered by their versions alone.

``deliver`` reorders a stream by up to ``distance`` positions (twelve consumers with
a receive of ten in flight each reorder by a hundred messages and more; SQS by more)
and delivers some messages twice, the copy up to ``distance`` positions later.
"""

from __future__ import annotations

import random
from typing import Any

from tests.support import factory

BASE_MS = 1_764_300_000_000
FEATURES = ("feature-seats", "feature-api:calls", "feature-storage")
CURRENCIES = ("ai-tokens", "credits")


def scopes(customers: int) -> list[tuple[str, str | None]]:
    """Customer scopes with awkward ids, and a resource scope for every third customer."""
    found: list[tuple[str, str | None]] = []
    for number in range(customers):
        customer = f"acme:eu-{number}" if number % 2 else f"user-{number}@example.com"
        found.append((customer, None))
        if number % 3 == 0:
            found.append((customer, f"res-{number:05d}-1"))
    return found


class _Versions:
    """Unique usageUpdatedAt versions (1 mod 4), each below its snapshot's timestamp."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[int] = set()

    def older_than(self, timestamp: int, spread: int) -> int:
        while True:
            version = timestamp - 4 * self.rng.randrange(spread) - 3
            if version not in self.used:
                self.used.add(version)
                return version


def snapshot(
    scope: tuple[str, str | None], timestamp: int, rng: random.Random, versions: _Versions
) -> dict[str, Any]:
    """A snapshot whose every value shows the timestamp that wrote it."""
    body = factory.entitlements(
        scope[0],
        timestamp,
        resource=scope[1],
        features={feature: timestamp % 997 for feature in FEATURES},
        credits={currency: timestamp % 991 for currency in CURRENCIES if rng.random() < 0.5},
    )
    for entry in body["data"]["entitlements"]:
        entry["usageLimit"] = timestamp % 1009
        if rng.random() < 0.8:  # else the usage key takes the message timestamp
            entry["usageUpdatedAt"] = versions.older_than(timestamp, 1500)
    body["data"]["entitlements"].append(factory.edge_entry("feature-sso"))
    return body


def realistic_stream(
    rng: random.Random,
    count: int,
    *,
    customers: int = 6,
    invalidations: float = 0.05,
    everything: float = 0.001,
    first_ms: int = BASE_MS,
) -> list[dict[str, Any]]:
    """``count`` messages in timestamp order (see the module docstring); ``everything`` is
    the share of ``{"all": true}`` invalidations."""
    where = scopes(customers)
    versions = _Versions(rng)
    messages: list[dict[str, Any]] = []
    for i in range(count):
        at, scope, roll = first_ms + 4 * (i + 1), rng.choice(where), rng.random()
        if roll < everything:
            messages.append(factory.invalidation(at, everything=True))
        elif roll < invalidations:
            refs = [scope, *([rng.choice(where)] if rng.random() < 0.3 else [])]
            messages.append(factory.invalidation(at, *refs))
        elif roll < 0.55:
            feature = rng.choice(FEATURES)
            messages.append(factory.usage(scope[0], at, feature, at % 983, resource=scope[1]))
        elif roll < 0.75:
            currency = rng.choice(CURRENCIES)
            messages.append(factory.credits(scope[0], at, currency, at % 977, resource=scope[1]))
        else:
            messages.append(snapshot(scope, at, rng, versions))
    return messages


def seeds(customers: int, *, first_ms: int = BASE_MS - 1_000_000) -> list[dict[str, Any]]:
    """One snapshot per scope, older than any message of a stream: a warm cache."""
    rng = random.Random(0)
    versions = _Versions(rng)
    return [
        snapshot(scope, first_ms + 4 * number, rng, versions)
        for number, scope in enumerate(scopes(customers))
    ]


def deliver(
    messages: list[dict[str, Any]],
    rng: random.Random,
    *,
    distance: int = 400,
    duplicates: float = 0.1,
) -> list[dict[str, Any]]:
    """``messages`` reordered by up to ``distance`` positions, some delivered twice."""
    placed = [(i + rng.uniform(0, distance), message) for i, message in enumerate(messages)]
    for i, message in enumerate(messages):
        if rng.random() < duplicates:
            placed.append((i + rng.uniform(0, 2 * distance), message))
    placed.sort(key=lambda item: item[0])
    return [message for _, message in placed]
