"""The store over TLS with an ACL user, against a redis-server started by the suite.

The server listens on a TLS port only (certificates from a throwaway CA) and has
its ``default`` user disabled; the store connects through ``connect(Settings(...))``
exactly as the service does with REDIS_TLS=1 and REDIS_USERNAME/REDIS_PASSWORD.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cache_pipeline.config import CacheUpdatePolicy, Settings
from cache_pipeline.errors import StoreError, StoreUnavailable
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store.connection import connect
from cache_pipeline.store.writer import Outcome, Store
from tests.support import factory
from tests.support.applying import Applier
from tests.support.factory import parsed
from tests.support.snapshot import read_state
from tests.support.tls import (
    PASSWORD,
    READONLY_PASSWORD,
    READONLY_USERNAME,
    USERNAME,
    Certificates,
    TlsRedisServer,
)

LAYOUT = KeyLayout("tls-test")


@pytest.fixture(scope="module")
def certificates() -> Certificates:
    return Certificates()


@pytest.fixture(scope="module")
def tls_server(certificates: Certificates) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(certificates)
    server.start()
    yield server
    server.stop()


def settings_for(server: TlsRedisServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_port": server.port,
        "redis_tls": True,
        "redis_tls_ca_file": str(server.certificates.ca_file),
        "redis_username": USERNAME,
        "redis_password": PASSWORD,
        "redis_timeout_secs": 2,
        **overrides,
    }
    return Settings(**values)


def apply_with(settings: Settings) -> Outcome:
    """Connect as the service would and apply one snapshot."""
    client = connect(settings)
    try:
        store = Applier.of(client, LAYOUT, ttl=60, policy=CacheUpdatePolicy.UPSERT)
        return store.apply(parsed(factory.entitlements("cus-1", 100)))
    finally:
        client.close()


def test_store_writes_over_tls_as_acl_user(tls_server: TlsRedisServer) -> None:
    client = connect(settings_for(tls_server))
    try:
        store = Applier.of(client, LAYOUT, ttl=60)
        seed = parsed(factory.entitlements("cus-1", 100, features={"seats": 1}))
        assert store.apply(seed, policy=CacheUpdatePolicy.UPSERT) is Outcome.WRITTEN
        batch = [
            parsed(factory.usage("cus-1", 200, "seats", 4)),
            parsed(factory.credits("cus-1", 200, "tokens", 9)),
        ]
        assert store.apply_batch(batch) == [Outcome.WRITTEN, Outcome.WRITTEN]
        state = read_state(client, LAYOUT)
        assert state[LAYOUT.customer("cus-1").feature_usage("seats")]["currentUsage"] == 4
        assert client.acl_whoami() == USERNAME
        assert store.store.invalidate_environment(2**41) > 0
    finally:
        client.close()


def test_wrong_password_is_a_clear_transient_error(tls_server: TlsRedisServer) -> None:
    """A rotated password heals when the new secret reaches the pod: wait, never die."""
    with pytest.raises(StoreUnavailable, match="Redis refused the credentials") as caught:
        apply_with(settings_for(tls_server, redis_password="wrong"))
    assert "invalid username-password pair" in str(caught.value)
    assert "wrong" not in str(caught.value)


def test_unknown_user_is_a_clear_transient_error(tls_server: TlsRedisServer) -> None:
    with pytest.raises(StoreUnavailable, match="Redis refused the credentials"):
        apply_with(settings_for(tls_server, redis_username="nobody"))


def test_missing_credentials_are_refused(tls_server: TlsRedisServer) -> None:
    settings = settings_for(tls_server, redis_username=None, redis_password=None)
    with pytest.raises(StoreUnavailable, match="Redis refused the credentials"):
        apply_with(settings)


def test_user_without_script_rights_gets_an_acl_error(tls_server: TlsRedisServer) -> None:
    """A planned write is refused for its message alone; a call the store runs on its own
    (the operator's invalidate) fails with the ACL named."""
    settings = settings_for(
        tls_server, redis_username=READONLY_USERNAME, redis_password=READONLY_PASSWORD
    )
    with pytest.raises(StoreError, match="no permissions to run the 'evalsha' command"):
        apply_with(settings)
    client = connect(settings)
    try:
        with pytest.raises(StoreError, match="ACL denies a command the store needs"):
            Store(client, LAYOUT, ttl=60).purge("cus-1", None, at=100)
    finally:
        client.close()


def test_client_trusting_another_ca_is_refused(tls_server: TlsRedisServer) -> None:
    other_ca = Certificates().ca_file
    with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        apply_with(settings_for(tls_server, redis_tls_ca_file=str(other_ca)))


def test_client_with_default_trust_store_is_refused(tls_server: TlsRedisServer) -> None:
    with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        apply_with(settings_for(tls_server, redis_tls_ca_file=None))


def test_plain_client_gets_no_answer(tls_server: TlsRedisServer) -> None:
    with pytest.raises(StoreUnavailable):
        apply_with(settings_for(tls_server, redis_tls=False, redis_timeout_secs=0.5))
