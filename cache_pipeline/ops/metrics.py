"""Every metric name, declared once.

The first eight names are the published baseline (same names, same types);
the rest are what operators need beside them. Redis-derived gauges (hits,
misses, hit ratio, memory) are filled at scrape time by a collector that reads
Redis INFO (see ``cache_pipeline.api.redis_info``); the others are updated by the
worker as it handles messages, in the process that serves /metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from cache_pipeline import __version__

NAMESPACE = "persistent_cache"

# Published baseline.
WRITE_DURATION = Histogram(
    "persistent_cache_write_duration_seconds",
    "Time taken to write to Redis cache (one round trip, a batch of messages)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
WRITE_ERRORS = Counter(
    "persistent_cache_write_errors_total", "Number of failed Redis cache write operations"
)
HIT_RATIO_NAME = "persistent_cache_hit_ratio"
MEMORY_USAGE_NAME = "persistent_cache_memory_usage_bytes"
HITS_NAME = "persistent_cache_hits_total"
MISSES_NAME = "persistent_cache_misses_total"
MESSAGE_HANDLING_DURATION = Histogram(
    "persistent_cache_message_handling_duration_seconds",
    "Time taken to process a message from receipt to completion",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
MESSAGES_PROCESSED = Counter(
    "persistent_cache_messages_processed_total",
    "Total number of messages processed (written or correctly skipped), by type",
    ["type"],
)

# Beside the baseline.
MESSAGES_SKIPPED = Counter(
    "persistent_cache_messages_skipped_total",
    "Messages applied without a write: stale (rule 1) or policy (rule 2), by type",
    ["type", "reason"],
)
MESSAGES_FAILED = Counter(
    "persistent_cache_messages_failed_total",
    "Messages that could not be applied, by reason (poison reasons, store_error, transient)",
    ["reason"],
)
MESSAGES_PARKED = Counter(
    "persistent_cache_messages_parked_total",
    "Poison messages parked: sent to the DLQ, or left for the queue's redrive policy",
    ["destination"],
)
DLQ_REFUSED = Counter(
    "persistent_cache_dlq_refused_total",
    "Poison messages the dead-letter queue refused; left for the queue's redrive policy",
)
APPLY_LAG = Histogram(
    "persistent_cache_apply_lag_seconds",
    "Seconds from a message's origin to its write being done, per applied message: "
    "basis=sqs_sent from SQS's SentTimestamp, basis=message from the contract timestamp",
    ["basis"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)
APPLY_LAG_BASES = ("sqs_sent", "message")
RECEIVE_ERRORS = Counter(
    "persistent_cache_receive_errors_total", "Failed receives or deletes against the queue"
)
QUEUE_ERRORS = Counter(
    "persistent_cache_queue_errors_total",
    "Failed queue calls, by operation (receive, delete, release, park) and fault"
    " (missing_queue, credentials, access_denied, throttled, unreachable, refused)",
    ["operation", "fault"],
)
SQS_FALLBACK = Counter(
    "persistent_cache_sqs_fallback_total",
    "SQS calls sent through the boto3 client instead of the signed keep-alive path, by reason",
    ["reason"],
)
CONSUMERS = Gauge(
    "persistent_cache_consumers",
    "Live queue consumers in this process",
    multiprocess_mode="livesum",
)
QUEUE_MESSAGES = Gauge(
    "persistent_cache_queue_messages",
    "Messages in the queue (queue=main) and its dead-letter queue (queue=dlq), visible or in"
    " flight: SQS's approximate counts, polled every 30 s",
    ["queue", "state"],
    multiprocess_mode="mostrecent",
)
REDIS_UP = Gauge(
    "persistent_cache_redis_up",
    "1 when Redis answered the last check, else 0",
    multiprocess_mode="mostrecent",
)
READY = Gauge(
    "persistent_cache_ready",
    "Why /readyz answers DOWN, one series per readiness reason: 1 for the reason it reports"
    " now, 0 for the others (all 0 while it answers UP)",
    ["reason"],
    multiprocess_mode="mostrecent",
)
REDIS_DATA_LOSS = Counter(
    "persistent_cache_redis_data_loss_total",
    "Times the environment's schema marker was found gone (Redis restarted empty or flushed)",
)
POISON_FLOOD_PAUSES = Counter(
    "persistent_cache_poison_flood_pauses_total",
    "Times consumption stopped because invalid messages passed POISON_FLOOD_RATIO",
)

# The HTTP surface's request count and latency per handler; the collectors are
# made by prometheus-fastapi-instrumentator in ``cache_pipeline.api.instrumentation``.
HTTP_REQUESTS_NAME = "http_requests_total"
HTTP_REQUEST_DURATION_NAME = "http_request_duration_seconds"
HTTP_REQUEST_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

BUILD_INFO = Info("persistent_cache_build", "Version of the running service")
BUILD_INFO.info({"version": __version__})

# Published baseline names and the type a Prometheus parser must see for each.
BASELINE_TYPES: dict[str, str] = {
    "persistent_cache_write_duration_seconds": "histogram",
    "persistent_cache_write_errors_total": "counter",
    HIT_RATIO_NAME: "gauge",
    MEMORY_USAGE_NAME: "gauge",
    HITS_NAME: "gauge",
    MISSES_NAME: "gauge",
    "persistent_cache_message_handling_duration_seconds": "histogram",
    "persistent_cache_messages_processed_total": "counter",
}
