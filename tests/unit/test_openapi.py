"""The OpenAPI document of /api/v1 and the Swagger UI page that shows it."""

from __future__ import annotations

from dataclasses import replace
from html.parser import HTMLParser
from typing import Any

import pytest
from google.api import httpbody_pb2  # type: ignore[import-untyped]
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from openapi_spec_validator import validate
from smm.v1 import catalog_service_pb2

from edge.docs_page import swagger_assets_dir, swagger_ui_html, swagger_ui_init_js
from edge.openapi import DOCS_PATH, SPEC_PATH, build_openapi
from edge.routes import PathVariable, Route, compile_routes

FieldProto = descriptor_pb2.FieldDescriptorProto
ERROR_REF = {"$ref": "#/components/responses/Error"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_openapi()


def operation(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    result: dict[str, Any] = doc["paths"][path][method]
    return result


def params(op: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in op.get("parameters", []) if p["in"] == where}


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_compiled_route_has_its_operation(doc: dict[str, Any]) -> None:
    for route in compile_routes():
        op = operation(doc, route.template, route.http_method.lower())
        service, method = route.rpc.lstrip("/").split("/")
        base = f"{service.removeprefix('smm.v1.')}_{method}"
        # An additional binding (none in smm.v1 today; see test_routes) gets a numbered operationId.
        assert op["operationId"] == base or op["operationId"].removeprefix(base).isdigit()
        assert op["tags"] == [service.removeprefix("smm.v1.")]
    assert operation(doc, "/api/v1/public/services", "get")["summary"] == "List services"


def test_operation_ids_are_unique(doc: dict[str, Any]) -> None:
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_int64_fields_are_strings(doc: dict[str, Any]) -> None:
    properties = doc["components"]["schemas"]["Service"]["properties"]
    for name in ("id", "categoryId", "minQuantity", "maxQuantity"):
        assert properties[name]["type"] == "string"
        assert properties[name]["format"] == "int64"
    assert properties["refillDays"] == {"type": "integer", "format": "int32"}


def test_field_names_are_json_names_and_behaviors_are_marked(doc: dict[str, Any]) -> None:
    properties = doc["components"]["schemas"]["Category"]["properties"]
    assert set(properties) == {"id", "name", "sortOrder", "enabled", "createTime", "updateTime"}
    assert properties["id"]["readOnly"] is True
    assert properties["createTime"] == {
        "type": "string",
        "format": "date-time",
        "readOnly": True,
        "x-field-behavior": ["OUTPUT_ONLY"],
    }
    assert properties["name"]["x-field-behavior"] == ["REQUIRED"]
    assert "readOnly" not in properties["name"]
    assert "required" not in doc["components"]["schemas"]["Category"]


def test_enums_list_value_names(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert schemas["Service"]["properties"]["type"]["$ref"] == "#/components/schemas/ServiceType"
    names = [v.name for v in catalog_service_pb2.ServiceType.DESCRIPTOR.values]
    assert schemas["ServiceType"] == {"type": "string", "enum": names}


def test_repeated_message_fields_are_arrays_of_refs(doc: dict[str, Any]) -> None:
    properties = doc["components"]["schemas"]["ListServicesResponse"]["properties"]
    assert properties["services"] == {"type": "array", "items": {"$ref": "#/components/schemas/Service"}}


def test_path_parameters_are_required(doc: dict[str, Any]) -> None:
    get = params(operation(doc, "/api/v1/public/services/{id}", "get"), "path")
    assert get == {
        "id": {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "int64"}}
    }
    update = params(operation(doc, "/api/v1/admin/categories/{category.id}", "patch"), "path")
    assert update["category.id"]["required"] is True
    assert update["category.id"]["schema"] == {"type": "string", "format": "int64"}  # no readOnly on input


def test_query_parameters_of_list_services(doc: dict[str, Any]) -> None:
    query = params(operation(doc, "/api/v1/public/services", "get"), "query")
    assert set(query) == {"pageSize", "pageToken", "categoryId"}
    assert query["pageSize"]["schema"] == {"type": "integer", "format": "int32"}
    assert query["categoryId"]["schema"] == {"type": "string", "format": "int64"}


def test_fields_bound_by_path_or_body_are_not_query_parameters(doc: dict[str, Any]) -> None:
    query = params(operation(doc, "/api/v1/admin/categories/{category.id}", "patch"), "query")
    assert set(query) == {"updateMask"}  # a FieldMask binds from the query string as "a,b"
    assert query["updateMask"]["schema"]["type"] == "string"


def test_request_body_of_create_category_is_the_category(doc: dict[str, Any]) -> None:
    body = operation(doc, "/api/v1/admin/categories", "post")["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Category"}
    assert body["required"] is True
    assert "requestBody" not in operation(doc, "/api/v1/public/services", "get")


def test_every_operation_references_the_error_response(doc: dict[str, Any]) -> None:
    for item in doc["paths"].values():
        for op in item.values():
            for status in ("400", "401", "403", "404", "409", "429", "500", "503", "default"):
                assert op["responses"][status] == ERROR_REF
    error = doc["components"]["responses"]["Error"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
    body = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert body["code"]["type"] == "integer"
    assert "FAILED_PRECONDITION" in body["status"]["enum"]
    assert "OK" not in body["status"]["enum"]
    assert body["details"]["items"]["properties"]["@type"] == {"type": "string"}


def test_security_by_audience(doc: dict[str, Any]) -> None:
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert operation(doc, "/api/v1/admin/categories", "post")["security"] == [{"bearerAuth": []}]
    assert operation(doc, "/api/v1/public/services", "get")["security"] == [{}, {"bearerAuth": []}]


def test_edge_routes_are_described(doc: dict[str, Any]) -> None:
    spec = operation(doc, SPEC_PATH, "get")["responses"]["200"]["content"]
    assert spec["application/json"]["schema"] == {"type": "object"}
    docs = operation(doc, DOCS_PATH, "get")["responses"]["200"]["content"]
    assert set(docs) == {"text/html"}


def test_options_reach_info_and_servers() -> None:
    doc = build_openapi([], title="t", version="9", server_url="https://api.example.test")
    assert doc["info"] == {"title": "t", "version": "9"}
    assert doc["servers"] == [{"url": "https://api.example.test"}]
    assert set(doc["paths"]) == {SPEC_PATH, DOCS_PATH}
    validate(doc)


# --- synthetic messages: recursion, maps, a name clash, HttpBody, additional bindings ----------------


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: descriptor_pb2.FieldDescriptorProto.Type.ValueType,
    type_name: str = "",
) -> descriptor_pb2.FieldDescriptorProto:
    field = message.field.add(name=name, number=number, type=kind, label=FieldProto.LABEL_OPTIONAL)
    if type_name:  # a set-but-empty type_name is still "set" and the pool rejects it on scalars
        field.type_name = type_name
    return field


def _synthetic_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for dependency in (any_pb2.DESCRIPTOR, httpbody_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="openapi_test/synthetic.proto",
        package="smm.v1",
        syntax="proto3",
        dependency=["google/api/httpbody.proto"],
    )
    node = file.message_type.add(name="Node")
    _field(node, "id", 1, FieldProto.TYPE_INT64)
    _field(node, "parent", 2, FieldProto.TYPE_MESSAGE, ".smm.v1.Node")
    children = _field(node, "children", 3, FieldProto.TYPE_MESSAGE, ".smm.v1.Node")
    children.label = FieldProto.LABEL_REPEATED
    entry = node.nested_type.add(name="ByNameEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, FieldProto.TYPE_STRING)
    _field(entry, "value", 2, FieldProto.TYPE_MESSAGE, ".smm.v1.Node")
    by_name = _field(node, "by_name", 4, FieldProto.TYPE_MESSAGE, ".smm.v1.Node.ByNameEntry")
    by_name.label = FieldProto.LABEL_REPEATED
    _field(node, "last_error", 5, FieldProto.TYPE_MESSAGE, ".smm.v1.Error")
    error = file.message_type.add(name="Error")  # clashes with the fixed error schema
    _field(error, "text", 1, FieldProto.TYPE_STRING)
    query = file.message_type.add(name="NodeQuery")
    _field(query, "id", 1, FieldProto.TYPE_INT64)
    _field(query, "node", 2, FieldProto.TYPE_MESSAGE, ".smm.v1.Node")
    _field(query, "error", 3, FieldProto.TYPE_MESSAGE, ".smm.v1.Error")
    upload = file.message_type.add(name="Upload")
    _field(upload, "kind", 1, FieldProto.TYPE_STRING)
    _field(upload, "http_body", 2, FieldProto.TYPE_MESSAGE, ".google.api.HttpBody")
    service = file.service.add(name="NodeService")
    service.method.add(name="GetNode", input_type=".smm.v1.NodeQuery", output_type=".smm.v1.Node")
    service.method.add(name="Upload", input_type=".smm.v1.Upload", output_type=".google.api.HttpBody")
    pool.Add(file)
    return pool


def _synthetic_routes() -> list[Route]:
    service = _synthetic_pool().FindServiceByName("smm.v1.NodeService")
    get_node, upload = service.methods_by_name["GetNode"], service.methods_by_name["Upload"]
    get = Route(
        rpc="/smm.v1.NodeService/GetNode",
        method=get_node,
        http_method="GET",
        template="/api/v1/public/nodes/{id}",
        sanic_path="/api/v1/public/nodes/<p0>",
        variables=(PathVariable("p0", ("id",)),),
        body="",
        response_body="",
        raw_body=False,
        raw_response=False,
        forward_headers=(),
        timeout_s=None,
        cache_group="",
        request_class=message_factory.GetMessageClass(get_node.input_type),
        response_class=message_factory.GetMessageClass(get_node.output_type),
    )
    # An additional binding of the same RPC.
    again = replace(get, template="/api/v1/public/trees/{id}", sanic_path="/api/v1/public/trees/<p0>")
    post = replace(
        get,
        rpc="/smm.v1.NodeService/Upload",
        method=upload,
        http_method="POST",
        template="/api/v1/webhooks/{kind}",
        sanic_path="/api/v1/webhooks/<p0>",
        variables=(PathVariable("p0", ("kind",)),),
        body="http_body",
        raw_body=True,
        raw_response=True,
        request_class=message_factory.GetMessageClass(upload.input_type),
        response_class=message_factory.GetMessageClass(upload.output_type),
    )
    return [get, again, post]


@pytest.fixture(scope="module")
def synthetic() -> dict[str, Any]:
    return build_openapi(_synthetic_routes())


def test_synthetic_document_is_valid(synthetic: dict[str, Any]) -> None:
    validate(synthetic)


def test_self_recursive_message_uses_refs(synthetic: dict[str, Any]) -> None:
    node = synthetic["components"]["schemas"]["Node"]["properties"]
    ref = {"$ref": "#/components/schemas/Node"}
    assert node["parent"] == ref
    assert node["children"] == {"type": "array", "items": ref}
    assert node["byName"] == {"type": "object", "additionalProperties": ref}
    assert "Node.ByNameEntry" not in synthetic["components"]["schemas"]


def test_recursive_query_parameters_stop_at_a_cycle(synthetic: dict[str, Any]) -> None:
    query = params(operation(synthetic, "/api/v1/public/nodes/{id}", "get"), "query")
    # node.parent and node.children would recurse; node.byName is a map: none binds from the query.
    assert set(query) == {"node.id", "node.lastError.text", "error.text"}


def test_a_message_named_like_a_fixed_schema_keeps_its_full_name(synthetic: dict[str, Any]) -> None:
    schemas = synthetic["components"]["schemas"]
    assert schemas["smm.v1.Error"]["properties"] == {"text": {"type": "string"}}
    assert schemas["Node"]["properties"]["lastError"] == {"$ref": "#/components/schemas/smm.v1.Error"}
    assert "error" in schemas["Error"]["properties"]  # the AIP-193 body is untouched


def test_additional_bindings_get_distinct_operation_ids(synthetic: dict[str, Any]) -> None:
    assert operation(synthetic, "/api/v1/public/nodes/{id}", "get")["operationId"] == "NodeService_GetNode"
    assert operation(synthetic, "/api/v1/public/trees/{id}", "get")["operationId"] == "NodeService_GetNode2"


def test_http_body_request_and_response_are_binary(synthetic: dict[str, Any]) -> None:
    op = operation(synthetic, "/api/v1/webhooks/{kind}", "post")
    binary = {"schema": {"type": "string", "format": "binary"}}
    assert op["requestBody"]["content"] == {"*/*": binary}
    assert op["responses"]["200"]["content"] == {"*/*": binary}
    assert set(params(op, "path")) == {"kind"}
    assert "parameters" not in op or not params(op, "query")


# --- docs page ----------------------------------------------------------------------------------------


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.inline: list[str] = []
        self.styles: list[str] = []
        self.inline_styles = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self._in_script = True
            self.sources.append(attributes.get("src") or "")
        elif tag == "link" and attributes.get("rel") == "stylesheet":
            self.styles.append(attributes.get("href") or "")
        elif tag == "style" or "style" in attributes or any(name.startswith("on") for name in attributes):
            self.inline_styles += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def test_swagger_assets_are_installed() -> None:
    assets = swagger_assets_dir()
    for name in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css", "index.css"):
        assert (assets / name).is_file()


def test_docs_page_loads_local_assets_and_has_no_inline_code() -> None:
    page = _Scripts()
    page.feed(swagger_ui_html("/api/v1/openapi.json", "/api/v1/docs/assets/"))
    assert page.sources == [
        "/api/v1/docs/assets/swagger-ui-bundle.js",
        "/api/v1/docs/assets/swagger-ui-standalone-preset.js",
        "/api/v1/docs/assets/init.js",
    ]
    assert "/api/v1/docs/assets/swagger-ui.css" in page.styles
    assert page.inline == []
    assert page.inline_styles == 0


def test_docs_page_escapes_urls() -> None:
    html = swagger_ui_html('/spec?a=1&b="x"', '/assets"><script>')
    assert "<script>alert" not in html
    assert '"><script>' not in html
    assert "&amp;b=&quot;x&quot;" in html


def test_init_js_points_at_the_spec() -> None:
    script = swagger_ui_init_js('/api/v1/openapi.json?x="1"')
    assert 'url: "/api/v1/openapi.json?x=\\"1\\""' in script
    assert "SwaggerUIStandalonePreset" in script
