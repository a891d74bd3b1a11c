"""The HTTP transport under the provider client: httpx's API on aiohttp's connection pool.

Why: httpcore's pool cost 1.0-1.8 ms of CPU per provider request here (it re-checks every pooled
socket on every request), aiohttp 0.15-0.23 ms (bench/README.md). Why not the ``httpx-aiohttp``
package: it maps a connection dropped *after the request went out* to ``httpx.ConnectTimeout``,
which callers rightly read as "certainly not sent", and an ``add`` could then be sent twice.

The one rule of the exception map below: only a failure that happened before a connection existed
becomes ``ConnectError``/``ConnectTimeout`` (not sent); every other failure is a read or protocol
error, which the adapter treats as "may have been sent". Redirects and cookies stay with httpx
(aiohttp neither follows nor stores; httpx's client follows none by default).

A reply body is read up to ``max_body_bytes`` (``MAX_BODY_BYTES``, 32 MiB) and no further, both as
sent and once decompressed: a provider answering with an endless or huge body, or a gzip/deflate
bomb, ends the call with ``ResponseTooLarge`` (a read error: the request went out) instead of
filling the process's memory until the call's deadline. So decompression happens here, bounded,
and the ``Content-Encoding`` header is dropped from the response httpx sees (it would decode again,
unbounded).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
import zlib

import aiohttp
import certifi
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

DEFAULT_MAX_CONNECTIONS = 100  # httpx's default
# An idle connection is not reused after this long. Below the idle timeouts of the servers
# providers run behind (gunicorn 2 s, Apache and LiteSpeed 5 s, nginx 75 s): a server closing a
# connection just as an ``add`` goes out on it leaves the order's outcome unknown (to review).
# httpx's and aiohttp's default, 5 s, met Apache's and LiteSpeed's exactly. The cost: a provider
# idle this long gets a new connection (and TLS handshake) for its next call.
KEEPALIVE_S = 1.5
MAX_BODY_BYTES = 32 << 20  # a 10,000-service list with long descriptions is a few MB
# aiohttp computes these from the body it is given; httpx's copies would only disagree.
BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


# Never a provider: the cloud metadata services (AWS, GCP, Azure, Oracle at 169.254.169.254, AWS's
# IPv6 one, Alibaba's) hand out the host's credentials to whoever asks, and the provider log shows
# staff what came back; the rest of link-local is no one's API either. Private and loopback
# addresses stay callable: providers on a private network, a local test double.
UNREACHABLE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")
)


class UnreachableAddress(OSError):
    """The provider's host is (or resolves only to) an address smm never calls."""


def unreachable(address: str) -> bool:
    """Whether ``address`` (an IP address, IPv6 with or without brackets) is one smm never calls."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in UNREACHABLE_NETWORKS)


class CallableOnlyResolver(AbstractResolver):
    """The addresses a host name resolves to, without those smm never calls (``unreachable``).

    Checked when connecting, on the addresses the connection will use: a name that resolves to the
    metadata service (now, or only after staff saved it) is refused all the same."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        callable_ = [result for result in found if not unreachable(result["host"])]
        if found and not callable_:
            raise UnreachableAddress(
                errno.EACCES, f"{host} resolves only to addresses smm never calls (link-local)"
            )
        return callable_

    async def close(self) -> None:
        await self._inner.close()


