"""What a broken or hostile provider can do to the server through its replies: loopback servers
that answer with bodies too big to hold, compression bombs, JSON built to blow the stack or the
decimal context. Each call must end as an ``Unknown`` outcome (never an exception, never held in
memory whole), with the API key nowhere in what is recorded."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from server.common.db import open_pool
from server.providers.adapters import Accepted, AddOrder, OrderStatus, ProviderConnection, Unknown
from server.providers.adapters.parse import parse_services
from server.providers.adapters.standard import StandardAdapter
from server.providers.health import HealthRecorder, about_orders
from server.providers.repo import ProvidersRepo
from server.providers.transport import AiohttpTransport
from tests.fix_db import make_settings
from tests.integration.test_provider_client import Recorder

pytestmark = pytest.mark.integration

KEY = "limits-secret-key"
CAP = 1 << 20  # the transport's body cap in these tests (production: MAX_BODY_BYTES)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Provider:
    """A loopback HTTP/1.1 server; ``handler`` writes whatever reply it likes after the request."""

    handler: Handler
    server: asyncio.Server | None = None
    written: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/api/v2"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(v) for n, _, v in (line.partition(b":") for line in head.split(b"\r\n")) if n.lower() == b"content-length"),
                0,
            )  # fmt: skip
            await reader.readexactly(length)
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client hung up on us (what a capped read does), or the test ended
        finally:
            writer.close()


@pytest.fixture
async def provider() -> AsyncIterator[Callable[[Handler], Awaitable[Provider]]]:
    started: list[Provider] = []

    async def start(handler: Handler) -> Provider:
        p = Provider(handler)
        p.server = await asyncio.start_server(p._serve, "127.0.0.1", 0)
        started.append(p)
        return p

    yield start
    for p in started:
        assert p.server is not None
        p.server.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport(max_body_bytes=CAP)) as client:
        yield client


def adapter(
    url: str, http: httpx.AsyncClient, recorder: Recorder, *, timeout_s: float = 5.0
) -> StandardAdapter:
    return StandardAdapter(
        ProviderConnection(url, KEY, timeout_s=timeout_s), http=http, on_exchange=recorder, read_attempts=1
    )


def head(*lines: str) -> bytes:
    return ("\r\n".join(["HTTP/1.1 200 OK", "Connection: close", *lines]) + "\r\n\r\n").encode()


def no_key_in(recorder: Recorder, reply: Unknown, caplog: pytest.LogCaptureFixture) -> None:
    assert KEY not in reply.reason
    assert KEY not in repr(recorder.exchanges)
    assert KEY not in caplog.text


# --- body size -------------------------------------------------------------------------------------


async def test_an_endless_body_is_cut_at_the_cap_not_read_until_the_deadline(
    provider: Callable[[Handler], Awaitable[Provider]],
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A chunked body that never ends: the read stops once the cap is passed, long before the
    call's deadline, and the server is left with bytes the client never took."""

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head("Transfer-Encoding: chunked"))
        chunk = b'{"pad": "' + b"x" * 65536
        sent = 0
        while sent < 64 * CAP:  # bounded only so a broken client cannot fill the test's memory
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            sent += len(chunk)
        await asyncio.sleep(30)  # then hang: only the cap (or the deadline) ends the read

    caplog.set_level(logging.DEBUG)
    p = await provider(endless)
    recorder = Recorder()
    async with asyncio.timeout(20):  # a guard: the call must end, and must not need the 15 s deadline
        result = await adapter(p.url, http, recorder, timeout_s=15.0).balance()
    assert isinstance(result, Unknown), result
    assert result.sent is True
    assert "over 1048576 bytes" in result.reason, result.reason
    assert recorder.exchanges[-1].outcome == "unknown"
    assert len(recorder.exchanges[-1].body) <= 2000
    no_key_in(recorder, result, caplog)


