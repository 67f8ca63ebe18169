"""A realistic, reproducible message mix whose exact final state is known.

Two shapes. ``steady`` (the default, below) keeps every order race out of the
stream, so throughput is measured on a stream of independent versions.
``reorder`` is the stream rule 6 is about (``tests/support/streams.py``): usage,
credits, snapshots whose usage entries carry an older ``usageUpdatedAt``, 5 %
scope invalidations anywhere in it (and about one ``{"all": true}``), customer and
resource scopes with ids such as ``acme:eu-3`` and ``user-7@example.com``, sent
reordered by up to 400 places with 10 % of the messages sent twice; the worker's
own consumers reorder it more.
Its state check is the contract model's rule 6.

The steady shape:

Every customer is seeded with an entitlements snapshot (written to Redis before
the run, as the reader SDK's miss path would), then the stream mixes usage
updates (most), credit updates, entitlement snapshots and a few customer
invalidations, over Zipf-skewed customers, with a few percent of messages sent
later than their timestamp says (out of order).

The final state must not depend on delivery order, so the contract model
applied in timestamp order is exact for any order, any concurrency:

* timestamps are unique, so rule 1 (last version wins) has no ties;
* every usage and credit key of the stream is seeded, so an invalidation
  always finds it in the customer's index;
* an invalidation is its customer's last message by timestamp (nothing of the
  customer is newer), so rule 2 (usage needs entitlements) never races with it:
  a message of that customer delivered after the invalidation is skipped by
  the worker and tombstoned in the model, which ends in the same keys.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.support import streams

Shape = Literal["steady", "reorder"]
SHAPES: tuple[Shape, ...] = ("steady", "reorder")

FEATURES = ("feature-api-calls", "feature-seats", "feature-storage")
CREDITS = ("ai-tokens",)
PERIOD = {"usagePeriodStart": 1_764_547_200_000, "usagePeriodEnd": 1_767_225_600_000}
BASE_TIMESTAMP = 1_770_000_000_000
PROBE_CUSTOMERS = 10  # seeded customers the stream never touches, for latency probes


@dataclass(frozen=True)
class Mix:
    """Shares of the stream by message type, and how disordered it is."""

    usage: float = 0.80
    credits: float = 0.10
    entitlements: float = 0.095
    invalidations: float = 0.005
    out_of_order: float = 0.03
    zipf_s: float = 1.1


@dataclass
class Workload:
    """Seed snapshots and the stream (in send order) of one run."""

    seeds: list[dict[str, Any]]
    stream: list[dict[str, Any]]
    customers: list[str]
    probe_customers: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def script_calls(self) -> int:
        """Redis script calls the stream causes (one per message, one per invalidated ref;
        ``{"all": true}`` is counted as none: its calls depend on what it finds)."""
        return sum(
            len(m["data"].get("customers", ())) if m["type"] == "cache.invalidated" else 1
            for m in self.stream
        )

    def in_timestamp_order(self) -> list[dict[str, Any]]:
        return sorted(self.stream, key=lambda m: int(m["timestamp"]))


def body(message: dict[str, Any], environment: str | None) -> str:
    """The SQS message body: the message as JSON, with ``environment`` when given."""
    wire = dict(message)
    if environment is not None:
        wire["environment"] = environment
    return json.dumps(wire, separators=(",", ":"))


def bodies(messages: Sequence[dict[str, Any]], environment: str | None) -> list[str]:
    return [body(m, environment) for m in messages]


def generate(
    n: int,
    *,
    customers: int | None = None,
    mix: Mix | None = None,
    seed: int = 7,
    shape: Shape = "steady",
) -> Workload:
    """``n`` stream messages over ``customers`` (default n/20, at least 20) customers."""
    if shape == "reorder":
        return _reordered(n, customers or max(20, n // 20), random.Random(seed))
    mix = mix or Mix()
    rng = random.Random(seed)
    names = [f"cus-{i:05d}" for i in range(customers or max(20, n // 20))]
    probes = [f"probe-{i:02d}" for i in range(PROBE_CUSTOMERS)]
    seeded = names + probes
    seeds = [_snapshot(rng, c, BASE_TIMESTAMP - len(seeded) + i) for i, c in enumerate(seeded)]
    n_invalidations = min(len(names) // 2, round(n * mix.invalidations))
    timeline = _timeline(rng, names, n - n_invalidations, mix)
    timeline = _with_invalidations(rng, timeline, n_invalidations)
    stream = _disorder(rng, timeline, mix.out_of_order)
    counts: dict[str, int] = {}
    for message in stream:
        counts[message["type"]] = counts.get(message["type"], 0) + 1
    return Workload(
        seeds=seeds, stream=stream, customers=names, probe_customers=probes, counts=counts
    )


def _reordered(n: int, customers: int, rng: random.Random) -> Workload:
    """The ``reorder`` shape: ``n`` messages in timestamp order, then sent reordered."""
    probes = [f"probe-{i:02d}" for i in range(PROBE_CUSTOMERS)]
    first = BASE_TIMESTAMP - 4 * (customers + PROBE_CUSTOMERS) * 2
    seeds = streams.seeds(customers, first_ms=first)
    seeds += [_snapshot(rng, c, BASE_TIMESTAMP - 1 - i) for i, c in enumerate(probes)]
    timeline = streams.realistic_stream(
        rng, n, customers=customers, everything=1 / n, first_ms=BASE_TIMESTAMP
    )
    stream = streams.deliver(timeline, rng, distance=400, duplicates=0.1)
    counts: dict[str, int] = {}
    for message in stream:
        counts[message["type"]] = counts.get(message["type"], 0) + 1
    names = [customer for customer, _ in streams.scopes(customers)]
    return Workload(seeds, stream, sorted(set(names)), probes, counts)


def latency_probe(workload: Workload, sequence: int) -> dict[str, Any]:
    """A usage update on a key of its own (never touched by the stream), so its
    arrival in Redis is unambiguous."""
    customer = workload.probe_customers[sequence % len(workload.probe_customers)]
    timestamp = BASE_TIMESTAMP + 4 * len(workload.stream) + sequence
    return _usage(customer, f"probe-{sequence}", sequence % 1000, timestamp)


def _timeline(rng: random.Random, names: list[str], n: int, mix: Mix) -> list[dict[str, Any]]:
    weights = [1.0 / (rank + 1) ** mix.zipf_s for rank in range(len(names))]
    picks = rng.choices(names, weights=weights, k=n)
    kinds = rng.choices(
        ("usage", "credits", "entitlements"),
        weights=(mix.usage, mix.credits, mix.entitlements),
        k=n,
    )
    messages = []
    for i, (customer, kind) in enumerate(zip(picks, kinds, strict=True)):
        ts = BASE_TIMESTAMP + 2 * i  # even: invalidations take the odd ones
        if kind == "usage":
            messages.append(_usage(customer, rng.choice(FEATURES), rng.randrange(10_000), ts))
        elif kind == "credits":
            messages.append(_credits(customer, rng.randrange(100_000), ts))
        else:
            messages.append(_snapshot(rng, customer, ts))
    return messages


def _with_invalidations(
    rng: random.Random, timeline: list[dict[str, Any]], count: int
) -> list[dict[str, Any]]:
    """Insert ``count`` invalidations, each right after its customer's last message."""
    last: dict[str, int] = {}
    for index, message in enumerate(timeline):
        last[message["data"]["customerId"]] = index
    chosen = rng.sample(sorted(last), count) if count else []
    after = {last[c]: c for c in chosen}
    result: list[dict[str, Any]] = []
    for index, message in enumerate(timeline):
        result.append(message)
        if index in after:
            result.append(_invalidation(after[index], int(message["timestamp"]) + 1))
    return result


