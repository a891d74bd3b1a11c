"""Small proto <-> Python conversions shared by every servicer."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from server.common.errors import InvalidArgument

# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def request_time(stamp: timestamp_pb2.Timestamp, *, field: str) -> datetime:
    """A Timestamp from a request as an aware UTC datetime. The edge's JSON parser refuses times out
    of the type's range, but a gRPC caller can send any seconds and nanos: those are a field error
    here, never the ValueError that ``ToDatetime`` raises (which would be INTERNAL)."""
    if not (MIN_SECONDS <= stamp.seconds <= MAX_SECONDS and 0 <= stamp.nanos <= MAX_NANOS):
        raise InvalidArgument.for_field(field, "must be a time between years 1 and 9999")
    return stamp.ToDatetime(tzinfo=UTC)


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
