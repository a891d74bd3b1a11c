"""Finds every gRPC service of package smm.v1 in the generated code.

A new ``proto/smm/v1/*_service.proto`` is picked up without touching the edge.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import smm.v1
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor


def service_modules() -> list[str]:
    return sorted(
        f"smm.v1.{m.name}" for m in pkgutil.iter_modules(smm.v1.__path__) if m.name.endswith("_service_pb2")
    )


def services() -> list[ServiceDescriptor]:
    found: list[ServiceDescriptor] = []
    for name in service_modules():
        module = importlib.import_module(name)
        found.extend(module.DESCRIPTOR.services_by_name.values())
    return sorted(found, key=lambda s: s.full_name)


def methods() -> Iterator[MethodDescriptor]:
    for service in services():
        yield from service.methods


def full_method_name(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"
