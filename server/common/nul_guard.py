"""Refuses text fields holding NUL characters before any code sees them.

Proto3 strings may hold U+0000, PostgreSQL text may not: such a value reached the database (an
adjustment's reason, a request id, a search, an email in a rate-limit key) and failed there as an
INTERNAL error. One stage checks every request instead of every field's validator remembering to.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from server.common.errors import FieldViolation, collect
from server.common.interceptors import Behavior, CallInfo, _UnaryInterceptor

NUL = "\x00"


def fields_with_nul(message: Message, prefix: str = "") -> list[str]:
    """The paths (``lines``, ``order.link``, ``items[2].note``, ``labels[key]``) of string fields
    holding a NUL, at any depth."""
    found: list[str] = []
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else (value,)
            if any(NUL in text for text in values):
                found.append(path)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    if (isinstance(key, str) and NUL in key) or (isinstance(item, str) and NUL in item):
                        found.append(f"{path}[{key!r}]")
                    elif isinstance(item, Message):
                        found.extend(fields_with_nul(item, f"{path}[{key!r}]."))
            elif field.is_repeated:
                for index, item in enumerate(value):
                    found.extend(fields_with_nul(item, f"{path}[{index}]."))
            else:
                found.extend(fields_with_nul(value, path + "."))
    return found


class NulGuardInterceptor(_UnaryInterceptor):
    async def around(
        self, call: CallInfo, request: Any, context: grpc.aio.ServicerContext, inner: Behavior
    ) -> Any:
        # The serialised form holds a zero byte whenever a string holds a NUL, and usually does
        # not otherwise: the walk only runs when it might find something.
        if isinstance(request, Message) and b"\x00" in request.SerializeToString():
            bad = fields_with_nul(request)
            collect([FieldViolation(path, "must not contain NUL characters") for path in bad])
        return await inner(request, context)
