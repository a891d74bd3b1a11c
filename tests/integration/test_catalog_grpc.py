"""CatalogService over real gRPC against real PostgreSQL."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from smm.v1 import catalog_service_pb2 as pb
from smm.v1 import catalog_service_pb2_grpc as pb_grpc

from tests.fix_grpc import anonymous_metadata, system_metadata

pytestmark = pytest.mark.integration


def error_reason(exc: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, dict(info.metadata)
    raise AssertionError("no ErrorInfo")


async def make_catalog(stub: pb_grpc.CatalogServiceStub) -> tuple[pb.Category, pb.Service]:
    category = await stub.CreateCategory(
        pb.CreateCategoryRequest(category=pb.Category(name="Instagram", enabled=True)),
        metadata=system_metadata(),
    )
    service = await stub.CreateService(
        pb.CreateServiceRequest(
            service=pb.Service(
                name="Followers",
                type=pb.SERVICE_TYPE_DEFAULT,
                category_id=category.id,
                rate="0.90",
                min_quantity=50,
                max_quantity=10000,
                refill=True,
                refill_days=30,
                cancel=True,
                enabled=True,
            )
        ),
        metadata=system_metadata(),
    )
    return category, service


async def test_create_and_read_the_catalog(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    _category, service = await make_catalog(stub)
    assert service.rate == "0.90"
    assert service.category_name == "Instagram"
    assert service.currency == "USD"

    listed = await stub.ListServices(pb.ListServicesRequest(), metadata=anonymous_metadata())
    assert [s.id for s in listed.services] == [service.id]
    assert listed.services[0].type == pb.SERVICE_TYPE_DEFAULT
    assert listed.next_page_token == ""
    categories = await stub.ListCategories(pb.ListCategoriesRequest(), metadata=anonymous_metadata())
    assert [c.name for c in categories.categories] == ["Instagram"]
    got = await stub.GetService(pb.GetServiceRequest(id=service.id), metadata=anonymous_metadata())
    assert got.max_quantity == 10000


async def test_disabled_services_are_not_on_sale(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    _, service = await make_catalog(stub)
    await stub.UpdateService(
        pb.UpdateServiceRequest(
            service=pb.Service(id=service.id, enabled=False),
            update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
        ),
        metadata=system_metadata(),
    )
    listed = await stub.ListServices(pb.ListServicesRequest(), metadata=anonymous_metadata())
    assert list(listed.services) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetService(pb.GetServiceRequest(id=service.id), metadata=anonymous_metadata())
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value)[0] == "SERVICE_NOT_FOUND"


async def test_pages_are_keyset_and_signed(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    category, _ = await make_catalog(stub)
    for index in range(4):
        await stub.CreateService(
            pb.CreateServiceRequest(
                service=pb.Service(
                    name=f"Likes {index}", type=pb.SERVICE_TYPE_DEFAULT, category_id=category.id, rate="1.5",
                    min_quantity=10, max_quantity=100, enabled=True, sort_order=index,
                )
            ),
            metadata=system_metadata(),
        )  # fmt: skip
    seen: list[int] = []
    token = ""
    while True:
        page = await stub.ListServices(
            pb.ListServicesRequest(page_size=2, page_token=token), metadata=anonymous_metadata()
        )
        seen.extend(s.id for s in page.services)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 5 == len(set(seen))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListServices(
            pb.ListServicesRequest(page_token=token + "x" if token else "garbage"),
            metadata=anonymous_metadata(),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_writes_need_an_admin_or_system_actor(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateCategory(
            pb.CreateCategoryRequest(category=pb.Category(name="X")), metadata=anonymous_metadata()
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(caught.value)[0] == "SIGN_IN_REQUIRED"


async def test_internal_credential_is_required(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    for metadata in [(), (("x-smm-internal-token", "wrong"),)]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListServices(pb.ListServicesRequest(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(caught.value)[0] == "INTERNAL_CREDENTIAL_REQUIRED"


async def test_bad_input_is_a_field_violation(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    category, _ = await make_catalog(stub)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateService(
            pb.CreateServiceRequest(
                service=pb.Service(
                    name="", category_id=category.id, rate="1e5", min_quantity=10, max_quantity=5
                )
            ),
            metadata=system_metadata(),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR))
    assert [v.field for v in bad.field_violations] == ["service.rate"]


async def test_unknown_category_and_duplicate_name(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    await make_catalog(stub)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateCategory(
            pb.CreateCategoryRequest(category=pb.Category(name="Instagram")), metadata=system_metadata()
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateService(
            pb.CreateServiceRequest(
                service=pb.Service(
                    name="S",
                    type=pb.SERVICE_TYPE_DEFAULT,
                    category_id=999_999,
                    rate="1",
                    min_quantity=1,
                    max_quantity=2,
                )
            ),
            metadata=system_metadata(),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value)[0] == "UNKNOWN_CATEGORY"


async def test_request_id_makes_creates_idempotent_under_concurrency(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    request = pb.CreateCategoryRequest(
        category=pb.Category(name="TikTok", enabled=True), request_id="seed-tiktok"
    )
    results = await asyncio.gather(
        *(stub.CreateCategory(request, metadata=system_metadata()) for _ in range(8))
    )
    assert len({r.id for r in results}) == 1
    other = pb.CreateCategoryRequest(category=pb.Category(name="Other"), request_id="seed-tiktok")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateCategory(other, metadata=system_metadata())
    assert error_reason(caught.value)[0] == "REQUEST_ID_REUSED"


async def test_writes_emit_outbox_events(channel: grpc.aio.Channel, pool: object) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    await make_catalog(stub)
    async with pool.connection() as conn:  # type: ignore[attr-defined]
        rows = await (await conn.execute("SELECT subject FROM outbox_events ORDER BY id")).fetchall()
    assert [r[0] for r in rows] == ["smm.catalog.category.changed", "smm.catalog.service.changed"]


async def test_pricing_rule_round_to_above_1000_is_a_field_violation(channel: grpc.aio.Channel) -> None:
    # The column allows rounding to at most 1000 units; parse_micros alone accepts up to 10^9.
    stub = pb_grpc.CatalogServiceStub(channel)
    category, _service = await make_catalog(stub)
    [default] = (
        await stub.ListPricingRules(pb.ListPricingRulesRequest(), metadata=system_metadata())
    ).pricing_rules
    for call in (
        stub.CreatePricingRule(
            pb.CreatePricingRuleRequest(
                pricing_rule=pb.PricingRule(category_id=category.id, markup_percent="10", round_to="5000")
            ),
            metadata=system_metadata(),
        ),
        stub.UpdatePricingRule(
            pb.UpdatePricingRuleRequest(
                pricing_rule=pb.PricingRule(id=default.id, round_to="1000.000001"),
                update_mask=field_mask_pb2.FieldMask(paths=["round_to"]),
            ),
            metadata=system_metadata(),
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
        assert status is not None
        fields = []
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields += [v.field for v in bad.field_violations]
        assert fields == ["pricing_rule.round_to"]
    # The limit itself is allowed.
    updated = await stub.UpdatePricingRule(
        pb.UpdatePricingRuleRequest(
            pricing_rule=pb.PricingRule(id=default.id, round_to="1000"),
            update_mask=field_mask_pb2.FieldMask(paths=["round_to"]),
        ),
        metadata=system_metadata(),
    )
    assert updated.round_to == "1000"


def field_violations(exc: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR))
    return [v.field for v in bad.field_violations]


async def test_a_refill_service_needs_a_refill_window(channel: grpc.aio.Channel) -> None:
    """Refill on with refill_days 0 was accepted: a refill may be asked for 0 days after completion,
    so every refill of every order of the service was refused ("Order not eligible for refill.")
    while the catalog advertised refill."""
    stub = pb_grpc.CatalogServiceStub(channel)
    category, service = await make_catalog(stub)
    for call in (
        stub.CreateService(
            pb.CreateServiceRequest(
                service=pb.Service(
                    name="Refill for ever?",
                    type=pb.SERVICE_TYPE_DEFAULT,
                    category_id=category.id,
                    rate="1",
                    min_quantity=10,
                    max_quantity=100,
                    refill=True,
                    enabled=True,
                )
            ),
            metadata=system_metadata(),
        ),
        stub.UpdateService(
            pb.UpdateServiceRequest(
                service=pb.Service(id=service.id, refill_days=0),
                update_mask=field_mask_pb2.FieldMask(paths=["refill_days"]),
            ),
            metadata=system_metadata(),
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(caught.value) == ["service.refill_days"]
    kept = await stub.GetService(pb.GetServiceRequest(id=service.id), metadata=anonymous_metadata())
    assert (kept.refill, kept.refill_days) == (True, 30)
    # Refill off with no window, or on with one, is fine; turning refill off alone ends its window
    # (a staff screen's refill switch sends only `refill`: it was refused for the window it left).
    off = await stub.UpdateService(
        pb.UpdateServiceRequest(
            service=pb.Service(id=service.id, refill=False),
            update_mask=field_mask_pb2.FieldMask(paths=["refill"]),
        ),
        metadata=system_metadata(),
    )
    assert (off.refill, off.refill_days) == (False, 0)


async def test_a_category_name_differing_only_in_case_is_taken(channel: grpc.aio.Channel) -> None:
    """Only an exactly equal name was refused: "Instagram Likes" and "instagram likes" became two
    categories, so customers saw two categories for one thing."""
    stub = pb_grpc.CatalogServiceStub(channel)
    likes = await stub.CreateCategory(
        pb.CreateCategoryRequest(category=pb.Category(name="Instagram Likes", enabled=True)),
        metadata=system_metadata(),
    )
    other = await stub.CreateCategory(
        pb.CreateCategoryRequest(category=pb.Category(name="TikTok", enabled=True)),
        metadata=system_metadata(),
    )
    rename = field_mask_pb2.FieldMask(paths=["name"])
    for call in (
        stub.CreateCategory(
            pb.CreateCategoryRequest(category=pb.Category(name="  instagram LIKES ")),
            metadata=system_metadata(),
        ),
        stub.UpdateCategory(
            pb.UpdateCategoryRequest(
                category=pb.Category(id=other.id, name="INSTAGRAM likes"), update_mask=rename
            ),
            metadata=system_metadata(),
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert error_reason(caught.value) == ("CATEGORY_NAME_TAKEN", {"field": "category.name"})
    # A category's own name in other letter case is a rename, not a clash.
    recased = await stub.UpdateCategory(
        pb.UpdateCategoryRequest(
            category=pb.Category(id=likes.id, name="Instagram likes"), update_mask=rename
        ),
        metadata=system_metadata(),
    )
    assert recased.name == "Instagram likes"
    listed = await stub.ListAdminCategories(pb.ListAdminCategoriesRequest(), metadata=system_metadata())
    assert sorted(c.name for c in listed.categories) == ["Instagram likes", "TikTok"]
