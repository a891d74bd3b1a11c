"""Route compilation: google.api.http rules -> the edge's route table (grpc-gateway services_test.go).

Each case builds a synthetic proto file in a fresh descriptor pool, so a bad rule never touches
the generated smm.v1 descriptors, then feeds its methods to ``compile_routes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from google.api import annotations_pb2, http_pb2, httpbody_pb2
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from smm.v1 import options_pb2

from edge.descriptors import full_method_name, methods
from edge.routes import Route, RouteError, compile_routes

FieldProto = descriptor_pb2.FieldDescriptorProto
PACKAGE = "routetest"

# Files the synthetic file depends on, in dependency order.
_DEPENDENCIES = (descriptor_pb2, any_pb2, http_pb2, annotations_pb2, httpbody_pb2, options_pb2)


@dataclass
class Rpc:
    """One RPC of the synthetic service: its HTTP rule (None: no annotation) and route options."""

    name: str
    rule: http_pb2.HttpRule | None
    input_type: str = "Req"
    output_type: str = "Resp"
    route: options_pb2.RouteOptions = field(default_factory=options_pb2.RouteOptions)


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: descriptor_pb2.FieldDescriptorProto.Type.ValueType,
    type_name: str = "",
    *,
    repeated: bool = False,
) -> None:
    label = FieldProto.LABEL_REPEATED if repeated else FieldProto.LABEL_OPTIONAL
    added = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        added.type_name = type_name


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for module in _DEPENDENCIES:
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool


def build_methods(rpcs: Sequence[Rpc]) -> list[MethodDescriptor]:
    """A fresh pool holding routetest/service.proto with the given RPCs; their descriptors."""
    file = descriptor_pb2.FileDescriptorProto(
        name="routetest/service.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=["google/api/annotations.proto", "google/api/httpbody.proto", "smm/v1/options.proto"],
    )
    author = file.message_type.add(name="Author")
    _field(author, "name", 1, FieldProto.TYPE_STRING)
    book = file.message_type.add(name="Book")
    _field(book, "id", 1, FieldProto.TYPE_INT64)
    _field(book, "title", 2, FieldProto.TYPE_STRING)
    _field(book, "tags", 3, FieldProto.TYPE_STRING, repeated=True)
    _field(book, "author", 4, FieldProto.TYPE_MESSAGE, f".{PACKAGE}.Author")
    req = file.message_type.add(name="Req")
    _field(req, "id", 1, FieldProto.TYPE_INT64)
    _field(req, "name", 2, FieldProto.TYPE_STRING)
    _field(req, "book", 3, FieldProto.TYPE_MESSAGE, f".{PACKAGE}.Book")
    _field(req, "ids", 4, FieldProto.TYPE_INT64, repeated=True)
    _field(req, "books", 5, FieldProto.TYPE_MESSAGE, f".{PACKAGE}.Book", repeated=True)
    _field(req, "shelf", 6, FieldProto.TYPE_STRING)
    upload = file.message_type.add(name="Upload")
    _field(upload, "source", 1, FieldProto.TYPE_STRING)
    _field(upload, "http_body", 2, FieldProto.TYPE_MESSAGE, ".google.api.HttpBody")
    resp = file.message_type.add(name="Resp")
    _field(resp, "book", 1, FieldProto.TYPE_MESSAGE, f".{PACKAGE}.Book")
    _field(resp, "next_page_token", 2, FieldProto.TYPE_STRING)
    service = file.service.add(name="BookService")
    for rpc in rpcs:
        method = service.method.add(
            name=rpc.name,
            input_type=_qualified(rpc.input_type),
            output_type=_qualified(rpc.output_type),
        )
        if rpc.rule is not None:
            method.options.Extensions[annotations_pb2.http].CopyFrom(rpc.rule)
        if rpc.route.ByteSize():
            method.options.Extensions[options_pb2.route].CopyFrom(rpc.route)
    pool = _pool()
    pool.Add(file)
    found = pool.FindServiceByName(f"{PACKAGE}.BookService")
    return [found.methods_by_name[rpc.name] for rpc in rpcs]


def _qualified(name: str) -> str:
    return name if name.startswith(".") else f".{PACKAGE}.{name}"


def rule(**kwargs: object) -> http_pb2.HttpRule:
    return http_pb2.HttpRule(**kwargs)


# --- valid rules ---------------------------------------------------------------------------------

VALID = [
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{id}"))],
        [("GET", "/api/v1/public/books/{id}", "/api/v1/public/books/<p0>", (("p0", ("id",)),), "")],
        id="get-with-path-var",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{id=*}"))],
        [("GET", "/api/v1/public/books/{id=*}", "/api/v1/public/books/<p0>", (("p0", ("id",)),), "")],
        id="get-with-single-segment-wildcard",
    ),
    pytest.param(
        [Rpc("ListBooks", rule(get="/api/v1/public/books"))],
        [("GET", "/api/v1/public/books", "/api/v1/public/books", (), "")],
        id="get-without-path-vars",
    ),
    pytest.param(
        [Rpc("UpdateBook", rule(patch="/api/v1/admin/books/{book.id}", body="book"))],
        [
            (
                "PATCH",
                "/api/v1/admin/books/{book.id}",
                "/api/v1/admin/books/<p0>",
                (("p0", ("book", "id")),),
                "book",
            )
        ],
        id="nested-path-var-with-body-field",
    ),
    pytest.param(
        [Rpc("CreateBook", rule(post="/api/v1/admin/books", body="*"))],
        [("POST", "/api/v1/admin/books", "/api/v1/admin/books", (), "*")],
        id="post-body-star",
    ),
    pytest.param(
        [Rpc("CancelBook", rule(post="/api/v1/dashboard/books/{id}/cancel", body="*"))],
        [
            (
                "POST",
                "/api/v1/dashboard/books/{id}/cancel",
                "/api/v1/dashboard/books/<p0>/cancel",
                (("p0", ("id",)),),
                "*",
            )
        ],
        id="action-with-path-var-and-body-star",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/shelves/{shelf}/books/{id}"))],
        [
            (
                "GET",
                "/api/v1/public/shelves/{shelf}/books/{id}",
                "/api/v1/public/shelves/<p0>/books/<p1>",
                (("p0", ("shelf",)), ("p1", ("id",))),
                "",
            )
        ],
        id="two-path-vars-numbered-in-order",
    ),
    pytest.param(
        [Rpc("ReplaceBook", rule(put="/api/v1/admin/books/{id}", body="book"))],
        [("PUT", "/api/v1/admin/books/{id}", "/api/v1/admin/books/<p0>", (("p0", ("id",)),), "book")],
        id="put-with-body-field",
    ),
    pytest.param(
        [
            Rpc("GetBook", rule(get="/api/v1/public/books/{id}")),
            Rpc("DeleteBook", rule(delete="/api/v1/admin/books/{id}")),
        ],
        [
            ("GET", "/api/v1/public/books/{id}", "/api/v1/public/books/<p0>", (("p0", ("id",)),), ""),
            ("DELETE", "/api/v1/admin/books/{id}", "/api/v1/admin/books/<p0>", (("p0", ("id",)),), ""),
        ],
        id="delete-without-body",
    ),
    pytest.param(
        [
            Rpc("GetBook", rule(get="/api/v1/public/books/{id}")),
            Rpc("UpdateBook", rule(patch="/api/v1/public/books/{id}", body="book")),
        ],
        [
            ("GET", "/api/v1/public/books/{id}", "/api/v1/public/books/<p0>", (("p0", ("id",)),), ""),
            ("PATCH", "/api/v1/public/books/{id}", "/api/v1/public/books/<p0>", (("p0", ("id",)),), "book"),
        ],
        id="same-path-different-methods",
    ),
    pytest.param(
        [
            Rpc(
                "GetBook",
                rule(
                    get="/api/v1/public/books/{id}",
                    additional_bindings=[
                        rule(get="/api/v1/public/shelves/{shelf}/books/{id}"),
                        rule(post="/api/v1/public/books/lookup", body="*"),
                    ],
                ),
            )
        ],
        [
            ("GET", "/api/v1/public/books/{id}", "/api/v1/public/books/<p0>", (("p0", ("id",)),), ""),
            (
                "GET",
                "/api/v1/public/shelves/{shelf}/books/{id}",
                "/api/v1/public/shelves/<p0>/books/<p1>",
                (("p0", ("shelf",)), ("p1", ("id",))),
                "",
            ),
            ("POST", "/api/v1/public/books/lookup", "/api/v1/public/books/lookup", (), "*"),
        ],
        id="additional-bindings",
    ),
    pytest.param(
        [Rpc("HeadBook", rule(custom=http_pb2.CustomHttpPattern(kind="head", path="/api/v1/public/books")))],
        [("HEAD", "/api/v1/public/books", "/api/v1/public/books", (), "")],
        id="custom-pattern-kind-upper-cased",
    ),
]


@pytest.mark.parametrize(("rpcs", "expected"), VALID)
def test_compile_valid_rules(
    rpcs: list[Rpc],
    expected: list[tuple[str, str, str, tuple[tuple[str, tuple[str, ...]], ...], str]],
) -> None:
    routes = compile_routes(build_methods(rpcs))
    got = [
        (
            r.http_method,
            r.template,
            r.sanic_path,
            tuple((v.param, v.field_path) for v in r.variables),
            r.body,
        )
        for r in routes
    ]
    assert got == expected
    by_name = {rpc.name: f"/{PACKAGE}.BookService/{rpc.name}" for rpc in rpcs}
    assert {r.rpc for r in routes} == set(by_name.values())
    for r in routes:
        assert r.rpc == full_method_name(r.method)
        assert r.request_class.DESCRIPTOR.full_name == r.method.input_type.full_name
        assert r.response_class.DESCRIPTOR.full_name == r.method.output_type.full_name
        assert r.path_field_roots == frozenset(v.field_path[0] for v in r.variables)
        assert not r.raw_body
        assert not r.raw_response
        assert r.timeout_s is None
        assert r.forward_headers == ()
        assert r.cache_group == ""


def test_additional_bindings_share_the_method_descriptor() -> None:
    rpcs = [
        Rpc(
            "GetBook",
            rule(get="/api/v1/public/books/{id}", additional_bindings=[rule(get="/api/v1/public/b/{id}")]),
        )
    ]
    first, second = compile_routes(build_methods(rpcs))
    assert first.method.full_name == second.method.full_name
    assert (first.template, second.template) == ("/api/v1/public/books/{id}", "/api/v1/public/b/{id}")
    assert first.rpc == second.rpc == f"/{PACKAGE}.BookService/GetBook"


def test_http_body_request_and_response_are_raw() -> None:
    rpcs = [
        Rpc(
            "Upload",
            rule(post="/api/v1/webhooks/books/{source}", body="http_body"),
            input_type="Upload",
            output_type=".google.api.HttpBody",
        )
    ]
    (route,) = compile_routes(build_methods(rpcs))
    assert route.raw_body
    assert route.raw_response
    assert route.body == "http_body"
    assert route.variables[0].field_path == ("source",)


def test_route_options_timeout_and_forward_headers() -> None:
    options = options_pb2.RouteOptions(
        timeout_ms=1500, forward_headers=["Stripe-Signature", "svix-id"], cache_group="books"
    )
    rpcs = [Rpc("GetBook", rule(get="/api/v1/public/books/{id}"), route=options)]
    (route,) = compile_routes(build_methods(rpcs))
    assert route.timeout_s == pytest.approx(1.5)
    assert route.forward_headers == ("stripe-signature", "svix-id")
    assert route.cache_group == "books"


@pytest.mark.parametrize(
    "binding",
    [
        pytest.param(rule(post="/api/v1/admin/books", body="*"), id="post"),
        pytest.param(rule(delete="/api/v1/admin/books/{id}"), id="delete"),
    ],
)
def test_only_get_routes_may_be_cached(binding: http_pb2.HttpRule) -> None:
    rpcs = [Rpc("ChangeBook", binding, route=options_pb2.RouteOptions(cache_group="books"))]
    with pytest.raises(RouteError, match="only GET routes may be cached"):
        compile_routes(build_methods(rpcs))


@pytest.mark.parametrize(
    ("response_body", "ok"),
    [
        pytest.param("", True, id="none"),
        pytest.param("book", True, id="message-field"),
        pytest.param("next_page_token", True, id="scalar-field"),
        pytest.param("nope", False, id="missing-field"),
        pytest.param("book.id", False, id="nested-path-not-supported"),
    ],
)
def test_response_body_validation(response_body: str, ok: bool) -> None:
    rpcs = [Rpc("GetBook", rule(get="/api/v1/public/books/{id}", response_body=response_body))]
    if ok:
        (route,) = compile_routes(build_methods(rpcs))
        assert route.response_body == response_body
    else:
        with pytest.raises(RouteError, match="response_body"):
            compile_routes(build_methods(rpcs))


# --- rules that stop start-up ----------------------------------------------------------------------

INVALID = [
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{id}", body="*"))],
        r"GET /api/v1/public/books/\{id\} must not have a body",
        id="body-on-get",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{id}", body="book"))],
        "must not have a body",
        id="body-field-on-get",
    ),
    pytest.param(
        [Rpc("DeleteBook", rule(delete="/api/v1/admin/books/{id}", body="*"))],
        r"DELETE /api/v1/admin/books/\{id\} must not have a body",
        id="body-on-delete",
    ),
    pytest.param(
        [
            Rpc(
                "GetBook",
                rule(custom=http_pb2.CustomHttpPattern(kind="get", path="/api/v1/public/books"), body="*"),
            )
        ],
        "must not have a body",
        id="body-on-custom-get",
    ),
    pytest.param(
        [Rpc("GetBooks", rule(get="/api/v1/public/books/{ids}"))],
        "path variable ids is a repeated field",
        id="path-var-repeated",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{book.tags}"))],
        "path variable book.tags is a repeated field",
        id="nested-path-var-repeated",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{book}"))],
        "path variable book is a message field",
        id="path-var-message",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{book.author}"))],
        "path variable book.author is a message field",
        id="nested-path-var-message",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{nope}"))],
        "path variable nope is not a field of the request",
        id="path-var-missing",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{book.nope}"))],
        "path variable book.nope is not a field of the request",
        id="nested-path-var-missing",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{id.value}"))],
        "path variable id.value goes through a scalar",
        id="path-var-through-scalar",
    ),
    pytest.param(
        [Rpc("CreateBook", rule(post="/api/v1/admin/books", body="nope"))],
        "body field 'nope' is not a field of routetest.Req",
        id="body-field-missing",
    ),
    pytest.param(
        [Rpc("CreateBooks", rule(post="/api/v1/admin/books", body="books"))],
        "body field 'books' must not be repeated",
        id="body-field-repeated",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v2/public/books/{id}"))],
        "is not under /api/v1/",
        id="path-api-v2",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/books/{id}"))],
        "is not under /api/v1/",
        id="path-outside-api",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v10/books"))],
        "is not under /api/v1/",
        id="path-prefix-lookalike",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="api/v1/public/books"))],
        "is not under /api/v1/",
        id="path-without-leading-slash",
    ),
    pytest.param(
        [Rpc("PublishBook", rule(post="/api/v1/admin/books/{id}:publish", body="*"))],
        r"custom verbs \(':'\) are not supported",
        id="custom-verb",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/{name=shelves/*}"))],
        "unsupported path segment",
        id="segment-with-pattern",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{name=**}"))],
        "unsupported path segment",
        id="segment-multi-wildcard",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/*"))],
        r"unsupported path segment '\*'",
        id="bare-wildcard",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public//books"))],
        "unsupported path segment ''",
        id="empty-segment",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{Id}"))],
        "unsupported path segment",
        id="upper-case-variable",
    ),
    pytest.param(
        [
            Rpc("GetBook", rule(get="/api/v1/public/books/{id}")),
            Rpc("FindBook", rule(get="/api/v1/public/books/{name}")),
        ],
        r"GET /api/v1/public/books/\{name\} is bound twice: /routetest.BookService/GetBook "
        r"and /routetest.BookService/FindBook",
        id="duplicate-method-and-path-across-rpcs",
    ),
    pytest.param(
        [
            Rpc("GetBook", rule(get="/api/v1/public/books/{id}")),
            Rpc(
                "FindBook",
                rule(get="/api/v1/public/find", additional_bindings=[rule(get="/api/v1/public/books/{id}")]),
            ),
        ],
        "is bound twice",
        id="duplicate-via-additional-binding",
    ),
    pytest.param(
        [Rpc("GetBook", None)],
        "/routetest.BookService/GetBook has no google.api.http annotation",
        id="no-annotation",
    ),
    pytest.param(
        [Rpc("GetBook", rule(get="/api/v1/public/books/{id}")), Rpc("Unbound", None)],
        "/routetest.BookService/Unbound has no google.api.http annotation",
        id="one-rpc-without-annotation",
    ),
    pytest.param(
        [Rpc("GetBook", rule(body="*"))],
        "the HTTP rule has no pattern",
        id="no-pattern",
    ),
    pytest.param(
        [
            Rpc(
                "GetBook",
                rule(
                    get="/api/v1/public/books/{id}",
                    additional_bindings=[rule(get="/api/v1/public/b/{id}", body="*")],
                ),
            )
        ],
        "must not have a body",
        id="bad-additional-binding",
    ),
]


@pytest.mark.parametrize(("rpcs", "message"), INVALID)
def test_compile_rejects(rpcs: list[Rpc], message: str) -> None:
    with pytest.raises(RouteError, match=message):
        compile_routes(build_methods(rpcs))


def test_nested_additional_bindings_are_rejected() -> None:
    nested = rule(get="/api/v1/public/b/{id}", additional_bindings=[rule(get="/api/v1/public/c/{id}")])
    rpcs = [Rpc("GetBook", rule(get="/api/v1/public/books/{id}", additional_bindings=[nested]))]
    with pytest.raises(RouteError, match="additional_binding"):
        compile_routes(build_methods(rpcs))


def test_route_error_is_a_value_error() -> None:
    assert issubclass(RouteError, ValueError)


# --- the real route table ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_routes() -> list[Route]:
    return compile_routes()


def test_real_table_compiles_and_covers_every_rpc(real_routes: list[Route]) -> None:
    assert real_routes
    assert {full_method_name(m) for m in methods()} == {r.rpc for r in real_routes}


def test_real_routes_are_under_api_v1(real_routes: list[Route]) -> None:
    for route in real_routes:
        assert route.template.startswith("/api/v1/"), route.template
        assert route.sanic_path.startswith("/api/v1/"), route.sanic_path


def test_real_routes_are_unique_and_well_formed(real_routes: list[Route]) -> None:
    keys = [(r.http_method, r.sanic_path) for r in real_routes]
    assert len(keys) == len(set(keys))
    for route in real_routes:
        assert route.http_method in {"GET", "POST", "PUT", "PATCH", "DELETE"}
        if route.http_method in ("GET", "DELETE"):
            assert route.body == "", route.rpc
        if route.body not in ("", "*"):
            assert route.body in route.method.input_type.fields_by_name
        if route.response_body:
            assert route.response_body in route.method.output_type.fields_by_name
        assert len(route.variables) == route.template.count("{")


def test_real_route_examples(real_routes: list[Route]) -> None:
    by_rpc = {(r.rpc, r.http_method): r for r in real_routes}
    get = by_rpc[("/smm.v1.CatalogService/GetService", "GET")]
    assert get.template == "/api/v1/public/services/{id}"
    assert get.sanic_path == "/api/v1/public/services/<p0>"
    update = by_rpc[("/smm.v1.CatalogService/UpdateService", "PATCH")]
    assert update.body == "service"
    assert [v.field_path for v in update.variables] == [("service", "id")]
