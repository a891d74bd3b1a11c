"""CatalogService servicer: proto <-> domain, nothing else."""

from __future__ import annotations

import grpc
from smm.v1 import catalog_service_pb2 as pb
from smm.v1 import catalog_service_pb2_grpc as pb_grpc

from server.catalog.admin import AdminView, CatalogAdmin, RuleFields
from server.catalog.logic import CatalogLogic
from server.catalog.pricing import PricingRule
from server.catalog.repo import CategoryRow, ServiceFields, ServicePosition, ServiceRow
from server.common import auth, idempotency
from server.common.convert import mask_paths, timestamp
from server.common.errors import InvalidArgument
from server.common.money import (
    format_bps,
    format_micros,
    format_rate,
    parse_micros,
    parse_percent_bps,
    price_of,
)
from server.common.pagetoken import PageTokenCodec, newest_first_page, page_size
from server.common.service_types import QUANTITY_TYPES

CATEGORY_FIELDS = frozenset({"name", "sort_order", "enabled"})
SERVICE_FIELDS = frozenset(
    {
        "name", "description", "type", "category_id", "rate", "min_quantity", "max_quantity", "refill",
        "refill_days", "cancel", "dripfeed", "enabled", "sort_order", "one_active_order_per_link",
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


def service_to_proto(row: ServiceRow, currency: str, discount_bps: int = 0) -> pb.Service:
    """``discount_bps``: the caller's, for ``caller_rate`` (what 1000 units cost them)."""
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
        # What an order may use: only the quantity types take runs (validation._dripfeed), whatever
        # the provider listed or staff set, so `services` never advertises a drip-feed `add` refuses.
        dripfeed=row.dripfeed and row.type in QUANTITY_TYPES,
        enabled=row.enabled,
        sort_order=row.sort_order,
        currency=currency,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        average_completion_seconds=row.average_completion_s,
        one_active_order_per_link=row.one_active_order_per_link,
        caller_rate=format_micros(price_of(row.rate_micros, 1000, discount_bps)),
    )


def admin_service_to_proto(view: AdminView, currency: str) -> pb.AdminService:
    row = view.admin
    message = pb.AdminService(
        service=service_to_proto(view.service, currency),
        fallbacks=[
            pb.ProviderMapping(provider_id=f.provider_id, upstream_service_id=f.upstream_service_id)
            for f in view.fallbacks
        ],
        provider_rate=_money(row.provider_rate_micros),
        provider_currency=row.provider_currency,
        exchange_rate=format_rate(row.exchange_rate) if row.exchange_rate is not None else "",
        cost=_money(row.cost_micros),
        manual_price=row.manual_price,
        admin_edited=row.admin_edited,
        quarantined=row.quarantined,
        quarantine_reason=row.quarantine_reason,
        pending_provider_rate=_money(row.pending_provider_rate_micros),
        gone_upstream_time=timestamp(row.gone_upstream_time),
        upstream_dripfeed=row.upstream_dripfeed,
    )
    if row.provider_id is not None:
        message.provider.CopyFrom(
            pb.ProviderMapping(provider_id=row.provider_id, upstream_service_id=row.upstream_service_id)
        )
    return message


def _money(micros: int | None) -> str:
    return "" if micros is None else format_micros(micros)


def rule_to_proto(rule: PricingRule) -> pb.PricingRule:
    return pb.PricingRule(
        id=rule.id,
        category_id=rule.category_id or 0,
        service_id=rule.service_id or 0,
        markup_percent=format_bps(rule.markup_bps),
        fixed_amount=format_micros(rule.fixed_micros),
        round_to=format_micros(rule.round_to_micros, min_fraction_digits=0),
        update_time=timestamp(rule.update_time),
    )


RULE_FIELDS = frozenset({"markup_percent", "fixed_amount", "round_to"})
MAX_MARKUP_BPS = 10_000_000  # 100,000 %: generous, but a typo of many zeros is refused


def rule_values(rule: pb.PricingRule, paths: frozenset[str] | set[str] = RULE_FIELDS) -> dict[str, int]:
    values: dict[str, int] = {}
    if "markup_percent" in paths:
        values["markup_bps"] = parse_percent_bps(
            rule.markup_percent or "0", field="pricing_rule.markup_percent", maximum_bps=MAX_MARKUP_BPS
        )
    if "fixed_amount" in paths:
        values["fixed_micros"] = parse_micros(rule.fixed_amount or "0", field="pricing_rule.fixed_amount")
    if "round_to" in paths:
        values["round_to_micros"] = parse_micros(
            rule.round_to or "0.0001", field="pricing_rule.round_to", allow_zero=False
        )
    return values


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
        one_active_order_per_link=service.one_active_order_per_link,
    )