async def test_a_body_declared_larger_than_the_cap_is_refused_without_reading_it(
    provider: Callable[[Handler], Awaitable[Provider]], http: httpx.AsyncClient
) -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(f"Content-Length: {300 * CAP}") + b'{"order": 1')
        await writer.drain()
        await asyncio.sleep(30)

    p = await provider(huge)
    async with asyncio.timeout(20):
        result = await adapter(p.url, http, Recorder(), timeout_s=15.0).add(
            AddOrder(service="1", quantity=10)
        )
    assert isinstance(result, Unknown), result
    assert result.sent is True  # the add went out: it may exist upstream
    assert "over 1048576 bytes" in result.reason, result.reason


async def test_a_compression_bomb_is_cut_at_the_cap_when_inflated(
    provider: Callable[[Handler], Awaitable[Provider]], http: httpx.AsyncClient
) -> None:
    """About 64 KB on the wire, 64 MB inflated: the decompressed size is capped too."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)  # gzip
    parts = [squeeze.compress(b'{"balance": "1.00", "currency": "USD", "pad": "')]
    zeros = b"0" * (1 << 20)
    parts += [squeeze.compress(zeros) for _ in range(64)]
    parts += [squeeze.compress(b'"}'), squeeze.flush()]
    bomb = b"".join(parts)
    assert len(bomb) < CAP

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(f"Content-Length: {len(bomb)}", "Content-Encoding: gzip") + bomb)
        await writer.drain()

    p = await provider(answer)
    async with asyncio.timeout(20):
        result = await adapter(p.url, http, Recorder()).balance()
    assert isinstance(result, Unknown), result
    assert "over 1048576 bytes" in result.reason, result.reason


async def test_a_compressed_body_under_the_cap_still_reads(
    provider: Callable[[Handler], Awaitable[Provider]], http: httpx.AsyncClient
) -> None:
    """The cap's own decoding keeps what httpx decoded: gzip, zlib and raw deflate, chained."""
    body = b'{"balance": "12.34", "currency": "EUR"}'
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = raw.compress(body) + raw.flush()
    gz = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    chained = gz.compress(zlib.compress(body)) + gz.flush()  # deflate first, then gzip
    replies = iter([(deflated, "deflate"), (chained, "deflate, gzip")])

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        content, coding = next(replies)
        writer.write(head(f"Content-Length: {len(content)}", f"Content-Encoding: {coding}") + content)
        await writer.drain()

    p = await provider(answer)
    for _ in range(2):
        result = await adapter(p.url, http, Recorder()).balance(fresh=True)
        assert not isinstance(result, Unknown), result
        assert result.value.amount_micros == 12_340_000  # type: ignore[union-attr]


