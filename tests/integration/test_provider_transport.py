"""The provider HTTP transport (httpx over aiohttp) against raw loopback servers that misbehave
on purpose. What matters most: only a failure before any connection existed may read as "not
sent"; a connection lost after the request went out must read as "may have been sent"."""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from ops.embedded import free_port
from server.providers.adapters import AddOrder, ProviderConnection, Unknown
from server.providers.adapters.standard import StandardAdapter
from server.providers.transport import AiohttpTransport, provider_http_client, unreachable

pytestmark = pytest.mark.integration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """A TCP server whose handler decides, byte by byte, what the client gets."""

    handler: Handler
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api/v2"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One whole request (head and Content-Length body), or None when the client hung up."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    started: list[RawServer] = []

    async def start(handler: Handler) -> RawServer:
        raw = RawServer(handler)
        raw.server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        started.append(raw)
        return raw

    yield start
    for raw in started:
        assert raw.server is not None
        raw.server.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with provider_http_client() as http:
        yield http


def reply(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


FORM = {"key": "secret-key", "action": "add", "service": "1", "link": "https://x.com/a b", "quantity": "100"}


async def test_a_form_post_goes_out_as_httpx_built_it_and_the_reply_comes_back(
    raw_server: Callable[[Handler], Awaitable[RawServer]], client: httpx.AsyncClient
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await raw.read_request(reader) is not None:
            writer.write(
                reply("201 Made", gzip.compress(b'{"order": 23501}'), "Content-Encoding: gzip", "X-Trace: a", "X-Trace: b")
            )  # fmt: skip
            await writer.drain()

    raw = await raw_server(answer)
    first = await client.post(raw.url + "?q=a%2Fb", data=FORM, headers={"User-Agent": "smm-test"})
    second = await client.post(raw.url, data=FORM)

    assert first.status_code == 201
    assert first.reason_phrase == "Made"
    assert first.http_version == "HTTP/1.1"
    assert first.json() == {"order": 23501}  # decoded by httpx from the gzip body
    assert first.headers.get_list("x-trace") == ["a", "b"]
    assert second.json() == {"order": 23501}
    assert raw.connections == 1  # the second request reused the kept-alive connection
    head, _, body = raw.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/v2?q=a%2Fb HTTP/1.1"  # the query string exactly as given
    header_names = [line.split(b":")[0].lower() for line in lines[1:]]
    assert header_names.count(b"content-length") == 1
    assert header_names.count(b"user-agent") == 1
    assert b"User-Agent: smm-test" in lines
    assert b"Content-Type: application/x-www-form-urlencoded" in lines
    assert body == b"key=secret-key&action=add&service=1&link=https%3A%2F%2Fx.com%2Fa+b&quantity=100"


async def test_a_chunked_reply_arrives_whole(
    raw_server: Callable[[Handler], Awaitable[RawServer]], client: httpx.AsyncClient
) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b'[{"service": 1, ', b'"name": "Likes"}]'):
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    raw = await raw_server(chunked)
    answer = await client.post(raw.url, data=FORM)
    assert answer.json() == [{"service": 1, "name": "Likes"}]


async def test_connection_refused_is_a_connect_error(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.post(f"http://127.0.0.1:{free_port()}/api/v2", data=FORM)


async def test_an_unknown_host_is_a_connect_error(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.post("http://no-such-host.invalid/api/v2", data=FORM)


async def test_a_scheme_other_than_http_is_refused_before_anything_goes_out() -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.post("ftp://127.0.0.1/api/v2", data=FORM)


async def hang_up(raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await raw.read_request(reader)  # the provider got the order, then the line dropped


async def reset(raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await raw.read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
    writer.transport.abort()


async def cut_short(raw: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await raw.read_request(reader)
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"order"')
    await writer.drain()


@pytest.mark.parametrize(
    ("misbehave", "expected"),
    [
        (hang_up, (httpx.RemoteProtocolError,)),
        (reset, (httpx.ReadError, httpx.RemoteProtocolError)),
        (cut_short, (httpx.ReadError,)),
    ],
)
async def test_a_failure_after_the_request_went_out_is_never_a_connect_error(
    raw_server: Callable[[Handler], Awaitable[RawServer]],
    client: httpx.AsyncClient,
    misbehave: Callable[[RawServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    expected: tuple[type[httpx.HTTPError], ...],
) -> None:
    raw = await raw_server(lambda reader, writer: misbehave(raw, reader, writer))
    with pytest.raises(httpx.HTTPError) as raised:
        await client.post(raw.url, data=FORM)
    assert isinstance(raised.value, expected), raised.value
    assert not isinstance(raised.value, httpx.ConnectError | httpx.ConnectTimeout)
    assert len(raw.requests) == 1


async def test_a_silent_provider_is_a_read_timeout(
    raw_server: Callable[[Handler], Awaitable[RawServer]], client: httpx.AsyncClient
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        await asyncio.sleep(5)

    raw = await raw_server(silent)
    with pytest.raises(httpx.ReadTimeout):
        await client.post(raw.url, data=FORM, timeout=httpx.Timeout(5.0, read=0.2))


async def test_through_the_adapter_a_dropped_add_is_unknown_and_counted_as_sent(
    raw_server: Callable[[Handler], Awaitable[RawServer]], client: httpx.AsyncClient
) -> None:
    """The double-order guard: dispatch sends an ``add`` whose answer was lost to review, never again."""

    raw = await raw_server(lambda reader, writer: hang_up(raw, reader, writer))
    adapter = StandardAdapter(ProviderConnection(raw.url, "secret-key", timeout_s=2.0), http=client)
    result = await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=100))
    assert isinstance(result, Unknown)
    assert result.sent is True
    assert "secret-key" not in result.reason
    assert len(raw.requests) == 1  # sent once, not retried


async def test_closing_the_client_closes_its_connections(
    raw_server: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    closed = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await raw.read_request(reader) is not None:
            writer.write(reply("200 OK", b'{"balance": "1.00", "currency": "USD"}'))
            await writer.drain()
        closed.set()

    raw = await raw_server(answer)
    http = provider_http_client()
    assert (await http.post(raw.url, data=FORM)).status_code == 200
    await http.aclose()
    async with asyncio.timeout(2):
        await closed.wait()  # the server saw the kept-alive connection end


async def test_a_connection_idle_near_a_short_server_keep_alive_is_not_reused_for_an_add(
    raw_server: Callable[[Handler], Awaitable[RawServer]], client: httpx.AsyncClient
) -> None:
    """A provider behind a server that drops idle connections after 2 s (gunicorn's default; Apache
    and LiteSpeed use 5 s) closes one just as the next ``add`` goes out on it: the order was never
    read, but smm cannot know that and sends it to review. Here the server hangs up on a request
    that reaches a connection idle for 1.6 s or more (its close and the request crossed on the
    wire). smm does not reuse a connection idle longer than ``KEEPALIVE_S`` (below any of those),
    so the second ``add`` goes out on a new connection and is answered."""

    async def short_keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered_at: float | None = None
        while await raw.read_request(reader) is not None:
            now = asyncio.get_running_loop().time()
            if answered_at is not None and now - answered_at >= 1.6:
                return  # closed without an answer
            writer.write(reply("200 OK", b'{"order": %d}' % len(raw.requests)))
            await writer.drain()
            answered_at = asyncio.get_running_loop().time()

    raw = await raw_server(short_keep_alive)
    adapter = StandardAdapter(ProviderConnection(raw.url, "secret-key", timeout_s=2.0), http=client)
    first = await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=100))
    await asyncio.sleep(0.1)
    soon = await adapter.add(AddOrder(service="1", link="https://x.com/b", quantity=100))
    assert raw.connections == 1  # a busy provider keeps its connection
    await asyncio.sleep(1.8)
    later = await adapter.add(AddOrder(service="1", link="https://x.com/c", quantity=100))
    assert [type(r).__name__ for r in (first, soon, later)] == ["Accepted"] * 3, later
    assert raw.connections == 2
    assert len(raw.requests) == 3  # each order sent once


class HostsFile(AbstractResolver):
    """Names looked up in a fixed table, as /etc/hosts would answer them: a name can point anywhere."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"{host}: no such name")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        return None


async def test_the_cloud_metadata_service_is_never_called_by_address_or_by_name(
    raw_server: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    """Staff see what a provider answered (the provider log, a connection test): a provider URL
    at the metadata service (169.254.169.254), or a name resolving there, would show them the
    host's cloud credentials. It is refused before any connection, so it reads as "not sent"."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await raw.read_request(reader) is not None:
            writer.write(reply("200 OK", b'{"order": 1}'))
            await writer.drain()

    raw = await raw_server(answer)
    assert raw.server is not None
    port = raw.server.sockets[0].getsockname()[1]
    hosts = HostsFile(
        {
            "metadata.test": ["169.254.169.254"],
            "rebound.test": ["fe80::1", "169.254.170.2"],
            "both.test": ["169.254.169.254", "127.0.0.1"],
            "local.test": ["127.0.0.1"],
        }
    )
    async with httpx.AsyncClient(transport=AiohttpTransport(resolver=hosts)) as http:
        for url in (
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/latest/meta-data/",
            f"http://metadata.test:{port}/api/v2",
            f"http://rebound.test:{port}/api/v2",
        ):
            with pytest.raises(httpx.ConnectError, match="never calls"):
                await http.post(url, data=FORM)
        assert raw.connections == 0
        assert hosts.asked == ["metadata.test", "rebound.test"]  # addresses are never looked up
        # A name with a callable address among its answers is called there; loopback and private
        # addresses stay callable (a provider on a private network, a local test double).
        assert (await http.post(f"http://both.test:{port}/api/v2", data=FORM)).json() == {"order": 1}
        assert (await http.post(f"http://local.test:{port}/api/v2", data=FORM)).json() == {"order": 1}
    assert raw.connections >= 1
    assert not unreachable("10.0.0.5")
    assert not unreachable("192.168.1.10")
    assert not unreachable("panel.example")
