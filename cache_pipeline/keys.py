"""The one place Redis key names are built (CONTRACT.md section 2).

``P`` is ENVIRONMENT_PREFIX; ``C`` is ``c_<customerId>`` or
``c_<customerId>:r_<resourceId>``; in Redis Cluster mode ``C`` is wrapped in a
hash tag (``{C}``) so that every key of one customer lives in one slot.

=============================  =====================================================
key                            value
=============================  =====================================================
``P:C``                        entitlements map ``{"FEATURE:<id>": {...}, ...}``
``P:C:metadata``               ``{"accessDeniedReason": ...}``
``P:C:f_<featureId>``          feature usage
``P:C:credit_<currencyId>``    credit balance
``P:C:keys``                   set of the usage and credit keys ever written for C,
                               so invalidation finds them without scanning
``P:C:lock``                   reader SDK miss lock: token of the one reader that
                               asks the upstream for C (SET NX PX, short-lived)
``<value key>#timestamp``      version (epoch ms) of the message that wrote the value
``P:__schema__``               key-schema version marker of the environment
=============================  =====================================================

Ids are percent-encoded for ``%``, ``:``, ``{``, ``}`` and ``#`` so no id can
reach another customer's keys or forge a ``#timestamp`` key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TIMESTAMP_SUFFIX = "#timestamp"
SCHEMA_VERSION = "1"
_ESCAPES = str.maketrans({"%": "%25", ":": "%3A", "{": "%7B", "}": "%7D", "#": "%23"})
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


# Contract v2 uses ids raw, as Stigg's SDK does; these would let an id reach another
# scope's keys or a #timestamp key (a C0 or C1 control character is refused too).
_UNSAFE_ID = re.compile(r"[#{}\x00-\x1f\x7f-\x9f]|:(?:r_|f_|credit_|metadata)")


def unsafe_id_problem(value: str) -> str | None:
    """Why a raw id could reach keys that are not its own (contract v2, reason ``unsafe_id``).

    None for a safe id such as ``acme:eu`` or ``user@example.com``.
    """
    found = _UNSAFE_ID.search(value)
    if found is None:
        return None
    return f"id {value[:80]!r} holds {found.group()!r}, which could name another scope's keys"


def encode_id(value: str) -> str:
    """Percent-encode the characters that have a meaning in the key layout."""
    return value.translate(_ESCAPES)


def timestamp_key(value_key: str) -> str:
    """The version key that belongs to a value key."""
    return value_key + TIMESTAMP_SUFFIX


@dataclass(frozen=True, slots=True)
class CustomerKeys:
    """Every key name of one (customer, resource) scope."""

    entitlements: str
    metadata: str
    index: str
    _base: str

    def feature_usage(self, feature_id: str) -> str:
        return f"{self._base}:f_{encode_id(feature_id)}"

    def credit(self, currency_id: str) -> str:
        return f"{self._base}:credit_{encode_id(currency_id)}"

    @property
    def lock(self) -> str:
        """The reader SDK's miss lock of this scope (same slot as its other keys)."""
        return f"{self._base}:lock"

    def usage_for(self, kind: str, entitlement_id: str) -> str:
        """The usage key of an entitlement entry of the given kind."""
        return (
            self.credit(entitlement_id) if kind == "CREDIT" else self.feature_usage(entitlement_id)
        )


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Key names of one environment, in plain or Redis Cluster form."""

    prefix: str
    cluster: bool = False

    def customer(self, customer_id: str, resource_id: str | None = None) -> CustomerKeys:
        scope = f"c_{encode_id(customer_id)}"
        if resource_id is not None:
            scope += f":r_{encode_id(resource_id)}"
        base = f"{self.prefix}:{{{scope}}}" if self.cluster else f"{self.prefix}:{scope}"
        return CustomerKeys(
            entitlements=base, metadata=f"{base}:metadata", index=f"{base}:keys", _base=base
        )

    @property
    def schema_marker(self) -> str:
        return f"{self.prefix}:__schema__"

    @property
    def environment_pattern(self) -> str:
        """SCAN MATCH pattern for every key of the environment."""
        return self.prefix.translate(_GLOB_SPECIAL) + ":*"

    @staticmethod
    def entitlement_field(kind: str, entitlement_id: str) -> str:
        """Field name of an entitlement inside the entitlements map."""
        return f"{kind}:{entitlement_id}"