# --- JSON built to break the parser ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": ' + b"[" * 600 + b'"x"' + b"]" * 600 + b"}",  # under json's own limit, over ours
        b'{"order": 23, "error": ' + b"[" * 600 + b"1" + b"]" * 600 + b"}",
    ],
    ids=["error", "order-and-error"],
)
async def test_json_nested_deep_is_an_unknown_reply_not_a_recursion_error(
    provider: Callable[[Handler], Awaitable[Provider]],
    http: httpx.AsyncClient,
    body: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(f"Content-Length: {len(body)}") + body)
        await writer.drain()

    p = await provider(answer)
    recorder = Recorder()
    result = await adapter(p.url, http, recorder).add(AddOrder(service="1", quantity=10))
    assert isinstance(result, Unknown), result
    assert result.sent is True
    assert "nested" in result.reason, result.reason
    assert [e.outcome for e in recorder.exchanges] == ["unknown"]
    no_key_in(recorder, result, caplog)


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("balance", b'{"balance": "1e999999999", "currency": "USD"}'),
        ("balance", b'{"balance": 1E+999999999, "currency": "USD"}'),
        ("add", b'{"order": 1e999999999}'),
    ],
)
async def test_a_number_beyond_the_decimal_context_is_an_unknown_reply(
    provider: Callable[[Handler], Awaitable[Provider]], http: httpx.AsyncClient, action: str, body: bytes
) -> None:
    """``1e999999999`` is valid JSON; ``abs()`` of it overflowed Python's decimal context and the
    ``decimal.Overflow`` escaped the adapter instead of an outcome."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(f"Content-Length: {len(body)}") + body)
        await writer.drain()

    p = await provider(answer)
    a = adapter(p.url, http, Recorder())
    result = await (a.balance() if action == "balance" else a.add(AddOrder(service="1", quantity=10)))
    assert isinstance(result, Unknown), result
    assert result.reason.startswith("unexpected reply"), result.reason


async def test_a_status_with_remains_beyond_the_decimal_context_reads_as_no_remains(
    provider: Callable[[Handler], Awaitable[Provider]], http: httpx.AsyncClient
) -> None:
    """As any junk ``remains``: a Partial without a usable figure, which waits for staff."""
    body = b'{"status": "Partial", "charge": "1.0", "remains": "-1e999999999"}'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(f"Content-Length: {len(body)}") + body)
        await writer.drain()

    p = await provider(answer)
    result = await adapter(p.url, http, Recorder()).status("23")
    assert isinstance(result, Accepted), result
    assert result.value.status is OrderStatus.PARTIAL
    assert result.value.remains is None


def test_a_service_with_a_rate_beyond_the_decimal_context_is_skipped_not_the_whole_list() -> None:
    good = {
        "service": 1,
        "name": "Likes",
        "type": "Default",
        "category": "IG",
        "rate": "0.9",
        "min": 10,
        "max": 100,
    }
    bad = {**good, "service": 2, "rate": "1e999999999"}
    services, problems = parse_services([good, bad])
    # Kept with its problem (the sync skips it and quarantines a service linked to it).
    assert [(s.service_id, s.problem) for s in services] == [("1", ""), ("2", "bad rate")]
    assert len(problems) == 1


# --- what is stored --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "in_body", "in_reason"),
    [
        (b'{"order": 77, "error": "bad\\u0000link ' + KEY.encode() + b'"}', '"order": 77', "badlink"),
        (b'\x1f\x8b\x00\xff{"order": 77} ' + KEY.encode() + b"\x00\xfe", '{"order": 77}', "malformed JSON"),
    ],
    ids=["escaped-nul", "binary"],
)
async def test_a_reply_with_nul_is_stored_in_the_provider_log_and_health(
    provider: Callable[[Handler], Awaitable[Provider]],
    http: httpx.AsyncClient,
    db_url: str,
    body: bytes,
    in_body: str,
    in_reason: str,
) -> None:
    """A body with NUL bytes (binary, or a provider's ``"\\u0000"`` in an error next to an order id):
    PostgreSQL text refuses NUL, and the one statement that stores the call's health and its
    exchange failed, so staff's per-order log lost the very exchange that sent the order to review."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(f"Content-Length: {len(body)}") + body)
        await writer.drain()

    p = await provider(answer)
    pool = await open_pool(make_settings(db_url))
    try:
        async with pool.connection() as conn:
            row = await (
                await conn.execute(
                    "INSERT INTO providers (name, api_url, api_key_ciphertext, currency)"
                    " VALUES ('p', %s, 'k', 'USD') RETURNING id",
                    (p.url,),
                )
            ).fetchone()
            assert row is not None
            provider_id = row[0]
            await conn.execute(
                "INSERT INTO provider_health (provider_id) VALUES (%s) ON CONFLICT DO NOTHING", (provider_id,)
            )
        recorder = HealthRecorder(pool, ProvidersRepo(), provider_id)
        a = StandardAdapter(ProviderConnection(p.url, KEY, timeout_s=5.0), http=http, on_exchange=recorder)
        with about_orders([4242]):
            result = await a.add(AddOrder(service="1", quantity=10))
        assert isinstance(result, Unknown), result
        async with pool.connection() as conn:
            logged = await (
                await conn.execute(
                    "SELECT body, reason, outcome FROM provider_exchanges WHERE provider_id = %s",
                    (provider_id,),
                )
            ).fetchall()
            health = await (
                await conn.execute(
                    "SELECT calls, failures, last_error FROM provider_health WHERE provider_id = %s",
                    (provider_id,),
                )
            ).fetchone()
        assert len(logged) == 1, logged
        stored_body, reason, outcome = logged[0]
        assert outcome == "unknown"
        assert in_body in stored_body
        assert in_reason in reason
        assert health is not None
        assert health[:2] == (1, 1)  # the failed call counted in the provider's health
        for text in (stored_body, reason, health[2]):
            assert KEY not in text
    finally:
        await pool.close()
