"""HTTP request -> request proto, response proto -> JSON (grpc-gateway runtime/query_test.go style).

Most cases run against the real compiled routes of the smm.v1 protos. Shapes the real protos do
not have (a ``body: "*"`` rule, booleans and repeated scalars in the query string) use one small
synthetic file in a fresh descriptor pool.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, json_format
from google.protobuf.message import Message
from smm.v1 import catalog_service_pb2, options_pb2, orders_service_pb2

from edge.routes import Route, compile_routes
from edge.transcode import TranscodeError, decode_request, encode_response

FieldProto = descriptor_pb2.FieldDescriptorProto

GET_SERVICE = "/smm.v1.CatalogService/GetService"
LIST_SERVICES = "/smm.v1.CatalogService/ListServices"
CREATE_SERVICE = "/smm.v1.CatalogService/CreateService"
UPDATE_SERVICE = "/smm.v1.CatalogService/UpdateService"
UPDATE_CATEGORY = "/smm.v1.CatalogService/UpdateCategory"
LIST_ORDERS = "/smm.v1.OrdersService/ListOrders"
SET_SERVICE_PROVIDERS = "/smm.v1.CatalogService/SetServiceProviders"
BULK_UPDATE_SERVICES = "/smm.v1.CatalogService/BulkUpdateServices"


@pytest.fixture(scope="module")
def routes() -> dict[str, Route]:
    return {route.rpc: route for route in compile_routes()}


def decode(
    route: Route,
    body: bytes = b"",
    path: Mapping[str, str] | None = None,
    query: Iterable[tuple[str, str]] = (),
    content_type: str = "application/json",
) -> Any:
    return decode_request(
        route, body=body, content_type=content_type, path_params=path or {}, query=list(query)
    )


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


# --- body ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"name": "Likes", "sortOrder": 3, "refillDays": 30, "categoryId": "7"}',
            {"name": "Likes", "sort_order": 3, "refill_days": 30, "category_id": "7"},
            id="camelCase-keys",
        ),
        pytest.param(
            b'{"name": "Likes", "sort_order": 3, "refill_days": 30, "category_id": 7}',
            {"name": "Likes", "sort_order": 3, "refill_days": 30, "category_id": "7"},
            id="snake_case-keys",
        ),
        pytest.param(
            b'{"name": "Likes", "bogus": 1, "nested": {"x": [1, 2]}}',
            {"name": "Likes"},
            id="unknown-keys-ignored",
        ),
        pytest.param(
            b'{"type": "SERVICE_TYPE_PACKAGE", "refill": true, "rate": "0.90"}',
            {"type": "SERVICE_TYPE_PACKAGE", "refill": True, "rate": "0.90"},
            id="enum-bool-string",
        ),
        pytest.param(b'{"sortOrder": "5"}', {"sort_order": 5}, id="int-as-json-string"),
        pytest.param(b'{"minQuantity": 10}', {"min_quantity": "10"}, id="int64-as-json-number"),
        pytest.param(b"{}", {}, id="empty-object"),
    ],
)
def test_body_field_parsing(routes: dict[str, Route], body: bytes, expected: dict[str, Any]) -> None:
    request = decode(routes[CREATE_SERVICE], body)
    assert isinstance(request, catalog_service_pb2.CreateServiceRequest)
    assert request.HasField("service")
    assert as_dict(request.service) == expected
    assert request.request_id == ""


@pytest.mark.parametrize("body", [b"", b"   ", b"\n\t "], ids=["empty", "spaces", "whitespace"])
def test_empty_body_is_an_empty_message(routes: dict[str, Route], body: bytes) -> None:
    request = decode(routes[CREATE_SERVICE], body)
    assert request == catalog_service_pb2.CreateServiceRequest()
    assert not request.HasField("service")


def test_path_variable_wins_over_body(routes: dict[str, Route]) -> None:
    request = decode(routes[UPDATE_SERVICE], b'{"id": "7", "name": "Views"}', path={"p0": "42"})
    assert request.service.id == 42
    assert request.service.name == "Views"


def test_path_variable_sets_nested_field_without_body(routes: dict[str, Route]) -> None:
    request = decode(routes[UPDATE_CATEGORY], b"", path={"p0": "9"})
    assert as_dict(request) == {"category": {"id": "9"}}


def test_get_path_variable(routes: dict[str, Route]) -> None:
    request = decode(routes[GET_SERVICE], path={"p0": "123456789012345"})
    assert request == catalog_service_pb2.GetServiceRequest(id=123456789012345)


# --- query parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param([], {}, id="none"),
        pytest.param(
            [("pageSize", "10"), ("pageToken", "abc"), ("categoryId", "3")],
            {"page_size": 10, "page_token": "abc", "category_id": "3"},
            id="camelCase",
        ),
        pytest.param(
            [("page_size", "10"), ("page_token", "abc"), ("category_id", "3")],
            {"page_size": 10, "page_token": "abc", "category_id": "3"},
            id="snake_case",
        ),
        pytest.param([("unknown", "1"), ("pageSize", "5")], {"page_size": 5}, id="unknown-ignored"),
        pytest.param([("categoryId", "-1")], {"category_id": "-1"}, id="negative-int64"),
    ],
)
def test_query_parameters(
    routes: dict[str, Route], query: list[tuple[str, str]], expected: dict[str, Any]
) -> None:
    request = decode(routes[LIST_SERVICES], query=query)
    assert isinstance(request, catalog_service_pb2.ListServicesRequest)
    assert as_dict(request) == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param([("pageSize", "5"), ("pageSize", "7")], "page_size", id="int32"),
        pytest.param([("pageSize", "5"), ("pageSize", "5")], "page_size", id="same-value-twice"),
        pytest.param([("categoryId", "3"), ("pageSize", "5"), ("category_id", "4")], "category_id", id="two-spellings"),
        pytest.param([("pageToken", ""), ("pageToken", "abc")], "page_token", id="empty-then-value"),
    ],
)  # fmt: skip
def test_query_singular_field_given_twice_is_refused(
    routes: dict[str, Route], query: list[tuple[str, str]], field: str
) -> None:
    # grpc-gateway's query parser refuses it ("too many values for field"); keeping the last value
    # let a proxy or cache that reads the first one and the server disagree on what was asked.
    with pytest.raises(TranscodeError) as caught:
        decode(routes[LIST_SERVICES], query=query)
    assert caught.value.field == field
    assert caught.value.message == f"query parameter {field}: given more than once, but takes one value"


def test_query_enum_given_twice_is_refused(routes: dict[str, Route]) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(
            routes[LIST_ORDERS],
            query=[("status", "ORDER_STATUS_PENDING"), ("status", "ORDER_STATUS_COMPLETED")],
        )
    assert caught.value.field == "status"
    assert caught.value.message == "query parameter status: given more than once, but takes one value"


def test_query_never_overrides_a_path_variable(routes: dict[str, Route]) -> None:
    request = decode(routes[GET_SERVICE], path={"p0": "5"}, query=[("id", "6")])
    assert request.id == 5


@pytest.mark.parametrize(
    "query",
    [
        pytest.param([("service.name", "from-query")], id="dotted-snake"),
        pytest.param([("service.name", "from-query"), ("service.rate", "1.00")], id="several"),
        pytest.param([("service", "x")], id="root"),
    ],
)
def test_query_skips_fields_bound_by_body_or_path(
    routes: dict[str, Route], query: list[tuple[str, str]]
) -> None:
    request = decode(routes[UPDATE_SERVICE], b'{"name": "from-body"}', path={"p0": "1"}, query=query)
    # The update mask comes from the body's keys (as in grpc-gateway), never from the query here.
    assert as_dict(request) == {"service": {"id": "1", "name": "from-body"}, "update_mask": "name"}


def test_patch_mask_from_body_keys_includes_false_values_and_skips_path_fields(
    routes: dict[str, Route],
) -> None:
    request = decode(
        routes[UPDATE_SERVICE],
        b'{"id": "5", "enabled": false, "sort_order": 0, "bogus": 1}',
        path={"p0": "1"},
    )
    assert list(request.update_mask.paths) == ["enabled", "sort_order"]
    explicit = decode(
        routes[UPDATE_SERVICE], b'{"enabled": false}', path={"p0": "1"}, query=[("updateMask", "name")]
    )
    assert list(explicit.update_mask.paths) == ["name"]


def test_query_fills_unbound_fields_next_to_a_body_field(routes: dict[str, Route]) -> None:
    request = decode(
        routes[UPDATE_SERVICE],
        b'{"name": "n", "updateMask": "ignored-inside-service"}',
        path={"p0": "3"},
        query=[("updateMask", "name,rate")],
    )
    assert request.service.id == 3
    assert request.service.name == "n"
    assert list(request.update_mask.paths) == ["name", "rate"]


# --- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        pytest.param(b"{", "not valid JSON", "", id="truncated"),
        pytest.param(b"{'name': 'x'}", "not valid JSON", "", id="single-quotes"),
        pytest.param(b"\xff\xfe\x00", "not valid JSON", "", id="not-utf8"),
        pytest.param(b"[" * 100_000, "not valid JSON", "", id="nested-too-deep"),
        pytest.param(b"[1, 2]", "must be a JSON object", "service", id="array"),
        pytest.param(b'"text"', "must be a JSON object", "service", id="string"),
        pytest.param(b"null", "must be a JSON object", "service", id="null"),
        pytest.param(b"42", "must be a JSON object", "service", id="number"),
        pytest.param(
            b'{"sortOrder": "abc"}',
            "invalid service.sort_order: 'abc' is not an integer",
            "service.sort_order",
            id="string-for-int32",
        ),
        # A wrong JSON type is named on the field's path in JSON's words (protobuf's parser said
        # "expected string or bytes-like object, got 'dict'" on the body's field, "service").
        pytest.param(
            b'{"sortOrder": 1.5}',
            "invalid service.sort_order: 1.5 is not an integer",
            "service.sort_order",
            id="fraction-for-int32",
        ),
        pytest.param(
            b'{"sortOrder": 99999999999}',
            "invalid service.sort_order: 99999999999 is out of range",
            "service.sort_order",
            id="int32-overflow",
        ),
        pytest.param(
            b'{"minQuantity": "12x"}',
            "invalid service.min_quantity: '12x' is not an integer",
            "service.min_quantity",
            id="bad-int64-string",
        ),
        pytest.param(
            b'{"refill": "yes"}',
            "invalid service.refill: must be true or false, not a string",
            "service.refill",
            id="string-for-bool",
        ),
        pytest.param(
            b'{"name": {"a": 1}}',
            "invalid service.name: must be a string, not an object",
            "service.name",
            id="object-for-string",
        ),
        pytest.param(
            b'{"name": ["a"]}',
            "invalid service.name: must be a string, not an array",
            "service.name",
            id="array-for-string",
        ),
        pytest.param(
            b'{"name": 5}',
            "invalid service.name: must be a string, not a number",
            "service.name",
            id="number-for-string",
        ),
        pytest.param(
            b'{"createTime": "yesterday"}',
            "invalid service.create_time: must be an RFC 3339 time with its offset, like 2026-01-31T12:00:00Z",
            "service.create_time",
            id="bad-timestamp",
        ),
        pytest.param(
            b'{"createTime": "2026-13-01T00:00:00Z"}',
            "invalid service.create_time: must be an RFC 3339 time",
            "service.create_time",
            id="timestamp-month-13",
        ),
        # Unknown fields are ignored, but an enum name the enum lacks was too: the zero value went on.
        pytest.param(
            b'{"type": "SERVICE_TYPE_PACKAG", "name": "x"}',
            "SERVICE_TYPE_PACKAG",
            "service.type",
            id="enum-typo",
        ),
        pytest.param(
            b'{"unknownField": 1, "type": "PACKAGE"}',
            "is not a ServiceType",
            "service.type",
            id="enum-short-name",
        ),
        # protobuf's parser reads an enum number with int(): 1.5 became 1, -0.5 and true 0 and 1.
        pytest.param(
            b'{"type": 1.5}',
            "invalid service.type: 1.5 is not a ServiceType",
            "service.type",
            id="enum-fraction",
        ),
        pytest.param(
            b'{"type": -0.5}',
            "invalid service.type: -0.5 is not a ServiceType",
            "service.type",
            id="enum-negative-fraction",
        ),
        pytest.param(
            b'{"type": 1e-9}',
            "invalid service.type: 1e-09 is not a ServiceType",
            "service.type",
            id="enum-tiny-fraction",
        ),
        pytest.param(
            b'{"type": true}',
            "invalid service.type: true is not a ServiceType",
            "service.type",
            id="enum-bool",
        ),
        pytest.param(
            b'{"minQuantity": 1.5}',
            "invalid service.min_quantity: 1.5 is not an integer",
            "service.min_quantity",
            id="fraction-for-int64",
        ),
        pytest.param(
            b'{"minQuantity": true}',
            "invalid service.min_quantity: true is not an integer",
            "service.min_quantity",
            id="bool-for-int64",
        ),
        pytest.param(
            b'{"minQuantity": [1]}',
            "invalid service.min_quantity: must be an integer (a JSON number or a string of digits), not an array",
            "service.min_quantity",
            id="array-for-int64",
        ),
        pytest.param(
            b'{"minQuantity": 9223372036854775808}',
            "invalid service.min_quantity: 9223372036854775808 is out of range",
            "service.min_quantity",
            id="int64-overflow",
        ),
    ],
)
def test_bad_bodies(routes: dict[str, Route], body: bytes, message: str, field: str) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[CREATE_SERVICE], body)
    assert message in caught.value.message
    assert caught.value.field == field
    assert str(caught.value) == caught.value.message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("abc", id="letters"),
        pytest.param("1.5", id="fraction"),
        pytest.param("99999999999999999999", id="overflow"),
        pytest.param("1 2", id="space"),
        pytest.param("0x10", id="hex"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_int64_path_values(routes: dict[str, Route], raw: str) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[GET_SERVICE], path={"p0": raw})
    assert caught.value.field == "id"
    assert f"path parameter id: invalid value {raw!r}" == caught.value.message


def test_bad_nested_path_value_names_the_dotted_field(routes: dict[str, Route]) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[UPDATE_SERVICE], b'{"name": "n"}', path={"p0": "x"})
    assert caught.value.field == "service.id"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param([("pageSize", "ten")], "page_size", id="string-for-int32"),
        pytest.param([("pageSize", "99999999999")], "page_size", id="int32-overflow"),
        pytest.param([("categoryId", "1.5")], "category_id", id="fraction-for-int64"),
        pytest.param([("pageSize", "1.5")], "page_size", id="fraction-for-int32"),
    ],
)
def test_bad_query_values(routes: dict[str, Route], query: list[tuple[str, str]], field: str) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[LIST_SERVICES], query=query)
    assert caught.value.field == field
    assert caught.value.message.startswith(f"query parameter {field}: invalid value")


# Python's int() also reads these (whitespace, a plus sign, underscores, any Unicode digit) and
# protobuf's parser an integral float; a query or path integer is an optional "-" and ASCII digits.
NOT_PLAIN_INTEGERS = [
    pytest.param(" 1", id="leading-space"),
    pytest.param("1 ", id="trailing-space"),
    pytest.param("\t1", id="tab"),
    pytest.param("1\n", id="newline"),
    pytest.param("+1", id="plus"),
    pytest.param("1_0", id="underscore"),
    pytest.param("\u0663", id="arabic-indic-digit"),
    pytest.param("\uff11", id="fullwidth-digit"),
    pytest.param("\U0001d7cf", id="math-bold-digit"),
    pytest.param("-\u0663", id="minus-arabic-indic-digit"),
    pytest.param("1e2", id="exponent"),
    pytest.param("5.0", id="integral-fraction"),
    pytest.param("--1", id="two-minus-signs"),
    pytest.param("-", id="minus-alone"),
]


@pytest.mark.parametrize("raw", NOT_PLAIN_INTEGERS)
@pytest.mark.parametrize("field", ["page_size", "category_id"], ids=["int32", "int64"])
def test_query_integers_are_ascii_digits(routes: dict[str, Route], field: str, raw: str) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[LIST_SERVICES], query=[(field, raw)])
    assert caught.value.field == field
    assert caught.value.message == f"query parameter {field}: invalid value {raw!r}"


@pytest.mark.parametrize("raw", NOT_PLAIN_INTEGERS)
def test_query_enum_numbers_are_ascii_digits(routes: dict[str, Route], raw: str) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[LIST_ORDERS], query=[("status", raw)])
    assert caught.value.field == "status"
    assert caught.value.message == f"query parameter status: invalid value {raw!r}"


@pytest.mark.parametrize("raw", NOT_PLAIN_INTEGERS)
def test_path_integers_are_ascii_digits(routes: dict[str, Route], raw: str) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[GET_SERVICE], path={"p0": raw})
    assert caught.value.field == "id"
    assert caught.value.message == f"path parameter id: invalid value {raw!r}"


@pytest.mark.parametrize("raw", ["+1", "\u0663", " 1"])
def test_query_repeated_integers_are_ascii_digits(synthetic: dict[str, Route], raw: str) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(synthetic["ListThings"], query=[("ids", "1"), ("ids", raw)])
    assert caught.value.field == "ids"
    assert caught.value.message == f"query parameter ids: invalid value {raw!r}"  # the bad one named


def test_a_comma_list_for_a_repeated_query_parameter_says_how_to_repeat_it(
    synthetic: dict[str, Route],
) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(synthetic["ListThings"], query=[("ids", "1,2")])
    assert caught.value.field == "ids"
    assert (
        caught.value.message
        == "query parameter ids: invalid value '1,2' (one value per parameter: ids=1&ids=2)"
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param([("pageSize", "2")], {"page_size": 2}, id="int32"),
        pytest.param([("pageSize", "-1")], {"page_size": -1}, id="negative-int32"),
        pytest.param([("pageSize", "007")], {"page_size": 7}, id="leading-zeros"),
        pytest.param([("categoryId", "-1")], {"category_id": "-1"}, id="negative-int64"),
        pytest.param([("categoryId", "-0")], {}, id="minus-zero"),
    ],
)
def test_query_plain_integers(routes: dict[str, Route], query: list[tuple[str, str]], expected: dict) -> None:
    assert as_dict(decode(routes[LIST_SERVICES], query=query)) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("2", orders_service_pb2.ORDER_STATUS_SUBMITTING, id="number"),
        pytest.param("ORDER_STATUS_SUBMITTING", orders_service_pb2.ORDER_STATUS_SUBMITTING, id="name"),
        pytest.param("0", orders_service_pb2.ORDER_STATUS_UNSPECIFIED, id="zero"),
        # An integer the enum lacks passes (proto3 enums are open); the server refuses it.
        pytest.param("-1", -1, id="negative-undefined"),
        pytest.param("99", 99, id="undefined"),
    ],
)
def test_query_enum_plain_numbers(routes: dict[str, Route], raw: str, expected: int) -> None:
    assert decode(routes[LIST_ORDERS], query=[("status", raw)]).status == expected


@pytest.mark.parametrize("raw", ["1.5", "0.5", "1e-9", "true", "ORDER_STATUS_PENDIN"])
def test_bad_query_enum_values(routes: dict[str, Route], raw: str) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[LIST_ORDERS], query=[("status", raw)])
    assert caught.value.field == "status"
    assert caught.value.message == f"query parameter status: invalid value {raw!r}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'{"type": "SERVICE_TYPE_PACKAGE"}', "SERVICE_TYPE_PACKAGE", id="name"),
        pytest.param(b'{"type": 2}', "SERVICE_TYPE_PACKAGE", id="number"),
        pytest.param(b'{"type": 2.0}', "SERVICE_TYPE_PACKAGE", id="integral-float"),  # as for integers
    ],
)
def test_body_enum_numbers(routes: dict[str, Route], body: bytes, expected: str) -> None:
    request = decode(routes[CREATE_SERVICE], body)
    assert catalog_service_pb2.ServiceType.Name(request.service.type) == expected


def test_query_enum_name_and_number(routes: dict[str, Route]) -> None:
    by_name = decode(routes[LIST_ORDERS], query=[("status", "ORDER_STATUS_PENDING")])
    by_number = decode(routes[LIST_ORDERS], query=[("status", "1")])
    assert (
        by_name
        == by_number
        == orders_service_pb2.ListOrdersRequest(status=orders_service_pb2.ORDER_STATUS_PENDING)
    )


# protobuf's parser reads an integer given as a JSON string with int(), and then as a float: "+5",
# "\u0665", "1_0", "\t5", "1e2" and "5.0" all passed. A string is held to the query string's rule
# (an optional "-" and ASCII digits) and refused on its field; a JSON number keeps its handling.
NOT_PLAIN_INTEGER_STRINGS = [
    *NOT_PLAIN_INTEGERS,
    pytest.param("+5", id="plus-five"),
    pytest.param("\u0665", id="arabic-indic-five"),
    pytest.param("\t5", id="tab-five"),
    pytest.param("", id="empty"),
    pytest.param("Infinity", id="infinity"),
    pytest.param("0x10", id="hex"),
]


@pytest.mark.parametrize("raw", NOT_PLAIN_INTEGER_STRINGS)
@pytest.mark.parametrize(
    ("key", "field"),
    [
        pytest.param("minQuantity", "service.min_quantity", id="int64-camelCase"),
        pytest.param("min_quantity", "service.min_quantity", id="int64-snake_case"),
        pytest.param("sortOrder", "service.sort_order", id="int32"),
    ],
)
def test_body_integer_strings_are_ascii_digits(
    routes: dict[str, Route], key: str, field: str, raw: str
) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[CREATE_SERVICE], json.dumps({"name": "x", key: raw}).encode())
    assert caught.value.field == field
    assert caught.value.message == f"invalid {field}: {raw!r} is not an integer"


@pytest.mark.parametrize(
    ("route", "body", "field", "raw"),
    [
        pytest.param(
            SET_SERVICE_PROVIDERS,
            {"provider": {"providerId": "+5", "upstreamServiceId": "a"}},
            "provider.provider_id",
            "+5",
            id="nested-message",
        ),
        pytest.param(
            SET_SERVICE_PROVIDERS,
            {"fallbacks": [{"providerId": "1", "upstreamServiceId": "a"}, {"provider_id": "\u0665"}]},
            "fallbacks[1].provider_id",
            "\u0665",
            id="repeated-message",
        ),
        pytest.param(
            BULK_UPDATE_SERVICES,
            {"serviceIds": ["1", 2, "1_0"], "action": "enable"},
            "service_ids[2]",
            "1_0",
            id="repeated-int64",
        ),
    ],
)
def test_body_integer_strings_in_nested_and_repeated_fields(
    routes: dict[str, Route], route: str, body: dict[str, Any], field: str, raw: str
) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[route], json.dumps(body).encode(), path={"p0": "3"})
    assert caught.value.field == field
    assert caught.value.message == f"invalid {field}: {raw!r} is not an integer"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"minQuantity": "5"}, {"min_quantity": "5"}, id="string"),
        pytest.param({"minQuantity": "-1"}, {"min_quantity": "-1"}, id="negative-string"),
        pytest.param({"minQuantity": "007"}, {"min_quantity": "7"}, id="leading-zeros"),
        pytest.param({"minQuantity": 5}, {"min_quantity": "5"}, id="number"),
        pytest.param({"minQuantity": 5.0}, {"min_quantity": "5"}, id="integral-float-number"),
        pytest.param({"minQuantity": 1e2}, {"min_quantity": "100"}, id="exponent-number"),
        pytest.param({"sortOrder": "-3"}, {"sort_order": -3}, id="int32-string"),
        pytest.param({"name": "+5", "rate": "\u0665"}, {"name": "+5", "rate": "\u0665"}, id="text-fields"),
    ],
)
def test_body_plain_integers(routes: dict[str, Route], body: dict[str, Any], expected: dict) -> None:
    assert as_dict(decode(routes[CREATE_SERVICE], json.dumps(body).encode()).service) == expected


def test_body_plain_integers_in_nested_and_repeated_fields(routes: dict[str, Route]) -> None:
    providers = decode(
        routes[SET_SERVICE_PROVIDERS],
        b'{"provider": {"providerId": "-2"}, "fallbacks": [{"providerId": "4"}, {"providerId": 5}]}',
        path={"p0": "3"},
    )
    assert as_dict(providers) == {
        "id": "3",
        "provider": {"provider_id": "-2"},
        "fallbacks": [{"provider_id": "4"}, {"provider_id": "5"}],
    }
    bulk = decode(routes[BULK_UPDATE_SERVICES], b'{"serviceIds": ["1", 2, "-3"]}')
    assert list(bulk.service_ids) == [1, 2, -3]


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        # Found by the authenticated fuzz run: an enum, a message or a repeated field given a lone
        # surrogate raised SystemError in upb, or put it in an error that could not be rendered (500).
        pytest.param(CREATE_SERVICE, b'{"type": "\\ud800"}', "service.type", id="enum"),
        pytest.param(SET_SERVICE_PROVIDERS, b'{"provider": "\\uDBFF"}', "provider", id="message"),
        pytest.param(SET_SERVICE_PROVIDERS, b'{"fallbacks": ["\\udc00"]}', "fallbacks[0]", id="repeated"),
        pytest.param(
            SET_SERVICE_PROVIDERS,
            b'{"fallbacks": [{"upstreamServiceId": "a\\ud800"}]}',
            "fallbacks[0].upstreamServiceId",
            id="nested",
        ),
        pytest.param(CREATE_SERVICE, b'{"name": "\\ude00\\ud83d"}', "service.name", id="reversed-pair"),
        pytest.param(CREATE_SERVICE, b'{"\\ud800": 1}', "service", id="key"),
    ],
)
def test_body_unpaired_surrogates_are_refused(
    routes: dict[str, Route], route: str, body: bytes, field: str
) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(routes[route], body, path={"p0": "3"})
    assert caught.value.field == field
    assert "unpaired UTF-16 surrogate" in caught.value.message
    caught.value.message.encode()  # the error body is UTF-8


def test_body_surrogate_pairs_and_escaped_backslashes_are_text(routes: dict[str, Route]) -> None:
    service = decode(routes[CREATE_SERVICE], b'{"name": "\\ud83d\\ude00 \\\\ud800"}').service
    assert service.name == "\U0001f600 \\ud800"


# --- shapes the real protos lack: body "*", booleans and repeated scalars in the query ---------


def _synthetic_routes() -> dict[str, Route]:
    pool = descriptor_pool.DescriptorPool()
    for module in (descriptor_pb2, http_pb2, annotations_pb2, options_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="transcodetest/things.proto",
        package="transcodetest",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="on", number=1, type=FieldProto.TYPE_BOOL, label=FieldProto.LABEL_OPTIONAL)
    thing = file.message_type.add(name="Thing")
    for name, number, kind, label in [
        ("id", 1, FieldProto.TYPE_INT64, FieldProto.LABEL_OPTIONAL),
        ("active", 2, FieldProto.TYPE_BOOL, FieldProto.LABEL_OPTIONAL),
        ("ids", 3, FieldProto.TYPE_INT64, FieldProto.LABEL_REPEATED),
        ("tags", 4, FieldProto.TYPE_STRING, FieldProto.LABEL_REPEATED),
        ("flags", 5, FieldProto.TYPE_BOOL, FieldProto.LABEL_REPEATED),
        ("display_name", 6, FieldProto.TYPE_STRING, FieldProto.LABEL_OPTIONAL),
    ]:
        thing.field.add(name=name, number=number, type=kind, label=label)
    thing.field.add(
        name="inner",
        number=7,
        type=FieldProto.TYPE_MESSAGE,
        label=FieldProto.LABEL_OPTIONAL,
        type_name=".transcodetest.Inner",
    )
    counts = thing.nested_type.add(name="CountsEntry")  # map<string, int64> counts = 8
    counts.options.map_entry = True
    counts.field.add(name="key", number=1, type=FieldProto.TYPE_STRING, label=FieldProto.LABEL_OPTIONAL)
    counts.field.add(name="value", number=2, type=FieldProto.TYPE_INT64, label=FieldProto.LABEL_OPTIONAL)
    thing.field.add(
        name="counts",
        number=8,
        type=FieldProto.TYPE_MESSAGE,
        label=FieldProto.LABEL_REPEATED,
        type_name=".transcodetest.Thing.CountsEntry",
    )
    names = thing.nested_type.add(name="NamesEntry")  # map<int64, string> names = 9
    names.options.map_entry = True
    names.field.add(name="key", number=1, type=FieldProto.TYPE_INT64, label=FieldProto.LABEL_OPTIONAL)
    names.field.add(name="value", number=2, type=FieldProto.TYPE_STRING, label=FieldProto.LABEL_OPTIONAL)
    thing.field.add(
        name="names",
        number=9,
        type=FieldProto.TYPE_MESSAGE,
        label=FieldProto.LABEL_REPEATED,
        type_name=".transcodetest.Thing.NamesEntry",
    )
    service = file.service.add(name="ThingService")
    bindings = {
        "ListThings": http_pb2.HttpRule(get="/api/v1/public/things"),
        "ReplaceThing": http_pb2.HttpRule(put="/api/v1/admin/things/{id}", body="*"),
    }
    for name, binding in bindings.items():
        method = service.method.add(
            name=name, input_type=".transcodetest.Thing", output_type=".transcodetest.Thing"
        )
        method.options.Extensions[annotations_pb2.http].CopyFrom(binding)
    pool.Add(file)
    methods = pool.FindServiceByName("transcodetest.ThingService").methods
    return {route.rpc.rsplit("/", 1)[1]: route for route in compile_routes(methods)}


@pytest.fixture(scope="module")
def synthetic() -> dict[str, Route]:
    return _synthetic_routes()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("true", True, id="true"),
        pytest.param("True", True, id="True"),
        pytest.param("1", True, id="one"),
        pytest.param("false", False, id="false"),
        pytest.param("FALSE", False, id="FALSE"),
        pytest.param("0", False, id="zero"),
    ],
)
def test_query_booleans(synthetic: dict[str, Route], raw: str, expected: bool) -> None:
    request = decode(synthetic["ListThings"], query=[("active", raw), ("inner.on", raw)])
    assert request.active is expected
    assert request.inner.on is expected


@pytest.mark.parametrize("raw", ["yes", "on", "2", ""])
def test_query_bad_booleans(synthetic: dict[str, Route], raw: str) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(synthetic["ListThings"], query=[("active", raw)])
    assert caught.value.field == "active"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param([("ids", "1"), ("ids", "2"), ("ids", "3")], {"ids": ["1", "2", "3"]}, id="int64"),
        pytest.param([("tags", "a"), ("tags", "b")], {"tags": ["a", "b"]}, id="string"),
        pytest.param([("flags", "true"), ("flags", "0")], {"flags": [True, False]}, id="bool"),
        pytest.param([("ids", "4")], {"ids": ["4"]}, id="single-value"),
        pytest.param(
            [("ids", "1"), ("tags", "a"), ("ids", "2"), ("inner.on", "true")],
            {"ids": ["1", "2"], "tags": ["a"], "inner": {"on": True}},
            id="interleaved",
        ),
    ],
)
def test_query_repeated(
    synthetic: dict[str, Route], query: list[tuple[str, str]], expected: dict[str, Any]
) -> None:
    assert as_dict(decode(synthetic["ListThings"], query=query)) == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param([("displayName", "x"), ("tags", "a"), ("display_name", "y")], "display_name", id="two-spellings"),
        pytest.param([("active", "true"), ("active", "false")], "active", id="bool"),
        pytest.param([("inner.on", "true"), ("inner.on", "true")], "inner.on", id="nested"),
    ],
)  # fmt: skip
def test_query_singular_given_twice_next_to_repeated(
    synthetic: dict[str, Route], query: list[tuple[str, str]], field: str
) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(synthetic["ListThings"], query=query)
    assert caught.value.field == field
    assert caught.value.message == f"query parameter {field}: given more than once, but takes one value"


def test_query_repeated_bad_value(synthetic: dict[str, Route]) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(synthetic["ListThings"], query=[("ids", "1"), ("ids", "two")])
    assert caught.value.field == "ids"


def test_body_star_reads_the_whole_message_and_path_wins(synthetic: dict[str, Route]) -> None:
    request = decode(
        synthetic["ReplaceThing"],
        b'{"id": "9", "active": true, "displayName": "n", "tags": ["a"], "unknown": 1}',
        path={"p0": "5"},
    )
    assert as_dict(request) == {"id": "5", "active": True, "display_name": "n", "tags": ["a"]}


def test_body_star_ignores_the_query_string(synthetic: dict[str, Route]) -> None:
    request = decode(synthetic["ReplaceThing"], b"{}", path={"p0": "5"}, query=[("displayName", "q")])
    assert as_dict(request) == {"id": "5"}


@pytest.mark.parametrize("body", [b"[1]", b'"x"', b"null", b"3"], ids=["array", "string", "null", "number"])
def test_body_star_requires_an_object(synthetic: dict[str, Route], body: bytes) -> None:
    with pytest.raises(TranscodeError, match="must be a JSON object") as caught:
        decode(synthetic["ReplaceThing"], body, path={"p0": "5"})
    assert caught.value.field == ""


@pytest.mark.parametrize(
    ("body", "field", "raw"),
    [
        pytest.param(b'{"ids": ["1", "+2"]}', "ids[1]", "+2", id="repeated-int64"),
        pytest.param(b'{"counts": {"a": "1", "b": "\\u0665"}}', "counts['b']", "\u0665", id="map-value"),
        pytest.param(b'{"names": {"1": "a", "+2": "b"}}', "names", "+2", id="integer-map-key"),
    ],
)
def test_body_star_integer_strings_are_ascii_digits(
    synthetic: dict[str, Route], body: bytes, field: str, raw: str
) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(synthetic["ReplaceThing"], body, path={"p0": "5"})
    assert caught.value.field == field
    assert caught.value.message == f"invalid {field}: {raw!r} is not an integer"


def test_body_star_plain_integer_strings(synthetic: dict[str, Route]) -> None:
    request = decode(
        synthetic["ReplaceThing"],
        b'{"ids": ["-1", 2], "counts": {"a": "-3", "b": 4}, "names": {"-7": "x"}}',
        path={"p0": "5"},
    )
    assert as_dict(request) == {
        "id": "5",
        "ids": ["-1", "2"],
        "counts": {"a": "-3", "b": "4"},
        "names": {"-7": "x"},
    }


def test_body_star_wrong_type_names_the_field(synthetic: dict[str, Route]) -> None:
    with pytest.raises(TranscodeError) as caught:
        decode(synthetic["ReplaceThing"], b'{"active": "maybe"}', path={"p0": "5"})
    assert caught.value.field == "active"


# --- responses -----------------------------------------------------------------------------------


def test_encode_prints_defaults_and_int64_as_strings(routes: dict[str, Route]) -> None:
    encoded = encode_response(routes[GET_SERVICE], catalog_service_pb2.Service(id=9007199254740993))
    assert encoded == {
        "id": "9007199254740993",
        "name": "",
        "description": "",
        "type": "SERVICE_TYPE_UNSPECIFIED",
        "categoryId": "0",
        "categoryName": "",
        "rate": "",
        "minQuantity": "0",
        "maxQuantity": "0",
        "refill": False,
        "refillDays": 0,
        "cancel": False,
        "dripfeed": False,
        "enabled": False,
        "sortOrder": 0,
        "currency": "",
        "averageCompletionSeconds": "0",
        "oneActiveOrderPerLink": False,
        "callerRate": "",
    }


def test_encode_list_prints_empty_repeated_and_strings(routes: dict[str, Route]) -> None:
    assert encode_response(routes[LIST_SERVICES], catalog_service_pb2.ListServicesResponse()) == {
        "services": [],
        "nextPageToken": "",
    }


def test_encode_nested_values(routes: dict[str, Route]) -> None:
    response = catalog_service_pb2.ListServicesResponse(
        services=[catalog_service_pb2.Service(id=1, rate="0.90", min_quantity=10, refill=True)],
        next_page_token="t",
    )
    response.services[0].create_time.FromSeconds(0)
    encoded = encode_response(routes[LIST_SERVICES], response)
    first = encoded["services"][0]
    assert (first["id"], first["rate"], first["minQuantity"], first["refill"]) == ("1", "0.90", "10", True)
    assert first["createTime"] == "1970-01-01T00:00:00Z"
    assert "updateTime" not in first  # unset message fields have presence: not printed
    assert encoded["nextPageToken"] == "t"


@pytest.mark.parametrize(
    ("response_body", "expected"),
    [
        pytest.param("services", [{"id": "4"}], id="repeated-message"),
        pytest.param("next_page_token", "next", id="scalar"),
    ],
)
def test_encode_response_body(routes: dict[str, Route], response_body: str, expected: Any) -> None:
    route = replace(routes[LIST_SERVICES], response_body=response_body)
    response = catalog_service_pb2.ListServicesResponse(
        services=[catalog_service_pb2.Service(id=4)], next_page_token="next"
    )
    encoded = encode_response(route, response)
    if isinstance(expected, list):
        assert [{"id": item["id"]} for item in encoded] == expected
        assert encoded[0]["refill"] is False  # defaults still printed inside
    else:
        assert encoded == expected
