"""What an empty panel starts with, created through the gRPC API like an admin would (no SQL): the
demo provider with its services synced, or (without a demo provider) a small catalog.

Every create carries a fixed request_id, so a run interrupted halfway and started again gets the
rows the first run made instead of duplicates (AIP-155).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from smm.v1 import catalog_service_pb2 as pb
from smm.v1 import catalog_service_pb2_grpc as pb_grpc
from smm.v1 import providers_service_pb2 as providers_pb
from smm.v1 import providers_service_pb2_grpc as providers_pb_grpc

if TYPE_CHECKING:
    # Only in the .pyi: what CatalogServiceStub(<aio channel>) is.
    from smm.v1.catalog_service_pb2_grpc import CatalogServiceAsyncStub

from core.config import Settings
from ops.grpc_client import Metadata, internal_metadata

__all__ = [
    "CATEGORIES",
    "DEMO_PROVIDER_NAME",
    "SERVICES",
    "SeedService",
    "seed_catalog",
    "seed_demo_provider",
]

TOOL = "seed"
_CALL_TIMEOUT_S = 10.0

CATEGORIES: tuple[str, ...] = ("Instagram", "YouTube", "TikTok")


@dataclass(frozen=True)
class SeedService:
    key: str  # stable; part of the request_id
    category: str
    service: pb.Service  # everything but category_id, which the server assigns to the category


def _service(
    name: str,
    type_: pb.ServiceType.ValueType,
    rate: str,
    low: int,
    high: int,
    *,
    refill: bool = False,
    dripfeed: bool = False,
    cancel: bool = False,
) -> pb.Service:
    return pb.Service(
        name=name,
        type=type_,
        rate=rate,
        min_quantity=low,
        max_quantity=high,
        refill=refill,
        refill_days=30 if refill else 0,
        dripfeed=dripfeed,
        cancel=cancel,
        enabled=True,
    )


SERVICES: tuple[SeedService, ...] = (
    SeedService(
        "instagram-followers",
        "Instagram",
        _service(
            "Instagram Followers [Refill 30 days]",
            pb.SERVICE_TYPE_DEFAULT,
            "0.90",
            50,
            100_000,
            refill=True,
            dripfeed=True,
            cancel=True,
        ),
    ),
    SeedService(
        "instagram-likes-package",
        "Instagram",
        _service("Instagram Likes Package [1000 likes]", pb.SERVICE_TYPE_PACKAGE, "2.50", 1, 1),
    ),
    SeedService(
        "instagram-custom-comments",
        "Instagram",
        _service(
            "Instagram Custom Comments", pb.SERVICE_TYPE_CUSTOM_COMMENTS, "8.00", 10, 1_500, cancel=True
        ),
    ),
    SeedService(
        "instagram-story-poll-votes",
        "Instagram",
        _service("Instagram Story Poll Votes", pb.SERVICE_TYPE_POLL, "1.20", 100, 50_000),
    ),
    SeedService(
        "instagram-auto-likes",
        "Instagram",
        _service("Instagram Auto Likes [Subscription]", pb.SERVICE_TYPE_SUBSCRIPTIONS, "1.50", 100, 10_000),
    ),
    SeedService(
        "youtube-views",
        "YouTube",
        _service("YouTube Views", pb.SERVICE_TYPE_DEFAULT, "1.80", 500, 1_000_000, dripfeed=True),
    ),
    SeedService(
        "tiktok-views",
        "TikTok",
        _service("TikTok Views", pb.SERVICE_TYPE_DEFAULT, "0.05", 100, 10_000_000, cancel=True),
    ),
)


async def seed_catalog(target: str, settings: Settings) -> bool:
    """Create the demo catalog at `target` if it sells nothing yet; True when it did."""
    metadata = internal_metadata(settings, TOOL)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.CatalogServiceStub(channel)
        listed = await stub.ListServices(
            pb.ListServicesRequest(page_size=1), metadata=metadata, timeout=_CALL_TIMEOUT_S
        )
        if listed.services:
            return False
        category_ids = await _create_categories(stub, metadata)
        await _create_services(stub, metadata, category_ids)
    return True


async def _create_categories(stub: CatalogServiceAsyncStub, metadata: Metadata) -> dict[str, int]:
    ids: dict[str, int] = {}
    for position, name in enumerate(CATEGORIES, start=1):
        request = pb.CreateCategoryRequest(
            category=pb.Category(name=name, sort_order=position, enabled=True),
            request_id=f"seed:category:{name.lower()}",
        )
        created = await stub.CreateCategory(request, metadata=metadata, timeout=_CALL_TIMEOUT_S)
        ids[name] = created.id
    return ids


async def _create_services(
    stub: CatalogServiceAsyncStub, metadata: Metadata, category_ids: dict[str, int]
) -> None:
    for position, spec in enumerate(SERVICES, start=1):
        service = pb.Service()
        service.CopyFrom(spec.service)
        service.category_id = category_ids[spec.category]
        service.sort_order = position
        request = pb.CreateServiceRequest(service=service, request_id=f"seed:service:{spec.key}")
        await stub.CreateService(request, metadata=metadata, timeout=_CALL_TIMEOUT_S)


DEMO_PROVIDER_NAME = "Demo provider"


async def seed_demo_provider(target: str, settings: Settings, api_url: str) -> int | None:
    """Add the demo provider at `target` if there is no provider yet, and sync its services now (so
    the catalog is on sale when `smm dev` says it is up). The number of services synced, or None
    when a provider existed. The create carries a fixed request_id: a rerun does not add a second."""
    metadata = internal_metadata(settings, TOOL)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = providers_pb_grpc.ProvidersServiceStub(channel)
        listed = await stub.ListProviders(
            providers_pb.ListProvidersRequest(), metadata=metadata, timeout=_CALL_TIMEOUT_S
        )
        if listed.providers:
            return None
        provider = providers_pb.Provider(
            name=DEMO_PROVIDER_NAME,
            api_url=api_url,
            api_key=settings.demo_provider_key.get_secret_value() or "demo-key",
            currency="USD",
            enabled=True,
            enable_new_services=True,
        )
        request = providers_pb.CreateProviderRequest(provider=provider, request_id="seed:provider:demo")
        created = await stub.CreateProvider(request, metadata=metadata, timeout=_CALL_TIMEOUT_S)
        queued = await stub.SyncProvider(
            providers_pb.SyncProviderRequest(id=created.id), metadata=metadata, timeout=_CALL_TIMEOUT_S
        )
        run = await stub.RunSync(providers_pb.RunSyncRequest(id=queued.id), metadata=metadata, timeout=120)
        if run.status != "succeeded":
            raise RuntimeError(f"the demo provider's sync failed: {run.error}")
        return run.created
