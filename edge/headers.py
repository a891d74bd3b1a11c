"""What the edge forwards to the gRPC server as metadata, and what it adds to every response."""

from __future__ import annotations

import ipaddress
import re
import uuid

from sanic import Request

from edge.context import EdgeContext
from edge.routes import Route

INTERNAL_TOKEN_KEY = "x-smm-internal-token"  # noqa: S105 - a header name, not a secret
CLIENT_IP_KEY = "x-smm-client-ip"
USER_AGENT_KEY = "x-smm-user-agent"
REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

API_SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
)


def request_id(request: Request) -> str:
    """The request's id (the client's ``X-Request-Id`` when it is safe, else a new one), made once
    per request: the metadata of every RPC, the span and the response header all carry the same."""
    rid: str | None = getattr(request.ctx, "request_id", None)
    if rid is None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        rid = request.ctx.request_id = given if _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex
    return rid


def client_ip(request: Request, ctx: EdgeContext) -> str:
    """The peer address or, when the peer is a trusted proxy, the right-most X-Forwarded-For hop
    that is not one.

    Every X-Forwarded-For line counts: a proxy may add a line of its own after the client's rather
    than extend it, and RFC 9110 (5.3) makes the lines one comma-separated list. The client writes
    the left of that list and each trusted proxy appends the address it saw, so the walk goes from
    the right and stops at the first hop no trusted proxy owns. A hop that is not an IP address
    (``unknown``, an address with a port, junk) ends the walk too, at the last address a trusted
    proxy vouched for (the peer itself when the right-most hop is junk). Junk there comes from a
    trusted proxy that could not tell who its client was, so the nearest address we can still
    vouch for is that proxy's: never text from the request, and not an address a client can pick.
    """
    raw_peer = str(request.conn_info.client_ip) if request.conn_info else ""
    peer_address = _address(raw_peer)
    peer = str(peer_address) if peer_address is not None else raw_peer
    if not ctx.trusted_proxies or not _trusted(peer, ctx):
        return peer
    lines: list[str] = request.headers.getall("x-forwarded-for", [])
    hops = [hop.strip() for line in lines for hop in line.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        client = str(address)
        if not _in_proxies(address, ctx):
            break
    return client


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address, IPv4-mapped IPv6 (``::ffff:a.b.c.d``, what a dual-stack listener sees of an
    IPv4 peer) as the IPv4 address it is: one spelling for proxy lists, allow-lists and buckets."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in_proxies(address: ipaddress.IPv4Address | ipaddress.IPv6Address, ctx: EdgeContext) -> bool:
    return any(address in network for network in ctx.trusted_proxies)


def _trusted(address: str, ctx: EdgeContext) -> bool:
    ip = _address(address)
    return ip is not None and _in_proxies(ip, ctx)


def _metadata_safe(value: str) -> str:
    # gRPC metadata values must be printable ASCII; a client's odd header must not break the call.
    return "".join(ch for ch in value if " " <= ch <= "~")


def forward_metadata(request: Request, route: Route, ctx: EdgeContext, rid: str) -> list[tuple[str, str]]:
    metadata = [
        (INTERNAL_TOKEN_KEY, ctx.settings.internal_token.get_secret_value()),
        (REQUEST_ID_HEADER, rid),
        (CLIENT_IP_KEY, client_ip(request, ctx)),
    ]
    user_agent = request.headers.get("user-agent")
    if user_agent:
        metadata.append((USER_AGENT_KEY, _metadata_safe(user_agent[:512])))
    authorization = request.headers.get("authorization")
    if authorization:
        metadata.append(("authorization", _metadata_safe(authorization)))
    for header in route.forward_headers:
        value = request.headers.get(header)
        if value is not None:
            metadata.append((header, _metadata_safe(value)))
    return metadata
