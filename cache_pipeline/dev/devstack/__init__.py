"""``make run``: the whole stack on this machine, without Docker.

``python -m cache_pipeline.dev.devstack`` starts, in this order: Redis (an existing
one at REDIS_HOST:REDIS_PORT if it answers, else a redis-server of its own on a
free port), an SQS server (moto) with the queue and a dead-letter queue behind
a redrive policy, the upstream stub on the demo data of deploy/demo, and the
worker with its HTTP port; then it publishes deploy/demo/feed.jsonl, waits
until the worker has written it, and prints where to look.

Ctrl-C (SIGINT) or SIGTERM stops everything it started, last started first,
each part with its whole process group, and nothing else. Exit codes: 0 after
a clean stop, 1 when a part failed, 2 when something it needs is missing.
"""

from cache_pipeline.dev.devstack.main import main

__all__ = ["main"]
