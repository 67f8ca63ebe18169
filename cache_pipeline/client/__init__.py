"""The reader SDK: entitlement checks from the Redis cache, the upstream API behind it.

>>> from cache_pipeline.client import EntitlementsCache
>>> cache = EntitlementsCache()               # settings from the environment
>>> cache.get_entitlement("cus-42", "feature-seats").has_access

``AsyncEntitlementsCache`` offers the same calls for asyncio. See docs/sdk.md.
"""

from cache_pipeline.client.aio import AsyncEntitlementsCache
from cache_pipeline.client.models import (
    CreditAccess,
    CustomerEntitlements,
    Entitlement,
    FeatureAccess,
    Source,
)
from cache_pipeline.client.options import ReaderOptions
from cache_pipeline.client.sync import EntitlementsCache
from cache_pipeline.errors import EntitlementsUnavailable, InvalidArgument

__all__ = [
    "AsyncEntitlementsCache",
    "CreditAccess",
    "CustomerEntitlements",
    "Entitlement",
    "EntitlementsCache",
    "EntitlementsUnavailable",
    "FeatureAccess",
    "InvalidArgument",
    "ReaderOptions",
    "Source",
]