def _disorder(
    rng: random.Random, timeline: list[dict[str, Any]], share: float
) -> list[dict[str, Any]]:
    """Move ``share`` of the messages 10 to 300 places later than their timestamp order."""
    order = list(timeline)
    for _ in range(round(len(order) * share)):
        src = rng.randrange(len(order))
        dst = min(len(order) - 1, src + rng.randint(10, 300))
        order.insert(dst, order.pop(src))
    return order


def _envelope(kind: str, timestamp: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": kind, "timestamp": timestamp, "data": data}


def _snapshot(rng: random.Random, customer: str, timestamp: int) -> dict[str, Any]:
    """A snapshot as Stigg's Edge API returns it: metered features, a boolean, a credit."""
    items: list[dict[str, Any]] = [
        {
            "feature": {
                "refId": feature,
                "featureType": "NUMBER",
                "meterType": "Fluctuating",
                "featureUnits": "unit",
                "featureUnitsPlural": "units",
            },
            "usageLimit": 10_000,
            "hasUnlimitedUsage": False,
            "hasSoftLimit": False,
            "resetPeriod": "MONTH",
            "currentUsage": rng.randrange(10_000),
            **PERIOD,
        }
        for feature in FEATURES
    ]
    items.append(
        {
            "feature": {"refId": "feature-sso", "featureType": "BOOLEAN", "meterType": "None"},
            "hasUnlimitedUsage": False,
            "hasSoftLimit": False,
            "accessDeniedReason": None if rng.random() < 0.5 else "Revoked",
        }
    )
    credits = [
        {"currencyId": currency, "currentUsage": rng.randrange(100_000), "usageLimit": 100_000}
        | PERIOD
        for currency in CREDITS
    ]
    data = {
        "customerId": customer,
        "resourceId": None,
        "accessDeniedReason": None,
        "entitlements": items,
        "credits": credits,
    }
    return _envelope("entitlements.updated", timestamp, data)


def _usage(customer: str, feature: str, used: int, timestamp: int) -> dict[str, Any]:
    data = {"customerId": customer, "resourceId": None, "featureId": feature, "currentUsage": used}
    return _envelope("usage.updated", timestamp, data | PERIOD)


def _credits(customer: str, used: int, timestamp: int) -> dict[str, Any]:
    data = {
        "customerId": customer,
        "resourceId": None,
        "currencyId": CREDITS[0],
        "currentUsage": used,
        "usageLimit": 100_000,
    }
    return _envelope("credits.updated", timestamp, data | PERIOD)


def _invalidation(customer: str, timestamp: int) -> dict[str, Any]:
    data = {"customers": [{"customerId": customer, "resourceId": None}]}
    return _envelope("cache.invalidated", timestamp, data)
