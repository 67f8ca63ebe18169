"""The one place Redis key names are built (CONTRACT.md v2, section 2).

``P`` is ENVIRONMENT_PREFIX; the scope ``S`` is ``P:c_<customerId>`` or
``P:c_<customerId>:r_<resourceId>``, ids raw as Stigg's SDK writes them. In Redis
Cluster mode the scope part is wrapped in a hash tag (``P:{c_<id>...}``) so that
every key of one scope lives in one slot (read by our SDK only).

=============================  =====================================================
key                            value
=============================  =====================================================
``S``                          entitlements map ``{"<featureId>": {...}, ...}``
``S:metadata``                 ``{"accessDeniedReason": ...}``
``S:f_<featureId>``            usage of a metered feature
``S:credit_<currencyId>``      credit balance
``<value key>#timestamp``      version (epoch ms, plain integer) of the value
``S#keys``                     private: set of the usage and credit keys written,
                               so invalidation finds them without scanning
``S#invalidated``              private: time of the scope's latest invalidation
``S#deleted``                  private: hash of the versions invalidations deleted
                               usage and credit keys at (rule 6: no older usage
                               lands where a newer one was deleted)
``S#lock``                     private: the reader SDK's miss lock of the scope
``P:__schema__``               key-schema version marker of the environment
``P:__invalidated__``          private: time of the environment's latest
                               ``{"all": true}`` invalidation
``P:__probe__``                ``1`` for 10 s: a worker checking that Redis takes
                               writes again after a failed write
=============================  =====================================================

A raw id never holds ``#``, ``{``, ``}``, a control character or a ``:`` followed by
``r_``, ``f_``, ``credit_`` or ``metadata`` (``unsafe_id_problem``): no id reaches
another scope's keys, a ``#timestamp`` key or a private key, and no Stigg reader
mistakes a private key (``#`` in its name) for a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TIMESTAMP_SUFFIX = "#timestamp"
_INDEX_SUFFIX = "#keys"
_INVALIDATED_SUFFIX = "#invalidated"
_DELETED_SUFFIX = "#deleted"
_LOCK_SUFFIX = "#lock"
SCHEMA_VERSION = "2"
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})

# These would let an id reach another scope's keys or a #timestamp key (a C0 or C1
# control character is refused too).
_UNSAFE_ID = re.compile(r"[#{}\x00-\x1f\x7f-\x9f]|:(?:r_|f_|credit_|metadata)")


def unsafe_id_problem(value: str) -> str | None:
    """Why a raw id could reach keys that are not its own (reason ``unsafe_id``).

    None for a safe id such as ``acme:eu`` or ``user@example.com``.
    """
    found = _UNSAFE_ID.search(value)
    if found is None:
        return None
    return f"id {value[:80]!r} holds {found.group()!r}, which could name another scope's keys"


def timestamp_key(value_key: str) -> str:
    """The version key that belongs to a value key."""
    return value_key + TIMESTAMP_SUFFIX


def value_key_of(key: str) -> str:
    """The value key a key names: itself, or the one whose version it holds."""
    return key.removesuffix(TIMESTAMP_SUFFIX)


def is_private(key: str) -> bool:
    """A key the service keeps for itself (never read by a Stigg reader)."""
    return key.endswith((_INDEX_SUFFIX, _INVALIDATED_SUFFIX, _DELETED_SUFFIX, _LOCK_SUFFIX))


@dataclass(frozen=True, slots=True)
class CustomerKeys:
    """Every key name of one (customer, resource) scope."""

    entitlements: str

    @property
    def metadata(self) -> str:
        return f"{self.entitlements}:metadata"

    @property
    def index(self) -> str:
        """Private: the usage and credit keys written for the scope."""
        return self.entitlements + _INDEX_SUFFIX

    @property
    def invalidated(self) -> str:
        """Private: time (epoch ms) of the scope's latest invalidation."""
        return self.entitlements + _INVALIDATED_SUFFIX

    @property
    def deleted(self) -> str:
        """Private: {usage or credit key: the version an invalidation deleted it at}."""
        return self.entitlements + _DELETED_SUFFIX

    @property
    def lock(self) -> str:
        """Private: the reader SDK's miss lock of this scope (same slot as its other keys)."""
        return self.entitlements + _LOCK_SUFFIX

    def feature_usage(self, feature_id: str) -> str:
        return f"{self.entitlements}:f_{feature_id}"

    def credit(self, currency_id: str) -> str:
        return f"{self.entitlements}:credit_{currency_id}"


_USAGE_MARKERS = re.compile(r":(?:f_|credit_)")


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Key names of one environment, in plain or Redis Cluster form."""

    prefix: str
    cluster: bool = False

    def customer(self, customer_id: str, resource_id: str | None = None) -> CustomerKeys:
        scope = f"c_{customer_id}"
        if resource_id is not None:
            scope += f":r_{resource_id}"
        return CustomerKeys(
            f"{self.prefix}:{{{scope}}}" if self.cluster else f"{self.prefix}:{scope}"
        )

    def usage_owner(self, key: str) -> CustomerKeys | None:
        """The scope a usage or credit key of this environment belongs to; None for any other key.

        Unambiguous for keys the service writes: no id holds ``:f_`` or ``:credit_``.
        """
        head = self.prefix + ":"
        if not key.startswith(head):
            return None
        found = _USAGE_MARKERS.search(key, len(head))
        return CustomerKeys(key[: found.start()]) if found else None

    @property
    def schema_marker(self) -> str:
        return f"{self.prefix}:__schema__"

    @property
    def write_probe(self) -> str:
        return f"{self.prefix}:__probe__"

    @property
    def environment_invalidated(self) -> str:
        """Private: time (epoch ms) of the environment's latest ``{"all": true}``."""
        return f"{self.prefix}:__invalidated__"

    @property
    def environment_gate(self) -> str | None:
        """The key write scripts check ``{"all": true}`` against: None in Redis Cluster mode,
        where it lives in another slot than the scope being written (it is not checked)."""
        return None if self.cluster else self.environment_invalidated

    @property
    def environment_pattern(self) -> str:
        """SCAN MATCH pattern for every key of the environment."""
        return self.prefix.translate(_GLOB_SPECIAL) + ":*"