class ResponseTooLarge(httpx.ReadError):
    """The reply's body, as sent or once decompressed, passed the cap; it was not read further."""


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_body_bytes: int = MAX_BODY_BYTES,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._max_body_bytes = max_body_bytes
        self._resolver = resolver  # the name lookup under ``CallableOnlyResolver`` (the system's by default)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use: an aiohttp session belongs to the running event loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=KEEPALIVE_S,
                ssl=ssl.create_default_context(cafile=certifi.where()),  # httpx's trust store
                resolver=CallableOnlyResolver(self._resolver),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None),
                # httpx already routes proxied URLs (HTTP_PROXY, ...) to its own transports and reads
                # .netrc; aiohttp doing it again would also cost a thread hop per request.
                trust_env=False,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {request.url.scheme!r}", request=request)
        if unreachable(request.url.host):  # an address in the URL is never looked up: checked here
            raise httpx.ConnectError(f"{request.url.host} is an address smm never calls", request=request)
        body = await request.aread()
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower() not in BODY_HEADERS
        ]
        try:
            async with self._open().request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=_timeout(request),
            ) as reply:
                content = await _read_capped(reply, self._max_body_bytes, request)
        except Exception as exc:
            mapped = _mapped(exc, request)
            if mapped is exc:
                raise
            raise mapped from exc
        content, headers_in = _decoded(content, list(reply.raw_headers), self._max_body_bytes, request)
        return httpx.Response(
            reply.status,
            headers=headers_in,
            content=content,
            request=request,
            extensions={
                "http_version": f"HTTP/{reply.version.major}.{reply.version.minor}".encode()
                if reply.version
                else b"HTTP/1.1",
                "reason_phrase": (reply.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_capped(reply: aiohttp.ClientResponse, limit: int, request: httpx.Request) -> bytes:
    """The body as it arrives, given up as soon as it passes ``limit`` bytes (or says it will)."""
    if reply.content_length is not None and reply.content_length > limit:
        raise ResponseTooLarge(f"reply body over {limit} bytes (Content-Length)", request=request)
    parts: list[bytes] = []
    size = 0
    async for chunk in reply.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(f"reply body over {limit} bytes", request=request)
        parts.append(chunk)
    return b"".join(parts)


def _decoded(
    body: bytes, headers: list[tuple[bytes, bytes]], limit: int, request: httpx.Request
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body with its content codings undone (last applied first), never more than ``limit``
    bytes, and the headers without ``Content-Encoding``. As httpx: gzip, x-gzip and deflate (zlib or
    raw) are decoded, any other coding is read as identity."""
    codings = [
        coding.strip().lower()
        for name, value in headers
        if name.lower() == b"content-encoding"
        for coding in value.decode("latin-1").split(",")
    ]
    if not codings:
        return body, headers
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, zlib.MAX_WBITS | 16, limit, request)
        elif coding == "deflate":
            try:
                body = _inflate(body, zlib.MAX_WBITS, limit, request)
            except httpx.DecodingError:
                body = _inflate(body, -zlib.MAX_WBITS, limit, request)  # raw deflate, as httpx
    return body, [(name, value) for name, value in headers if name.lower() != b"content-encoding"]


def _inflate(data: bytes, wbits: int, limit: int, request: httpx.Request) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) <= limit and not inflater.unconsumed_tail:
            out += inflater.flush()
    except zlib.error as exc:
        raise httpx.DecodingError(str(exc), request=request) from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise ResponseTooLarge(f"reply body over {limit} bytes once decompressed", request=request)
    return out


def _timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts in aiohttp's terms (aiohttp has no write timeout)."""
    limits = request.extensions.get("timeout", {})
    pool, connect, read = limits.get("pool"), limits.get("connect"), limits.get("read")
    # aiohttp's ``connect`` covers waiting for a pooled connection and connecting.
    waiting = None if pool is None and connect is None else (pool or 0.0) + (connect or 0.0)
    return aiohttp.ClientTimeout(total=None, connect=waiting, sock_connect=connect, sock_read=read)


def _mapped(exc: Exception, request: httpx.Request) -> Exception:
    """aiohttp's failure as the httpx exception that says whether the request may have gone out."""
    message = str(exc) or type(exc).__name__
    # Never connected: nothing was sent.
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message, request=request)
    # Connected: the request may have been sent, whatever happened next.
    if isinstance(exc, TimeoutError):  # aiohttp's read timeouts (the caller's own arrive as cancellation)
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return httpx.ReadError(message, request=request)
    return exc  # a bug of ours, not a transport failure: let it surface as it is


def provider_http_client() -> httpx.AsyncClient:
    """The one client (one connection pool) every provider adapter of a process shares."""
    return httpx.AsyncClient(transport=AiohttpTransport())
