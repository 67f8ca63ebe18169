"""Rule 6: the end state does not depend on the delivery order (CONTRACT.md v2.1 §3).

Random realistic streams (snapshots whose usage entries are versioned by
``usageUpdatedAt``, usage and credit updates, scope invalidations, customer and
resource scopes) are delivered in random orders with reorder distances of several
hundred messages and random duplicates, planned by the pipeline's planner and
written in batches of ten through the real Lua scripts on a real redis-server, as
a worker writes them. The end state must be the timestamp-order replay of the
contract model (``tests/support/model.py``, restated from the text), up to the
misses rule 6 allows. Under UPDATE_IF_EXISTS the streams run on a warm cache and
the model's policy-aware check applies.

The check itself is shown to catch what it should: the same streams written with
contract v2.0's invalidations (delete whatever the versions, ``{"all": true}``
included) and v2.0's usage rule (skip without the map) end in states it reports,
and so do the v2.1 scripts without the tombstones of ``S#deleted``.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.contract.plan import Planner, ScriptCall
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store.scripts import script_source
from cache_pipeline.store.writer import ScriptRunner, Store
from tests.support.model import state_differences
from tests.support.servers import RedisServer
from tests.support.snapshot import read_state
from tests.support.streams import deliver, realistic_stream, seeds

STREAM = 600
BATCH = 10
EXAMPLES = 25
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
UPSERT, IF_EXISTS = CacheUpdatePolicy.UPSERT, CacheUpdatePolicy.UPDATE_IF_EXISTS

# Contract v2.0's rule 4: an invalidation deletes the scope's keys whatever their versions.
V2_0_INVALIDATE = """
local targets = {KEYS[1], KEYS[2]}
local ok, decoded = pcall(cjson.decode, redis.call('GET', KEYS[1]) or 'null')
if ok and type(decoded) == 'table' then
  for field in pairs(decoded) do targets[#targets + 1] = KEYS[1] .. ':f_' .. field end
end
for _, key in ipairs(redis.call('SMEMBERS', KEYS[4])) do targets[#targets + 1] = key end
for _, key in ipairs(targets) do redis.call('DEL', key, key .. '#timestamp') end
redis.call('DEL', KEYS[4])
local kept = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) > kept then redis.call('SET', KEYS[3], ARGV[1]) end
return 0
"""


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis_server.client()
    yield connection
    connection.close()


def write(
    client: redis.Redis,
    prefix: str,
    policy: CacheUpdatePolicy,
    delivered: list[dict[str, Any]],
    runner: ScriptRunner | None = None,
    *,
    everything: str = "invalidate",
) -> None:
    """Plan each body with the pipeline's planner and write ten per pipelined round trip;
    ``{"all": true}`` splits a batch and runs ``Store.invalidate_environment`` (``everything``
    names the Store method: ``purge_environment`` is contract v2.0's)."""
    layout = KeyLayout(prefix)
    planner = Planner(layout, ttl=-1, policy=policy, max_future_skew_secs=10**9)
    runner = runner or ScriptRunner(client)
    store = Store(client, layout, ttl=-1)
    for start in range(0, len(delivered), BATCH):
        calls: list[ScriptCall] = []
        for body in delivered[start : start + BATCH]:
            for step in planner.plan(planner.parse(json.dumps(body))).steps:
                if isinstance(step, ScriptCall):
                    calls.append(step)
                    continue
                run(runner, calls)
                calls = []
                if everything == "invalidate":
                    store.invalidate_environment(step.at)
                else:
                    store.purge_environment()
        run(runner, calls)


def run(runner: ScriptRunner, calls: list[ScriptCall]) -> None:
    replies = runner.run_calls(calls)
    assert not [r for r in replies if isinstance(r, Exception)], replies


def differences(
    client: redis.Redis,
    policy: CacheUpdatePolicy,
    seed: int,
    runner_for: Any = None,
    everything: str = "invalidate",
) -> tuple[dict[str, Any], int]:
    """Write one random stream in one random delivery order; how the end state differs."""
    prefix = f"order-{uuid.uuid4().hex[:12]}"
    rng = random.Random(seed)
    sent = realistic_stream(rng, STREAM)
    warm = seeds(6) if policy is IF_EXISTS else []
    try:
        runner = runner_for(client) if runner_for else None
        write(client, prefix, policy, warm, runner, everything=everything)
        delivered = deliver(sent, rng)
        write(client, prefix, policy, delivered, runner, everything=everything)
        actual = read_state(client, KeyLayout(prefix))
        return state_differences(actual, warm + sent, prefix, policy), len(delivered)
    finally:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.unlink(key)


@pytest.mark.parametrize("policy", [UPSERT, IF_EXISTS])
@PROPERTY
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_any_delivery_order_ends_in_the_timestamp_order_state(
    client: redis.Redis, policy: CacheUpdatePolicy, seed: int
) -> None:
    found, delivered = differences(client, policy, seed)
    assert delivered > STREAM
    assert found == {}, f"{len(found)} keys differ from the model, e.g. {list(found.items())[:3]}"


def v2_0_scripts(client: redis.Redis) -> ScriptRunner:
    """Scripts with contract v2.0's rules 2 and 4: the broken variant the check must catch."""
    runner = ScriptRunner(client)
    prelude = script_source("_prelude")
    runner.scripts["v2_invalidate_scope"] = client.register_script(prelude + V2_0_INVALIDATE)
    usage = script_source("v2_write_usage").replace("ARGV[4] == '1' and ", "")
    runner.scripts["v2_write_usage"] = client.register_script(usage)
    return runner


def test_the_check_catches_contract_v2_0s_invalidation(client: redis.Redis) -> None:
    """Under UPSERT, v2.0's rules lose newer keys or leave stale ones on these streams."""
    found = [
        differences(client, UPSERT, seed, v2_0_scripts, "purge_environment")[0] for seed in range(5)
    ]
    assert all(found), [len(f) for f in found]
    print(f"v2.0 rules: keys differing from the model per stream: {[len(f) for f in found]}")


def without_tombstones(client: redis.Redis) -> ScriptRunner:
    """v2.1 without S#deleted: a late invalidation lets an older usage land after it."""
    runner = ScriptRunner(client)
    scope = script_source("v2_write_scope").replace(
        "local floor = deleted_version(KEYS[5], KEYS[i])", "local floor = nil"
    )
    assert scope != script_source("v2_write_scope")
    runner.scripts["v2_write_scope"] = client.register_script(scope)
    return runner


def test_the_check_catches_an_invalidation_that_forgets_what_it_deleted(
    client: redis.Redis,
) -> None:
    """Without the tombstones some streams end with a usage key older than the model's."""
    for seed in range(60):
        found, _ = differences(client, UPSERT, seed, without_tombstones)
        if found:
            print(f"without S#deleted: stream {seed} ends with {len(found)} keys off the model")
            return
    raise AssertionError("60 streams without tombstones all matched the model")
