"""Small proto <-> Python conversions shared by every servicer."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from server.common.errors import InvalidArgument


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def mask_paths(
    mask: field_mask_pb2.FieldMask, resource: Message, *, allowed: frozenset[str], prefix: str
) -> list[str]:
    """The paths an update touches (AIP-134): the mask's, or every populated field when empty."""
    if mask.paths:
        unknown = [p for p in mask.paths if p not in allowed]
        if unknown:
            raise InvalidArgument.for_field("update_mask", f"cannot update {', '.join(sorted(unknown))}")
        return list(dict.fromkeys(mask.paths))
    populated = [field.name for field, _ in resource.ListFields() if field.name in allowed]
    if not populated:
        raise InvalidArgument.for_field(prefix, "names nothing to update")
    return populated
