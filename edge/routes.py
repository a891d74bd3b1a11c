"""Compiles the google.api.http rules of every RPC into the edge's route table.

Runs once at start-up and fails fast (``RouteError``) on a rule the transcoder cannot serve,
as grpc-gateway's ``newMethod`` does: a body on GET or DELETE, a path variable that names a
repeated, message-typed or missing field, a body field that does not exist, a pattern the
transcoder does not support, or two RPCs bound to the same method and path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message
from smm.v1 import options_pb2

from edge.descriptors import full_method_name, methods

HTTP_BODY = "google.api.HttpBody"
_VERBS = ("get", "put", "post", "delete", "patch")
_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?:=\*)?\}")
_LITERAL = re.compile(r"[A-Za-z0-9._~-]+")


class RouteError(ValueError):
    """An HTTP rule the transcoder cannot serve; stops start-up."""


@dataclass(frozen=True)
class PathVariable:
    param: str  # the Sanic parameter name, p0, p1, ...
    field_path: tuple[str, ...]  # proto field names from the request root


@dataclass(frozen=True)
class Route:
    rpc: str  # "/smm.v1.CatalogService/ListServices"
    method: MethodDescriptor
    http_method: str  # "GET"
    template: str  # "/api/v1/public/services/{id}"
    sanic_path: str  # "/api/v1/public/services/<p0>"
    variables: tuple[PathVariable, ...]
    body: str  # "", "*" or a top-level field name
    response_body: str
    raw_body: bool  # the body field is a google.api.HttpBody: bytes pass through
    raw_response: bool  # the response is a google.api.HttpBody
    forward_headers: tuple[str, ...]
    timeout_s: float | None
    cache_group: str
    request_class: type[Message]
    response_class: type[Message]

    @property
    def path_field_roots(self) -> frozenset[str]:
        return frozenset(v.field_path[0] for v in self.variables)


def compile_routes(method_descriptors: Iterable[MethodDescriptor] | None = None) -> list[Route]:
    routes: list[Route] = []
    seen: dict[tuple[str, str], str] = {}
    for method in method_descriptors if method_descriptors is not None else methods():
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            raise RouteError(f"{full_method_name(method)} has no google.api.http annotation")
        rule = options.Extensions[annotations_pb2.http]
        route_options = options.Extensions[options_pb2.route]
        for binding in [rule, *rule.additional_bindings]:
            if binding is not rule and binding.additional_bindings:
                raise RouteError(f"{full_method_name(method)}: additional_bindings must not be nested")
            route = _compile_binding(method, binding, route_options)
            key = (route.http_method, route.sanic_path)
            if key in seen:
                raise RouteError(
                    f"{route.http_method} {route.template} is bound twice: {seen[key]} and {route.rpc}"
                )
            seen[key] = route.rpc
            routes.append(route)
    return routes


def _compile_binding(
    method: MethodDescriptor, rule: http_pb2.HttpRule, route_options: options_pb2.RouteOptions
) -> Route:
    rpc = full_method_name(method)
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        http_method, template = rule.custom.kind.upper(), rule.custom.path
    elif kind in _VERBS:
        http_method, template = kind.upper(), getattr(rule, kind)
    else:
        raise RouteError(f"{rpc}: the HTTP rule has no pattern")
    request = method.input_type
    if rule.body and http_method in ("GET", "DELETE"):
        raise RouteError(f"{rpc}: {http_method} {template} must not have a body")
    if route_options.cache_group and http_method != "GET":
        raise RouteError(f"{rpc}: only GET routes may be cached ({http_method} {template})")
    sanic_path, variables = _compile_template(rpc, template, request)
    raw_body = False
    if rule.body and rule.body != "*":
        field = request.fields_by_name.get(rule.body)
        if field is None:
            raise RouteError(f"{rpc}: body field {rule.body!r} is not a field of {request.full_name}")
        if field.is_repeated:
            raise RouteError(f"{rpc}: body field {rule.body!r} must not be repeated")
        raw_body = field.message_type is not None and field.message_type.full_name == HTTP_BODY
    if rule.body == "*" and variables and any(v.field_path[0] == "*" for v in variables):
        raise RouteError(f"{rpc}: bad path variable")  # pragma: no cover - guarded by the template regex
    if rule.response_body and rule.response_body not in method.output_type.fields_by_name:
        raise RouteError(f"{rpc}: response_body {rule.response_body!r} is not a field of the response")
    timeout_ms = route_options.timeout_ms
    return Route(
        rpc=rpc,
        method=method,
        http_method=http_method,
        template=template,
        sanic_path=sanic_path,
        variables=variables,
        body=rule.body,
        response_body=rule.response_body,
        raw_body=raw_body,
        raw_response=method.output_type.full_name == HTTP_BODY,
        forward_headers=tuple(h.lower() for h in route_options.forward_headers),
        timeout_s=timeout_ms / 1000 if timeout_ms else None,
        cache_group=route_options.cache_group,
        request_class=message_factory.GetMessageClass(request),
        response_class=message_factory.GetMessageClass(method.output_type),
    )


def _compile_template(rpc: str, template: str, request: Descriptor) -> tuple[str, tuple[PathVariable, ...]]:
    if not template.startswith("/api/v1/"):
        raise RouteError(f"{rpc}: {template} is not under /api/v1/")
    if ":" in template:
        raise RouteError(f"{rpc}: custom verbs (':') are not supported in {template}")
    variables: list[PathVariable] = []
    parts: list[str] = []
    for segment in template.strip("/").split("/"):
        match = _VARIABLE.fullmatch(segment)
        if match:
            field_path = tuple(match.group(1).split("."))
            _check_path_field(rpc, request, field_path)
            param = f"p{len(variables)}"
            variables.append(PathVariable(param, field_path))
            parts.append(f"<{param}>")
        elif _LITERAL.fullmatch(segment):
            parts.append(segment)
        else:
            raise RouteError(f"{rpc}: unsupported path segment {segment!r} in {template}")
    return "/" + "/".join(parts), tuple(variables)


def _check_path_field(rpc: str, request: Descriptor, field_path: tuple[str, ...]) -> None:
    descriptor: Descriptor | None = request
    for depth, name in enumerate(field_path):
        if descriptor is None:
            raise RouteError(f"{rpc}: path variable {'.'.join(field_path)} goes through a scalar")
        field = descriptor.fields_by_name.get(name)
        if field is None:
            raise RouteError(f"{rpc}: path variable {'.'.join(field_path)} is not a field of the request")
        if field.is_repeated:
            raise RouteError(f"{rpc}: path variable {'.'.join(field_path)} is a repeated field")
        last = depth == len(field_path) - 1
        if last and field.message_type is not None:
            raise RouteError(f"{rpc}: path variable {'.'.join(field_path)} is a message field")
        descriptor = field.message_type
