"""The reader SDK: entitlement checks from the Redis cache, Stigg's Edge API behind it.

>>> from cache_pipeline.client import EntitlementsCache
>>> cache = EntitlementsCache()               # settings from the environment
>>> cache.get_metered_entitlement("cus-42", "feature-seats", requested_usage=1).has_access

The getters answer as Stigg's Node SDK (3.95.0) answers from the same Redis keys.
``AsyncEntitlementsCache`` offers the same calls for asyncio. See docs/sdk.md.
"""

from cache_pipeline.client.aio import AsyncEntitlementsCache
from cache_pipeline.client.answers import (
    AnyEntitlement,
    BooleanEntitlement,
    CreditEntitlement,
    EnumEntitlement,
    Feature,
    MeteredEntitlement,
    NumericEntitlement,
)
from cache_pipeline.client.models import CustomerEntitlements, Source
from cache_pipeline.client.options import ReaderOptions
from cache_pipeline.client.sync import EntitlementsCache
from cache_pipeline.errors import InvalidArgument

__all__ = [
    "AnyEntitlement",
    "AsyncEntitlementsCache",
    "BooleanEntitlement",
    "CreditEntitlement",
    "CustomerEntitlements",
    "EntitlementsCache",
    "EnumEntitlement",
    "Feature",
    "InvalidArgument",
    "MeteredEntitlement",
    "NumericEntitlement",
    "ReaderOptions",
    "Source",
]
