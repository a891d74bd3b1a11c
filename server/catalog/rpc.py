"""CatalogService servicer: proto <-> domain, nothing else."""

from __future__ import annotations

import grpc
from smm.v1 import catalog_service_pb2 as pb
from smm.v1 import catalog_service_pb2_grpc as pb_grpc

from server.catalog.logic import CatalogLogic
from server.catalog.repo import CategoryRow, ServiceFields, ServicePosition, ServiceRow
from server.common import auth, idempotency
from server.common.convert import mask_paths, timestamp
from server.common.errors import InvalidArgument
from server.common.money import format_micros, parse_micros
from server.common.pagetoken import PageTokenCodec, page_size

CATEGORY_FIELDS = frozenset({"name", "sort_order", "enabled"})
SERVICE_FIELDS = frozenset(
    {
        "name", "description", "type", "category_id", "rate", "min_quantity", "max_quantity", "refill",
        "refill_days", "cancel", "dripfeed", "enabled", "sort_order",
    }
)  # fmt: skip
_PREFIX = "SERVICE_TYPE_"


def category_to_proto(row: CategoryRow) -> pb.Category:
    return pb.Category(
        id=row.id,
        name=row.name,
        sort_order=row.sort_order,
        enabled=row.enabled,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def service_to_proto(row: ServiceRow, currency: str) -> pb.Service:
    return pb.Service(
        id=row.id,
        name=row.name,
        description=row.description,
        type=pb.ServiceType.Value(_PREFIX + row.type),
        category_id=row.category_id,
        category_name=row.category_name,
        rate=format_micros(row.rate_micros),
        min_quantity=row.min_quantity,
        max_quantity=row.max_quantity,
        refill=row.refill,
        refill_days=row.refill_days,
        cancel=row.cancel,
        dripfeed=row.dripfeed,
        enabled=row.enabled,
        sort_order=row.sort_order,
        currency=currency,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def _type_name(value: int) -> str:
    name: str = (
        pb.ServiceType.Name(pb.ServiceType.ValueType(value)) if value in pb.ServiceType.values() else ""
    )
    return name.removeprefix(_PREFIX) if name != "SERVICE_TYPE_UNSPECIFIED" else ""


def service_fields(service: pb.Service) -> ServiceFields:
    return ServiceFields(
        category_id=service.category_id,
        name=service.name,
        description=service.description,
        type=_type_name(service.type),
        rate_micros=parse_micros(service.rate, field="service.rate"),
        min_quantity=service.min_quantity or 1,
        max_quantity=service.max_quantity or service.min_quantity or 1,
        refill=service.refill,
        refill_days=service.refill_days,
        cancel=service.cancel,
        dripfeed=service.dripfeed,
        enabled=service.enabled,
        sort_order=service.sort_order,
    )


def _service_change(service: pb.Service, path: str) -> tuple[str, object]:
    if path == "rate":
        return "rate_micros", parse_micros(service.rate, field="service.rate")
    if path == "type":
        return "type", _type_name(service.type)
    return path, getattr(service, path)


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(self, logic: CatalogLogic, tokens: PageTokenCodec, currency: str) -> None:
        self._logic = logic
        self._tokens = tokens
        self._currency = currency

    async def ListCategories(
        self, request: pb.ListCategoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCategoriesResponse:
        rows = await self._logic.categories_on_sale()
        return pb.ListCategoriesResponse(categories=[category_to_proto(r) for r in rows])

    async def ListServices(
        self, request: pb.ListServicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListServicesResponse:
        size = page_size(request.page_size, default=1000, maximum=5000)
        filters = {"category_id": request.category_id}
        after = None
        if request.page_token:
            after = ServicePosition(**self._tokens.decode(request.page_token, filters=filters))
        page = await self._logic.services_on_sale(
            category_id=request.category_id, after=after, page_size=size
        )
        token = self._tokens.encode(vars(page.next_position), filters=filters) if page.next_position else ""
        return pb.ListServicesResponse(
            services=[service_to_proto(r, self._currency) for r in page.services], next_page_token=token
        )

    async def GetService(
        self, request: pb.GetServiceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Service:
        return service_to_proto(await self._logic.service_on_sale(request.id), self._currency)

    async def CreateCategory(
        self, request: pb.CreateCategoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Category:
        key = idempotency.request_key("CreateCategory", auth.principal().actor, request.request_id, request)
        row = await self._logic.create_category(
            name=request.category.name,
            sort_order=request.category.sort_order,
            enabled=request.category.enabled,
            key=key,
        )
        return category_to_proto(row)

    async def UpdateCategory(
        self, request: pb.UpdateCategoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.Category:
        if request.category.id <= 0:
            raise InvalidArgument.for_field("category.id", "is required")
        paths = mask_paths(request.update_mask, request.category, allowed=CATEGORY_FIELDS, prefix="category")
        changes = {path: getattr(request.category, path) for path in paths}
        return category_to_proto(await self._logic.update_category(request.category.id, changes))

    async def CreateService(
        self, request: pb.CreateServiceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Service:
        key = idempotency.request_key("CreateService", auth.principal().actor, request.request_id, request)
        row = await self._logic.create_service(service_fields(request.service), key=key)
        return service_to_proto(row, self._currency)

    async def UpdateService(
        self, request: pb.UpdateServiceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Service:
        if request.service.id <= 0:
            raise InvalidArgument.for_field("service.id", "is required")
        paths = mask_paths(request.update_mask, request.service, allowed=SERVICE_FIELDS, prefix="service")
        changes = dict(_service_change(request.service, path) for path in paths)
        return service_to_proto(await self._logic.update_service(request.service.id, changes), self._currency)
