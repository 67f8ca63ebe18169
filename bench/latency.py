"""Send-to-readable latency at a steady offered rate.

Sender threads send one probe message at a time on a fixed schedule (probe i
at start + i / rate) and record the time just before each SendMessage. Each
probe writes a key of its own; a watcher subscribed to Redis keyspace
notifications for the probes' ``#timestamp`` keys records when each became
readable, so nothing polls the consumer's Redis in a loop.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.services import sqs_client
from bench.workload import Workload, body, latency_probe
from cache_pipeline.keys import TIMESTAMP_SUFFIX, KeyLayout

SENDERS = 2
GRACE_SECONDS = 15.0  # after the last send, wait while a probe was seen this recently


@dataclass
class LatencyResult:
    """Latencies in seconds, with what was offered and what was achieved."""

    offered_rate: float
    sent: int
    seen: int
    send_seconds: float
    latencies: list[float] = field(default_factory=list)
    sends: list[float] = field(default_factory=list)  # how long each SendMessage took

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.send_seconds if self.send_seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0]
        cuts = statistics.quantiles(self.latencies, n=1000, method="inclusive")
        return cuts[min(len(cuts) - 1, max(0, round(q * 1000) - 1))]

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered_rate": self.offered_rate,
            "achieved_rate": round(self.achieved_rate, 1),
            "sent": self.sent,
            "seen": self.seen,
            "p50_ms": round(self.percentile(0.50) * 1000, 2),
            "p90_ms": round(self.percentile(0.90) * 1000, 2),
            "p99_ms": round(self.percentile(0.99) * 1000, 2),
            "max_ms": round(max(self.latencies, default=float("nan")) * 1000, 2),
            "send_p50_ms": round(_quantile(self.sends, 0.50) * 1000, 2),
            "send_p99_ms": round(_quantile(self.sends, 0.99) * 1000, 2),
        }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class ProbeWatcher:
    """Records when each probe's ``#timestamp`` key is written (keyspace notifications)."""

    def __init__(self, client: redis.Redis, layout: KeyLayout) -> None:
        self.client = client
        self.seen: dict[str, float] = {}
        client.config_set("notify-keyspace-events", "K$")
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        db = int(client.connection_pool.connection_kwargs.get("db", 0))
        pattern = f"{layout.environment_pattern.removesuffix('*')}c_probe-*{TIMESTAMP_SUFFIX}"
        self.prefix_len = len(f"__keyspace@{db}__:")
        self.pubsub.psubscribe(f"__keyspace@{db}__:{pattern}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe-watcher", daemon=True)

    def start(self) -> ProbeWatcher:
        deadline = time.monotonic() + 5
        while not self.pubsub.subscribed and time.monotonic() < deadline:
            self.pubsub.get_message(timeout=0.1)  # handles the subscribe confirmation
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            event = self.pubsub.get_message(timeout=0.2)
            if event is not None and event.get("type") == "pmessage":
                now = time.monotonic()
                key = str(event["channel"])[self.prefix_len :]
                self.seen.setdefault(key, now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.client.config_set("notify-keyspace-events", "")


def measure_latency(
    *,
    endpoint: str,
    queue_url: str,
    workload: Workload,
    watcher: ProbeWatcher,
    layout: KeyLayout,
    environment: str,
    rate: float,
    count: int,
    on_tick: Callable[[], object] = lambda: None,
    senders: int = SENDERS,
) -> tuple[LatencyResult, list[dict[str, Any]]]:
    """Offer ``count`` probes at ``rate`` per second; return latencies and the probes.

    Each of the ``senders`` threads sends every ``senders``-th probe, one SendMessage
    at a time: they must be enough to keep up with ``rate`` when a send takes long.
    """
    probes = [latency_probe(workload, i) for i in range(count)]
    sent_at: dict[int, float] = {}
    sends: list[float] = []
    clients = [sqs_client(endpoint) for _ in range(senders)]  # made before the clock starts
    start = time.monotonic() + 0.2
    threads = [
        threading.Thread(
            target=_send,
            args=(client, queue_url, probes, environment, rate, start),
            kwargs={"share": (k, senders), "sent_at": sent_at, "sends": sends},
            daemon=True,
        )
        for k, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    keys = {i: _probe_key(layout, p) for i, p in enumerate(probes)}
    while any(t.is_alive() for t in threads):
        on_tick()
        time.sleep(0.05)
    send_seconds = max(sent_at.values(), default=start) - start
    # A consumer slower than the offered rate is still working off a backlog: wait as
    # long as probes keep arriving, and GRACE_SECONDS after the last one.
    seen_count, deadline = -1, 0.0
    while (now := time.monotonic()) < deadline or seen_count < 0:
        seen_count, last = len(_seen(watcher, keys)), seen_count
        if seen_count >= count:
            break
        if seen_count != last:
            deadline = now + GRACE_SECONDS
        on_tick()
        time.sleep(0.05)
    seen = _seen(watcher, keys)
    result = LatencyResult(
        offered_rate=rate,
        sent=len(sent_at),
        seen=len(seen),
        send_seconds=send_seconds,
        latencies=sorted(seen[i] - sent_at[i] for i in seen if i in sent_at),
        sends=sends,
    )
    return result, probes


def _seen(watcher: ProbeWatcher, keys: dict[int, str]) -> dict[int, float]:
    return {i: watcher.seen[k] for i, k in keys.items() if k in watcher.seen}


def _probe_key(layout: KeyLayout, probe: dict[str, Any]) -> str:
    data = probe["data"]
    return layout.customer(data["customerId"]).feature_usage(data["featureId"]) + TIMESTAMP_SUFFIX


def _send(
    client: Any,
    queue_url: str,
    probes: list[dict[str, Any]],
    environment: str,
    rate: float,
    start: float,
    share: tuple[int, int],
    sent_at: dict[int, float],
    sends: list[float],
) -> None:
    offset, step = share  # this thread sends probes offset, offset + step, ...
    try:
        for i in range(offset, len(probes), step):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent_at[i] = time.monotonic()
            client.send_message(QueueUrl=queue_url, MessageBody=body(probes[i], environment))
            sends.append(time.monotonic() - sent_at[i])
    finally:
        client.close()
