"""The answer of ``get_entitlements``: every entitlement of one scope, as Stigg's SDK gives it.

The single getters answer with the Stigg-shaped results of ``cache_pipeline.client.answers``
(``BooleanEntitlement``, ``NumericEntitlement``, ``MeteredEntitlement``, ``EnumEntitlement``,
``CreditEntitlement``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cache_pipeline.client.answers import AnyEntitlement

Source = Literal["cache", "upstream", "fallback"]


@dataclass(frozen=True, slots=True)
class CustomerEntitlements:
    """Every entitlement of one (customer, resource) scope.

    ``entitlements`` is what Stigg's ``getEntitlements`` answers, in the map's order
    (an empty tuple for a customer the cache or the Edge API does not know).
    ``source`` says where the answer came from: ``cache`` (Redis or the in-process
    cache), ``upstream`` (the Edge API, after a miss) or ``fallback`` (neither could
    answer: ``entitlements`` are the configured ``entitlements_fallback``).
    ``timestamp`` is the version of the map (epoch ms), None for a fallback.
    ``access_denied_reason`` is the scope's metadata (``S:metadata``), which 4.x
    readers use; Stigg's 3.95.0 decisions do not.
    """

    customer_id: str
    resource_id: str | None
    entitlements: tuple[AnyEntitlement, ...]
    access_denied_reason: str | None
    source: Source
    timestamp: int | None

    def find(self, feature_id: str) -> AnyEntitlement | None:
        """The entitlement of that feature, or None."""
        for entitlement in self.entitlements:
            if entitlement.feature is not None and entitlement.feature.id == feature_id:
                return entitlement
        return None

    def to_stigg_json(self) -> list[dict[str, Any]]:
        """The JSON of the Node SDK's ``getEntitlements`` answer."""
        return [entitlement.to_stigg_json() for entitlement in self.entitlements]