def _service_change(service: pb.Service, path: str) -> tuple[str, object]:
    if path == "rate":
        return "rate_micros", parse_micros(service.rate, field="service.rate")
    if path == "type":
        return "type", _type_name(service.type)
    return path, getattr(service, path)


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(
        self, logic: CatalogLogic, admin: CatalogAdmin, tokens: PageTokenCodec, currency: str
    ) -> None:
        self._logic = logic
        self._admin = admin
        self._tokens = tokens
        self._currency = currency

    async def ListCategories(
        self, request: pb.ListCategoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCategoriesResponse:
        rows = await self._logic.categories_on_sale()
        return pb.ListCategoriesResponse(categories=[category_to_proto(r) for r in rows])

    async def ListAdminCategories(
        self, request: pb.ListAdminCategoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAdminCategoriesResponse:
        rows = await self._logic.all_categories()
        return pb.ListAdminCategoriesResponse(categories=[category_to_proto(r) for r in rows])

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
        discount = await self._logic.discount_bps(auth.principal().user_id)
        return pb.ListServicesResponse(
            services=[service_to_proto(r, self._currency, discount) for r in page.services],
            next_page_token=token,
        )

    async def GetService(
        self, request: pb.GetServiceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Service:
        row = await self._logic.service_on_sale(request.id)
        return service_to_proto(row, self._currency, await self._logic.discount_bps(auth.principal().user_id))

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

    async def ListAdminServices(
        self, request: pb.ListAdminServicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAdminServicesResponse:
        size = page_size(request.page_size, default=100, maximum=1000)
        enabled = request.enabled if request.HasField("enabled") else None
        filters: dict[str, object] = {
            "provider_id": request.provider_id,
            "category_id": request.category_id,
            "quarantined_only": request.quarantined_only,
            "query": request.query,
        }
        if enabled is not None:  # only when set: tokens issued without the filter stay valid
            filters["enabled"] = enabled
        views, token = await newest_first_page(
            self._tokens,
            request.page_token,
            filters,
            size,
            lambda before_id, limit: self._admin.list_services(
                provider_id=request.provider_id,
                category_id=request.category_id,
                quarantined_only=request.quarantined_only,
                enabled=enabled,
                query=request.query,
                before_id=before_id,
                limit=limit,
            ),
        )
        return pb.ListAdminServicesResponse(
            services=[admin_service_to_proto(v, self._currency) for v in views], next_page_token=token
        )

    async def GetAdminService(
        self, request: pb.GetAdminServiceRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdminService:
        return admin_service_to_proto(await self._admin.get(request.id), self._currency)

    async def DeleteService(
        self, request: pb.DeleteServiceRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteServiceResponse:
        await self._admin.delete_service(request.id)
        return pb.DeleteServiceResponse()

    async def DeleteCategory(
        self, request: pb.DeleteCategoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCategoryResponse:
        await self._admin.delete_category(request.id)
        return pb.DeleteCategoryResponse()

    async def SetServiceProviders(
        self, request: pb.SetServiceProvidersRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdminService:
        primary = None
        if request.HasField("provider"):
            primary = (request.provider.provider_id, request.provider.upstream_service_id)
        fallbacks = [(f.provider_id, f.upstream_service_id) for f in request.fallbacks]
        view = await self._admin.set_providers(request.id, primary, fallbacks)
        return admin_service_to_proto(view, self._currency)

    async def AcceptServicePrice(
        self, request: pb.AcceptServicePriceRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdminService:
        return admin_service_to_proto(await self._admin.accept_price(request.id), self._currency)

    async def BulkUpdateServices(
        self, request: pb.BulkUpdateServicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.BulkUpdateServicesResponse:
        rate = parse_micros(request.rate, field="rate") if request.rate else None
        percent = (
            parse_percent_bps(
                request.percent, field="percent", minimum_bps=-9_900, maximum_bps=MAX_MARKUP_BPS
            )
            if request.percent
            else None
        )
        updated = await self._admin.bulk(
            list(request.service_ids), request.action, rate_micros=rate, percent_bps=percent
        )
        return pb.BulkUpdateServicesResponse(updated_count=updated)

    async def ListPricingRules(
        self, request: pb.ListPricingRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPricingRulesResponse:
        return pb.ListPricingRulesResponse(
            pricing_rules=[rule_to_proto(r) for r in await self._admin.rules()]
        )

    async def CreatePricingRule(
        self, request: pb.CreatePricingRuleRequest, context: grpc.aio.ServicerContext
    ) -> pb.PricingRule:
        rule = request.pricing_rule
        values = rule_values(rule)
        fields = RuleFields(
            category_id=rule.category_id or None,
            service_id=rule.service_id or None,
            markup_bps=values["markup_bps"],
            fixed_micros=values["fixed_micros"],
            round_to_micros=values["round_to_micros"],
        )
        return rule_to_proto(await self._admin.create_rule(fields))

    async def UpdatePricingRule(
        self, request: pb.UpdatePricingRuleRequest, context: grpc.aio.ServicerContext
    ) -> pb.PricingRule:
        rule = request.pricing_rule
        if rule.id <= 0:
            raise InvalidArgument.for_field("pricing_rule.id", "is required")
        paths = mask_paths(request.update_mask, rule, allowed=RULE_FIELDS, prefix="pricing_rule")
        return rule_to_proto(await self._admin.update_rule(rule.id, rule_values(rule, set(paths))))

    async def DeletePricingRule(
        self, request: pb.DeletePricingRuleRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePricingRuleResponse:
        await self._admin.delete_rule(request.id)
        return pb.DeletePricingRuleResponse()
