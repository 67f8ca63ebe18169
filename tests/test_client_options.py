"""ReaderOptions and the argument checks made before any I/O."""

from __future__ import annotations

import re

import pytest

from cache_pipeline.client.options import ReaderOptions, check_id, check_scope_id, check_values
from cache_pipeline.config import Settings
from cache_pipeline.errors import InvalidArgument


def test_edge_options_follow_the_settings_and_stiggs_defaults() -> None:
    settings = Settings(edge_api_url="http://127.0.0.1:8787", server_api_key="k")
    edge = ReaderOptions().edge(settings)
    assert (edge.url, edge.api_key, edge.budget_seconds, edge.retries) == (
        "http://127.0.0.1:8787",
        "k",
        10.0,
        3,
    )
    assert edge.base_delay_seconds == 2.0
    assert (ReaderOptions().lock_ttl_ms, ReaderOptions(lock_ttl_seconds=2).lock_ttl_ms) == (
        11000,
        2000,
    )
    assert ReaderOptions(upstream_timeout_seconds=3).lock_wait == 4.0


@pytest.mark.parametrize("good", ["acme:eu", "user@example.com", "cus 1", "a:b:c", "é"])
def test_ids_stigg_reads_are_accepted(good: str) -> None:
    assert check_scope_id("customer_id", good) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("a#b", "'#'"),
        ("a:r_b", "':r_'"),
        ("a:metadata", "':metadata'"),
        ("a}", "'}'"),
        ("a/b", "Edge API URL"),
        ("a&b", "Edge API URL"),
        ("\x85", "'\\x85'"),
    ],
)
def test_unsafe_ids_are_refused_with_the_argument_and_the_reason_named(bad: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^customer_id.*{re.escape(why)}") as caught:
        check_scope_id("customer_id", bad)
    assert isinstance(caught.value, ValueError)


def test_feature_ids_may_hold_url_characters_but_not_key_markers() -> None:
    assert check_id("feature_id", "a/b?c") == "a/b?c"
    with pytest.raises(InvalidArgument, match="feature_id"):
        check_id("feature_id", "x:credit_y")


def test_requested_values_must_be_a_list_of_strings() -> None:
    assert check_values("requested_values", ["a", "b"]) == ("a", "b")
    assert check_values("requested_values", None) is None
    for bad in ("ab", [1], {"a": 1}):
        with pytest.raises(InvalidArgument, match="requested_values"):
            check_values("requested_values", bad)
