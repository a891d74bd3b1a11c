"""Generates the OpenAPI 3.1 document of /api/v1 from the compiled route table.

The document describes what the transcoder (``edge/transcode.py``) really accepts and renders,
so it is derived from the same ``Route`` objects rather than written by hand:

* schemas follow the proto3 JSON mapping (lowerCamelCase names, 64-bit integers as strings,
  enums by name, well-known types in their JSON form);
* query parameters are exactly the fields the transcoder binds from the query string: scalars,
  enums, repeated scalars and scalar-like well-known types, reached through non-repeated message
  fields (``filter.status``), minus the top-level fields bound by the path or the body;
* every operation can fail with the one AIP-193 error body that ``edge/errors.py`` renders.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
from google.api import field_behavior_pb2  # type: ignore[import-untyped]  # googleapis-common-protos ships no stubs
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from edge.errors import HTTP_STATUS
from edge.routes import HTTP_BODY, Route, compile_routes

OPENAPI_VERSION = "3.1.0"
SPEC_PATH = "/api/v1/openapi.json"
DOCS_PATH = "/api/v1/docs"

_PACKAGE_PREFIX = "smm.v1."
_SCHEMA_REF = "#/components/schemas/"
_ERROR = "Error"  # both the schema and the shared response
_ERROR_REF = {"$ref": "#/components/responses/" + _ERROR}
_ERROR_STATUSES = ("400", "401", "403", "404", "409", "429", "500", "503")
_BEARER = "bearerAuth"
_AUTH_REQUIRED_PREFIXES = ("/api/v1/admin/", "/api/v1/dashboard/")
_EDGE_TAG = "Edge"
_BINARY = {"type": "string", "format": "binary"}
_TEMPLATE_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z]|\d|$)|[A-Z]?[a-z]+|\d+")

_INT64 = {"type": "string", "format": "int64"}
_UINT64 = {"type": "string", "format": "uint64"}
_INT32 = {"type": "integer", "format": "int32"}
_UINT32 = {"type": "integer", "format": "uint32", "minimum": 0}
_DOUBLE = {"type": "number", "format": "double"}
_FLOAT = {"type": "number", "format": "float"}
_BOOL = {"type": "boolean"}
_STRING = {"type": "string"}
_BYTES = {"type": "string", "format": "byte"}

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_DOUBLE: _DOUBLE,
    FieldDescriptor.TYPE_FLOAT: _FLOAT,
    FieldDescriptor.TYPE_BOOL: _BOOL,
    FieldDescriptor.TYPE_STRING: _STRING,
    FieldDescriptor.TYPE_BYTES: _BYTES,
}

# Well-known types whose JSON form is a single string, number or boolean: the transcoder binds
# these from the query string like scalars.
_SCALAR_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "examples": ["1.5s"],
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated lowerCamelCase field paths.",
    },
    "google.protobuf.DoubleValue": _DOUBLE,
    "google.protobuf.FloatValue": _FLOAT,
    "google.protobuf.Int64Value": _INT64,
    "google.protobuf.UInt64Value": _UINT64,
    "google.protobuf.Int32Value": _INT32,
    "google.protobuf.UInt32Value": _UINT32,
    "google.protobuf.BoolValue": _BOOL,
    "google.protobuf.StringValue": _STRING,
    "google.protobuf.BytesValue": _BYTES,
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    **_SCALAR_WELL_KNOWN,
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
}
_NULL_VALUE = "google.protobuf.NullValue"


class _Schemas:
    """components/schemas, filled on demand; a message is registered before its fields are
    walked, so a message that references itself (directly or through others) ends in a $ref."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {_ERROR: _error_schema()}
        self._names: dict[str, str] = {}  # proto full name -> component name

    def message(self, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return copy.deepcopy(_WELL_KNOWN[descriptor.full_name])
        # HttpBody only means raw bytes as the whole body or response (handled by the callers);
        # nested in JSON it is an ordinary message.
        name = self._register(descriptor.full_name)
        if name not in self.components:
            self.components[name] = {}  # the placeholder stops the recursion
            self.components[name] = self._object(descriptor)
        return {"$ref": _SCHEMA_REF + name}

    def enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        if descriptor.full_name == _NULL_VALUE:
            return {"type": "null"}
        name = self._register(descriptor.full_name)
        if name not in self.components:
            self.components[name] = {"type": "string", "enum": [v.name for v in descriptor.values]}
        return {"$ref": _SCHEMA_REF + name}

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        """The schema of a field as a property: its value plus the field's annotations."""
        schema = self.value(field)
        behaviors = _behaviors(field)
        if "OUTPUT_ONLY" in behaviors:
            schema["readOnly"] = True
        if "INPUT_ONLY" in behaviors:
            schema["writeOnly"] = True
        if behaviors:
            schema["x-field-behavior"] = behaviors
        if field.GetOptions().deprecated:
            schema["deprecated"] = True
        return schema

    def value(self, field: FieldDescriptor) -> dict[str, Any]:
        """The JSON value of a field, without annotations (also used for parameters)."""
        if _is_map(field):
            assert field.message_type is not None
            value_field = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value_field)}
        if field.is_repeated:
            return {"type": "array", "items": self._single(field)}
        return self._single(field)

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def _object(self, descriptor: Descriptor) -> dict[str, Any]:
        properties = {field.json_name: self.field(field) for field in descriptor.fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if descriptor.GetOptions().deprecated:
            schema["deprecated"] = True
        return schema

    def _register(self, full_name: str) -> str:
        if full_name not in self._names:
            short = full_name.removeprefix(_PACKAGE_PREFIX)
            # A proto type that happens to be named like a fixed schema ("Error") keeps its full name.
            self._names[full_name] = full_name if short == _ERROR else short
        return self._names[full_name]


def build_openapi(
    routes: list[Route] | None = None, *, title: str = "smm API", version: str = "v1", server_url: str = "/"
) -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of the given routes (default: every annotated RPC)."""
    routes = compile_routes() if routes is None else routes
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    bindings: Counter[str] = Counter()
    for route in routes:
        bindings[route.rpc] += 1
        operation = _operation(route, schemas, binding=bindings[route.rpc])
        _add(paths, _openapi_path(route.template), route.http_method.lower(), operation)
    for path, method, operation in _edge_operations():
        _add(paths, path, method, operation)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "servers": [{"url": server_url}],
        "tags": _tags(routes),
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),  # stable diffs of the published file
            "responses": {_ERROR: _error_response()},
            "securitySchemes": {_BEARER: {"type": "http", "scheme": "bearer"}},
        },
    }


def _add(paths: dict[str, dict[str, Any]], path: str, method: str, operation: dict[str, Any]) -> None:
    item = paths.setdefault(path, {})
    if method in item:  # compile_routes already rejects this for RPCs; guards the edge's own routes
        raise ValueError(f"{method.upper()} {path} is described twice")
    item[method] = operation


def _openapi_path(template: str) -> str:
    # "{name=*}" is the same single-segment variable as "{name}"; OpenAPI only knows the latter.
    return _TEMPLATE_VARIABLE.sub(r"{\1}", template)


def _operation(route: Route, schemas: _Schemas, *, binding: int) -> dict[str, Any]:
    service = route.method.containing_service.name
    operation_id = f"{service}_{route.method.name}"
    operation: dict[str, Any] = {
        # additional_bindings share one RPC; operationIds must stay unique (grpc-gateway's suffix).
        "operationId": operation_id if binding == 1 else f"{operation_id}{binding}",
        "tags": [service],
        "summary": _summary(route.method.name),
        "description": f"gRPC `{route.rpc.lstrip('/')}`.",
        "responses": {"200": _success(route, schemas), **_error_responses()},
        "security": _security(route.template),
    }
    parameters = [*_path_parameters(route, schemas), *_query_parameters(route, schemas)]
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        operation["requestBody"] = _request_body(route, schemas)
    if route.method.GetOptions().deprecated:
        operation["deprecated"] = True
    return operation


def _summary(method_name: str) -> str:
    words = _WORD.findall(method_name) or [method_name]
    # Acronyms ("API" in GetAPIKey) keep their case; other words after the first are lower-cased.
    rest = [w if len(w) > 1 and w.isupper() else w.lower() for w in words[1:]]
    return " ".join([words[0], *rest])


def _path_parameters(route: Route, schemas: _Schemas) -> Iterator[dict[str, Any]]:
    for variable in route.variables:
        field = _resolve(route.method.input_type, variable.field_path)
        yield {
            "name": ".".join(variable.field_path),
            "in": "path",
            "required": True,
            "schema": schemas.value(field),
        }


def _query_parameters(route: Route, schemas: _Schemas) -> Iterator[dict[str, Any]]:
    if route.body == "*":
        return  # the body binds every field the path does not
    bound = route.path_field_roots | {route.body}
    request = route.method.input_type
    for field in request.fields:
        if field.name in bound:
            continue
        for name, leaf in _query_fields(field, (), frozenset({request.full_name})):
            parameter: dict[str, Any] = {"name": name, "in": "query", "schema": schemas.value(leaf)}
            if leaf.GetOptions().deprecated:
                parameter["deprecated"] = True
            yield parameter


def _query_fields(
    field: FieldDescriptor, prefix: tuple[str, ...], visiting: frozenset[str]
) -> Iterator[tuple[str, FieldDescriptor]]:
    """The dotted query names under one field, as ``edge.transcode._resolve`` accepts them."""
    name = (*prefix, field.json_name)
    message = field.message_type
    if message is None or message.full_name in _SCALAR_WELL_KNOWN:
        yield ".".join(name), field
        return
    # Maps, repeated messages and JSON-object well-known types cannot be spelled as key=value;
    # a message already on the path would recurse forever.
    if (
        _is_map(field)
        or field.is_repeated
        or message.full_name in _WELL_KNOWN
        or message.full_name in visiting
    ):
        return
    for child in message.fields:
        yield from _query_fields(child, name, visiting | {message.full_name})


def _request_body(route: Route, schemas: _Schemas) -> dict[str, Any]:
    if route.raw_body:
        return {"required": True, "content": {"*/*": {"schema": dict(_BINARY)}}}
    if route.body == "*":
        return {"content": {"application/json": {"schema": schemas.message(route.method.input_type)}}}
    field = route.method.input_type.fields_by_name[route.body]
    body: dict[str, Any] = {"content": {"application/json": {"schema": schemas.value(field)}}}
    if "REQUIRED" in _behaviors(field):
        body["required"] = True
    return body


def _success(route: Route, schemas: _Schemas) -> dict[str, Any]:
    output = route.method.output_type
    if route.raw_response:
        return {"description": "OK", "content": {"*/*": {"schema": dict(_BINARY)}}}
    if route.response_body:
        field = output.fields_by_name[route.response_body]
        if field.message_type is not None and field.message_type.full_name == HTTP_BODY:
            return {"description": "OK", "content": {"*/*": {"schema": dict(_BINARY)}}}
        schema = schemas.value(field)
    else:
        schema = schemas.message(output)
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _error_responses() -> dict[str, Any]:
    responses: dict[str, Any] = {status: dict(_ERROR_REF) for status in _ERROR_STATUSES}
    responses["default"] = dict(_ERROR_REF)
    return responses


def _security(path: str) -> list[dict[str, list[str]]]:
    if path.startswith(_AUTH_REQUIRED_PREFIXES):
        return [{_BEARER: []}]
    # Public routes work anonymously; a token, when sent, still identifies the caller.
    return [{}, {_BEARER: []}]


def _tags(routes: list[Route]) -> list[dict[str, str]]:
    services = {r.method.containing_service.name: r.method.containing_service.full_name for r in routes}
    tags = [
        {"name": name, "description": f"gRPC service `{full}`."} for name, full in sorted(services.items())
    ]
    return [*tags, {"name": _EDGE_TAG, "description": "Served by the edge itself, not by a gRPC service."}]


def _edge_operations() -> list[tuple[str, str, dict[str, Any]]]:
    spec = {
        "operationId": "Edge_GetOpenApi",
        "tags": [_EDGE_TAG],
        "summary": "Get the OpenAPI document",
        "description": "This document.",
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
            **_error_responses(),
        },
        "security": _security(SPEC_PATH),
    }
    docs = {
        "operationId": "Edge_GetDocs",
        "tags": [_EDGE_TAG],
        "summary": "Get the API reference page",
        "description": "Swagger UI for this document.",
        "responses": {
            "200": {"description": "OK", "content": {"text/html": {"schema": {"type": "string"}}}},
            **_error_responses(),
        },
        "security": _security(DOCS_PATH),
    }
    return [(SPEC_PATH, "get", spec), (DOCS_PATH, "get", docs)]


def _error_schema() -> dict[str, Any]:
    statuses = [code.name for code in HTTP_STATUS if code is not grpc.StatusCode.OK]
    detail = {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    }
    error = {
        "type": "object",
        "properties": {
            "code": {"type": "integer", "format": "int32", "description": "The HTTP status code."},
            "status": {"type": "string", "enum": statuses, "description": "The gRPC status name."},
            "message": {"type": "string", "description": "For developers; may change. Do not parse."},
            "details": {"type": "array", "items": detail, "description": "e.g. google.rpc.ErrorInfo."},
        },
        "required": ["code", "status", "message"],
    }
    return {"type": "object", "properties": {"error": error}, "required": ["error"]}


def _error_response() -> dict[str, Any]:
    example = {
        "error": {
            "code": 400,
            "status": "FAILED_PRECONDITION",
            "message": "Insufficient funds: 9.00 available, 15.00 required.",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "INSUFFICIENT_FUNDS",
                    "domain": "wallet.smm",
                    "metadata": {"available": "9.00", "required": "15.00"},
                }
            ],
        }
    }
    return {
        "description": "An error (AIP-193); `(reason, domain)` of its ErrorInfo detail is the contract.",
        "content": {"application/json": {"schema": {"$ref": _SCHEMA_REF + _ERROR}, "example": example}},
    }


def _resolve(message: Descriptor, field_path: tuple[str, ...]) -> FieldDescriptor:
    descriptor: Descriptor | None = message
    field: FieldDescriptor | None = None
    for name in field_path:
        assert descriptor is not None  # compile_routes checked the path goes through messages
        field = descriptor.fields_by_name[name]
        descriptor = field.message_type
    assert field is not None
    return field


def _behaviors(field: FieldDescriptor) -> list[str]:
    values = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return [field_behavior_pb2.FieldBehavior.Name(v) for v in values]


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry
