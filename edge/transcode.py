"""HTTP request -> request proto, and response proto -> JSON, for one compiled ``Route``.

Decoding follows grpc-gateway's order: the body (``*`` or one top-level field), then path
variables (they win over the body), then query parameters for fields neither binds. Any failure
is ``TranscodeError`` (INVALID_ARGUMENT naming the field).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.api import field_behavior_pb2  # type: ignore[import-untyped]  # no stubs in googleapis-common-protos
from google.protobuf import duration_pb2, field_mask_pb2, json_format, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from edge.routes import Route


class TranscodeError(ValueError):
    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def decode_request(
    route: Route,
    *,
    body: bytes,
    content_type: str,
    path_params: Mapping[str, str],
    query: Iterable[tuple[str, str]],
) -> Message:
    request = route.request_class()
    if route.body:
        _apply_body(route, request, body, content_type)
    for variable in route.variables:
        _set_path(request, variable.field_path, path_params[variable.param], source="path")
    if route.body != "*":
        bound = route.path_field_roots | ({route.body} if route.body else set())
        _apply_query(request, query, bound)
    if route.http_method == "PATCH" and route.body and route.body != "*":
        in_path = {
            v.field_path[1]
            for v in route.variables
            if len(v.field_path) == 2 and v.field_path[0] == route.body
        }
        _mask_from_body(request, route.body, body, in_path)
    return request


def _mask_from_body(request: Message, body_field: str, body: bytes, in_path: set[str]) -> None:
    """As grpc-gateway does: a PATCH without an ``update_mask`` updates the fields the JSON body
    names, so ``{"enabled": false}`` means "set enabled to false", not "nothing to update"."""
    mask_field = request.DESCRIPTOR.fields_by_name.get("update_mask")
    if mask_field is None or mask_field.message_type is None:
        return
    if mask_field.message_type.full_name != "google.protobuf.FieldMask":
        return
    mask = request.update_mask  # type: ignore[attr-defined]
    if mask.paths or not body.strip():
        return
    parsed = json.loads(body)  # already parsed once without error
    if not isinstance(parsed, dict):
        return
    resource = request.DESCRIPTOR.fields_by_name[body_field].message_type
    if resource is None:
        return
    by_json = {f.json_name: f.name for f in resource.fields} | {f.name: f.name for f in resource.fields}
    named = (by_json[key] for key in parsed if key in by_json)
    mask.paths.extend(dict.fromkeys(name for name in named if name not in in_path))


def _apply_body(route: Route, request: Message, body: bytes, content_type: str) -> None:
    if route.raw_body:
        target = getattr(request, route.body)
        target.content_type = content_type
        target.data = body
        return
    if not body.strip():
        return  # an empty body is an empty message, as in grpc-gateway
    try:
        parsed = json.loads(body, object_pairs_hook=_refuse_duplicate_keys)
    except TranscodeError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise TranscodeError(f"the request body is not valid JSON: {exc}") from exc
    except ValueError as exc:
        # Python refuses to convert an integer literal longer than sys.get_int_max_str_digits()
        # (4,300 digits by default, a guard against quadratic-time parsing), and json.loads lets
        # that plain ValueError through. Path and query values need no such guard: protobuf's
        # json_format turns the same ValueError into a ParseError, which _set_path reports.
        raise TranscodeError("the request body has a number with too many digits") from exc
    if _ESCAPED_SURROGATE.search(body):
        _refuse_unpaired_surrogates(parsed, "" if route.body == "*" else route.body)
    if route.body == "*":
        _parse_into(parsed, request, field="")
        return
    field = request.DESCRIPTOR.fields_by_name[route.body]
    is_object = field.message_type is not None and not field.message_type.full_name.startswith(
        "google.protobuf."
    )
    if is_object and not isinstance(parsed, dict):
        raise TranscodeError("the request body must be a JSON object", field=route.body)
    _parse_into({field.json_name: parsed}, request, field=route.body)


# A ``\\uD800``-``\\uDFFF`` escape: the only way a lone surrogate gets into parsed JSON (raw
# UTF-8 cannot encode one, and json.loads joins a high and a low escape into one character).
_ESCAPED_SURROGATE = re.compile(rb"\\[uU][dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_unpaired_surrogates(parsed: Any, prefix: str) -> None:
    """JSON lets a string hold ``"\\ud800"`` alone, but that is no Unicode text: protobuf strings
    are UTF-8, and upb's lookups (enum names, field names) and the error renderer failed on it
    with a 500. Refused up front on the first string (key or value) that has one; iterative, as the
    body may nest as deep as json.loads allows."""
    stack: list[tuple[str, Any]] = [(prefix, parsed)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                shown = path or "the request body"
                raise TranscodeError(
                    f"invalid {shown}: the text has an unpaired UTF-16 surrogate; send valid Unicode",
                    field=path,
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                named = f"{path}.{key[:100]}" if path else key[:100]
                if _SURROGATE.search(key):
                    named = named.encode("utf-8", "backslashreplace").decode("ascii", "replace")
                    raise TranscodeError(
                        f"invalid {named}: the key has an unpaired UTF-16 surrogate; send valid Unicode",
                        field=path,
                    )
                stack.append((named, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object naming a key twice is refused, as grpc-gateway's protojson and protobuf's own
    ``json_format.Parse`` do: silently keeping the last value lets the client (or a proxy that
    reads the first) and the server disagree on what was asked."""
    parsed = dict(pairs)
    if len(parsed) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise TranscodeError(f"the request body names the key {key[:100]!r} twice")
            seen.add(key)
    return parsed


def _parse_into(value: Any, message: Message, *, field: str) -> None:
    if field == "" and not isinstance(value, dict):
        raise TranscodeError("the request body must be a JSON object")
    _check_body_values(value, message.DESCRIPTOR, prefix="")
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise TranscodeError(_clean_parse_error(exc), field=_field_from_parse_error(exc) or field) from exc


def _check_body_values(value: Any, descriptor: Any, *, prefix: str) -> None:
    """What protobuf's parser would bend, refused on the field's path (proto names, as the server
    and the query string name fields; ``fallbacks[1].provider_id``, ``labels['k']``), at any depth.

    Unknown fields are ignored (clients may be newer than the server), but the parser then also
    drops an enum value it does not know: a typo like ``"SERVICE_TYPE_PACKAG"`` became the zero
    value and, say, a service of another type. A name the enum lacks is an error.

    So is an enum number that is not an integer: the parser takes it with ``int()``, which read
    ``1.5`` as 1 and ``true`` as 1, where an integer field refuses both. And an integer given as a
    JSON string (as proto3 JSON sends int64) is an optional ``-`` and ASCII digits, the query
    string's rule: the parser read ``"+5"``, an Arabic-Indic five, ``"1_0"``, a tab and a digit,
    and ``"1e2"`` with ``int()`` or as a float. A JSON number keeps the parser's handling."""
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        if field is None:
            continue
        path = f"{prefix}{field.name}"
        if item is None:
            continue  # null is the field's default (proto3 JSON)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _expect(item, dict, "an object", path)
            entry = field.message_type.fields_by_name
            for map_key, one in item.items():
                _check_map_key(map_key, entry["key"], path)  # JSON keys are strings
                _check_body_value(one, entry["value"], f"{path}[{map_key[:100]!r}]")
        elif field.is_repeated:
            _expect(item, list, "an array", path)
            for index, one in enumerate(item):
                _check_body_value(one, field, f"{path}[{index}]")
        else:
            _check_body_value(item, field, path)


def _check_body_value(one: Any, field: FieldDescriptor, path: str) -> None:
    """One value against its field's JSON type (protobuf's parser words a wrong one in Python's
    terms: "expected string or bytes-like object, got 'int'", "int() argument must be ...")."""
    if one is None:
        return
    if field.enum_type is not None:
        if isinstance(one, str) and one not in field.enum_type.values_by_name:
            raise TranscodeError(f"invalid {path}: {one[:100]!r} is not a {field.enum_type.name}", field=path)
        if isinstance(one, bool) or (isinstance(one, float) and not one.is_integer()):
            raise TranscodeError(
                f"invalid {path}: {json.dumps(one)} is not a {field.enum_type.name}", field=path
            )
        _expect(one, (str, int, float), f"a {field.enum_type.name} name", path)
    elif field.type in _INTEGER_TYPES:
        if isinstance(one, str) and not _PLAIN_INTEGER.fullmatch(one):
            raise TranscodeError(f"invalid {path}: {one[:100]!r} is not an integer", field=path)
        if isinstance(one, bool) or (isinstance(one, float) and not one.is_integer()):
            raise TranscodeError(f"invalid {path}: {json.dumps(one)} is not an integer", field=path)
        _expect(one, (str, int, float), "an integer (a JSON number or a string of digits)", path)
        low, high = _INTEGER_RANGES[field.type]
        if not low <= int(one) <= high:
            raise TranscodeError(f"invalid {path}: {json.dumps(one)[:100]} is out of range", field=path)
    elif field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        if isinstance(one, bool):
            raise TranscodeError(f"invalid {path}: must be a number, not {_json_kind(one)}", field=path)
        _expect(one, (str, int, float), "a number", path)
    elif field.type == FieldDescriptor.TYPE_BOOL:
        _expect(one, bool, "true or false", path)
    elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        _expect(one, str, "a string", path)
    elif field.message_type is not None:
        if field.message_type.full_name in _STRING_MESSAGES:
            wanted = _STRING_MESSAGES[field.message_type.full_name]
            _expect(one, str, wanted, path)
            try:  # protobuf's own reading, whose errors quote Python's strptime formats
                json_format.ParseDict(one, _WELL_KNOWN[field.message_type.full_name]())
            except json_format.ParseError:
                raise TranscodeError(f"invalid {path}: must be {wanted}", field=path) from None
        elif not field.message_type.full_name.startswith("google.protobuf."):
            _expect(one, dict, "an object", path)
            _check_body_values(one, field.message_type, prefix=f"{path}.")


def _check_map_key(key: str, field: FieldDescriptor, path: str) -> None:
    if field.type in _INTEGER_TYPES and not _PLAIN_INTEGER.fullmatch(key):
        raise TranscodeError(f"invalid {path}: {key[:100]!r} is not an integer", field=path)
    if field.type == FieldDescriptor.TYPE_BOOL and key not in ("true", "false"):
        raise TranscodeError(f"invalid {path}: the key {key[:100]!r} is not true or false", field=path)


def _expect(one: Any, kind: type | tuple[type, ...], wanted: str, path: str) -> None:
    if not isinstance(one, kind):
        raise TranscodeError(f"invalid {path}: must be {wanted}, not {_json_kind(one)}", field=path)


def _json_kind(one: Any) -> str:
    """A JSON value's type in JSON's words."""
    if isinstance(one, bool):
        return "true or false"
    if isinstance(one, int | float):
        return "a number"
    if isinstance(one, str):
        return "a string"
    if isinstance(one, list):
        return "an array"
    if isinstance(one, dict):
        return "an object"
    return "null"


def _set_path(request: Message, field_path: tuple[str, ...], raw: str, *, source: str) -> None:
    nested: dict[str, Any] = {}
    cursor = nested
    descriptor: Any = request.DESCRIPTOR
    for name in field_path[:-1]:
        field = descriptor.fields_by_name[name]
        cursor[field.json_name] = {}
        cursor = cursor[field.json_name]
        descriptor = field.message_type
    leaf = descriptor.fields_by_name[field_path[-1]]
    dotted = ".".join(field_path)
    try:
        cursor[leaf.json_name] = _scalar(leaf, raw)
        # ParseDict merges into the message: path variables overwrite what the body set.
        _clear(request, field_path)
        json_format.ParseDict(nested, request, ignore_unknown_fields=False)
    except (json_format.ParseError, _NotAnInteger) as exc:
        raise TranscodeError(f"{source} parameter {dotted}: invalid value {raw!r}", field=dotted) from exc


def _clear(request: Message, field_path: tuple[str, ...]) -> None:
    message = request
    for name in field_path[:-1]:
        message = getattr(message, name)
    message.ClearField(field_path[-1])


_INTEGER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_INTEGER_RANGES = {
    **dict.fromkeys(
        (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32),
        (-(2**31), 2**31 - 1),
    ),
    **dict.fromkeys(
        (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64),
        (-(2**63), 2**63 - 1),
    ),
    **dict.fromkeys((FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64), (0, 2**64 - 1)),
}
# Well-known types whose JSON form is a string, and how to write one.
_STRING_MESSAGES = {
    "google.protobuf.Timestamp": "an RFC 3339 time with its offset, like 2026-01-31T12:00:00Z",
    "google.protobuf.Duration": "a duration in seconds, like 1.5s",
    "google.protobuf.FieldMask": "a field mask, like name,rate",
}
_WELL_KNOWN: dict[str, type[Message]] = {
    "google.protobuf.Timestamp": timestamp_pb2.Timestamp,
    "google.protobuf.Duration": duration_pb2.Duration,
    "google.protobuf.FieldMask": field_mask_pb2.FieldMask,
}
# An integer in a query or path value, or a JSON string in a body: an optional minus and ASCII
# digits, as JSON spells one.
_PLAIN_INTEGER = re.compile(r"-?[0-9]+")


class _NotAnInteger(ValueError):
    pass


def _scalar(field: FieldDescriptor, raw: str) -> Any:
    # Query and path values are strings; JSON's mapping wants booleans as booleans.
    if field.message_type is not None and field.message_type.full_name == "google.protobuf.FieldMask":
        return _mask_json(raw)
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = raw.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
    is_number = field.type in _INTEGER_TYPES or (
        field.enum_type is not None and raw not in field.enum_type.values_by_name
    )
    if is_number and not _PLAIN_INTEGER.fullmatch(raw):
        # protobuf's parser reads integers and enum numbers with int(), and then as a float:
        # " 1", "+1", "1_0", "\u0663" (an Arabic-Indic three), "1e2" and "5.0" all passed as numbers.
        raise _NotAnInteger(raw)
    return raw


def _apply_query(
    request: Message, query: Iterable[tuple[str, str]], bound: set[str] | frozenset[str]
) -> None:
    # Grouped by the field, not the spelling: ``displayName`` and ``display_name`` are one field.
    grouped: dict[tuple[str, ...], list[str]] = {}
    for key, value in query:
        grouped.setdefault(tuple(_snake(part) for part in key.split(".")), []).append(value)
    for path, values in grouped.items():
        if path[0] in bound:
            continue
        field = _resolve(request.DESCRIPTOR, path)
        if field is None:
            continue  # unknown query parameters are ignored, as grpc-gateway does
        if field.is_repeated:
            _set_repeated(request, path, field, values)
        elif len(values) > 1:
            # As grpc-gateway ("too many values for field"): keeping one of them silently lets a
            # proxy or cache that reads another disagree with the server on what was asked.
            dotted = ".".join(path)
            raise TranscodeError(
                f"query parameter {dotted}: given more than once, but takes one value", field=dotted
            )
        else:
            _set_path(request, path, values[0], source="query")


def _set_repeated(request: Message, path: tuple[str, ...], field: FieldDescriptor, values: list[str]) -> None:
    nested: dict[str, Any] = {}
    cursor = nested
    descriptor: Any = request.DESCRIPTOR
    for name in path[:-1]:
        parent = descriptor.fields_by_name[name]
        cursor = cursor.setdefault(parent.json_name, {})
        descriptor = parent.message_type
    try:
        cursor[field.json_name] = [_scalar(field, v) for v in values]
        json_format.ParseDict(nested, request)
    except (json_format.ParseError, _NotAnInteger) as exc:
        dotted = ".".join(path)
        bad = next((v for v in values if not _reads_alone(field, v)), values[0])
        # A comma list is the common mistake: repeated fields take the parameter once per value.
        hint = f" (one value per parameter: {path[-1]}=1&{path[-1]}=2)" if "," in bad else ""
        raise TranscodeError(
            f"query parameter {dotted}: invalid value {bad[:100]!r}{hint}", field=dotted
        ) from exc


def _reads_alone(field: FieldDescriptor, raw: str) -> bool:
    assert field.containing_type is not None  # a field of a message
    try:
        json_format.ParseDict(
            {field.json_name: [_scalar(field, raw)]}, GetMessageClass(field.containing_type)()
        )
    except (json_format.ParseError, _NotAnInteger):
        return False
    return True


def _resolve(descriptor: Any, path: tuple[str, ...]) -> FieldDescriptor | None:
    current: Any = descriptor
    field: FieldDescriptor | None = None
    for name in path:
        if current is None:
            return None
        field = current.fields_by_name.get(name)
        if field is None:
            return None
        current = field.message_type
    if field is None:
        return None
    if field.message_type is not None and not field.message_type.full_name.startswith("google.protobuf."):
        return None  # only scalars, enums and well-known types bind from the query string
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return None
    return field


def _mask_json(raw: str) -> str:
    """A FieldMask from the query string in its JSON spelling. grpc-gateway takes the listed paths
    as proto field names (``update_mask=sort_order``); JSON's FieldMask is lowerCamelCase
    (``sortOrder``). Both spellings are accepted: each segment goes to snake_case, then camelCase."""
    if not raw:
        return raw
    return ",".join(".".join(_camel(_snake(part)) for part in path.split(".")) for path in raw.split(","))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _snake(name: str) -> str:
    out = []
    for char in name:
        if char.isupper():
            out.append("_" + char.lower())
        else:
            out.append(char)
    return "".join(out)


def _clean_parse_error(exc: json_format.ParseError) -> str:
    # "Failed to parse fooBar field: <why> at Request.fooBar." -> "invalid foo_bar: <why>": the
    # field as the other errors name it, without the message type's name.
    text = _AT_MESSAGE.sub("", str(exc))
    field = _field_from_parse_error(exc)
    if field:
        text = text.replace(f"Failed to parse {_camel_in(exc)} field: ", f"invalid {field}: ", 1)
    return text.replace("Failed to parse ", "invalid ").replace(" field: ", ": ")


def _camel_in(exc: json_format.ParseError) -> str:
    # protobuf's messages look like "Failed to parse rate field: ..." or name the path "a.b".
    text = str(exc)
    marker = "Failed to parse "
    return text[len(marker) :].split(" field", 1)[0] if text.startswith(marker) else ""


def _field_from_parse_error(exc: json_format.ParseError) -> str:
    return ".".join(_snake(part) for part in _camel_in(exc).split(".")) if _camel_in(exc) else ""


_AT_MESSAGE = re.compile(r"\s+at [A-Za-z_][\w.\[\]]*\.$")


def encode_response(route: Route, response: Message) -> Any:
    if route.response_body:
        value = getattr(response, route.response_body)
        if isinstance(value, Message):
            return _render(value)
        wrapper = json_format.MessageToDict(response, always_print_fields_with_no_presence=True)
        return wrapper.get(response.DESCRIPTOR.fields_by_name[route.response_body].json_name)
    return _render(response)


def _render(message: Message) -> dict[str, Any]:
    rendered: dict[str, Any] = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    strip = _input_only(message.DESCRIPTOR)
    if strip:
        _strip(rendered, strip)
    return rendered


# json name -> None (drop the key) or the tree below a message field; INPUT_ONLY fields (passwords,
# provider keys) are never rendered, not even empty.
_Tree = dict[str, "_Tree | None"]


@functools.cache
def _input_only(descriptor: Descriptor) -> _Tree:
    return _build_tree(descriptor, frozenset())


def _build_tree(descriptor: Descriptor, seen: frozenset[str]) -> _Tree:
    tree: _Tree = {}
    for field in descriptor.fields:
        behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        if field_behavior_pb2.INPUT_ONLY in behaviors:
            tree[field.json_name] = None
        elif field.message_type is not None and not field.message_type.full_name.startswith(
            "google.protobuf."
        ):
            name = field.message_type.full_name
            if name not in seen:
                below = _build_tree(field.message_type, seen | {name})
                if below:
                    tree[field.json_name] = below
    return tree


def _strip(value: Any, tree: _Tree) -> None:
    if isinstance(value, list):
        for item in value:
            _strip(item, tree)
        return
    if not isinstance(value, dict):
        return
    for key, below in tree.items():
        if key not in value:
            continue
        if below is None:
            del value[key]
        else:
            _strip(value[key], below)
