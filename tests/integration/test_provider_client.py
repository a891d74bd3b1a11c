"""The standard-protocol adapter against the demo provider over loopback HTTP (no mocked transport)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ops.embedded import free_port
from server.providers.adapters import (
    Accepted,
    AddOrder,
    Exchange,
    InMemoryBreaker,
    OrderStatus,
    ProviderConnection,
    RefillState,
    Rejected,
    Unknown,
    UnknownProtocol,
    create_adapter,
)
from server.providers.adapters.base import SERVICE_TYPES
from server.providers.adapters.breaker import BreakerPhase
from server.providers.adapters.standard import StandardAdapter
from server.providers.transport import provider_http_client
from tests.fix_demo import ORDER_EXAMPLES, DemoFactory, DemoHandle

pytest_plugins = ["tests.fix_demo"]
pytestmark = pytest.mark.integration

INT_FIELDS = {
    "quantity",
    "runs",
    "interval",
    "answer_number",
    "min",
    "max",
    "posts",
    "old_posts",
    "delay",
    "device",
    "type_of_traffic",
}


def example_order(service_type: str, **changes: Any) -> AddOrder:
    service_id, params = ORDER_EXAMPLES[service_type]
    fields: dict[str, Any] = {k: int(v) if k in INT_FIELDS else v for k, v in params.items()}
    return AddOrder(service=str(service_id), **{**fields, **changes})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with provider_http_client() as client:  # the client the server gives its adapters
        yield client


class Recorder:
    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    async def __call__(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)


def make_adapter(
    demo: DemoHandle,
    http: httpx.AsyncClient,
    *,
    key: str | None = None,
    timeout_s: float = 2.0,
    max_concurrency: int = 8,
    max_requests_per_s: float = 100.0,
    **kwargs: Any,
) -> StandardAdapter:
    config = ProviderConnection(
        demo.api_url,
        key or demo.api_key,
        timeout_s=timeout_s,
        max_concurrency=max_concurrency,
        max_requests_per_s=max_requests_per_s,
    )
    kwargs.setdefault("retry_backoff_s", 0.01)
    return StandardAdapter(config, http=http, **kwargs)


def phase(breaker: InMemoryBreaker) -> BreakerPhase:
    return breaker.state.phase


def accepted(reply: object) -> Any:
    assert isinstance(reply, Accepted), reply
    return reply.value


async def wait_final(adapter: StandardAdapter, order_ids: list[str]) -> dict[str, Any]:
    for _ in range(100):
        result: dict[str, Any] = accepted(await adapter.statuses(order_ids))
        if all(isinstance(v, Rejected) or v.status.final for v in result.values()) and len(result) == len(
            order_ids
        ):
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"not final: {result}")


# --- registry --------------------------------------------------------------------------------------


async def test_create_adapter_picks_by_protocol_name(http: httpx.AsyncClient) -> None:
    config = ProviderConnection("http://127.0.0.1:9/api/v2", "k")
    for name in ("standard", "Standard", " standard ", ""):
        assert isinstance(create_adapter(name, config, http=http), StandardAdapter)
    with pytest.raises(KeyError) as raised:
        create_adapter("soap", config, http=http)
    assert isinstance(raised.value, UnknownProtocol)
    assert str(raised.value) == "unknown provider protocol 'soap'; known: standard"


# --- every action ----------------------------------------------------------------------------------


async def test_services_parse_every_type(demo_provider: DemoHandle, http: httpx.AsyncClient) -> None:
    services = accepted(await make_adapter(demo_provider, http).services())
    assert {s.type for s in services} == set(SERVICE_TYPES)
    by_id = {s.service_id: s for s in services}
    followers = by_id["1"]
    assert (followers.rate_micros, followers.min, followers.max) == (900_000, 50, 10000)
    assert (followers.refill, followers.cancel, followers.dripfeed) == (True, True, True)
    package = by_id["3"]
    assert (package.type, package.min, package.max, package.refill, package.cancel) == (
        "Package",
        1,
        1,
        False,
        False,
    )
    assert by_id["5"].rate_micros == 8_000_000


async def test_add_every_service_type_then_track_to_completion(
    demo_provider: DemoHandle, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(demo_provider, http)
    ids: dict[str, str] = {}
    for service_type in ORDER_EXAMPLES:
        ids[service_type] = accepted(await adapter.add(example_order(service_type)))
    drip = accepted(
        await adapter.add(AddOrder(service="2", link="https://x.com/p/1", quantity=20, runs=3, interval=5))
    )
    upstream = {str(o["order"]): o for o in await demo_provider.orders()}
    assert len(upstream) == len(SERVICE_TYPES) + 1
    assert upstream[ids["Subscriptions"]]["details"] == {
        "username": "someuser", "min": "50", "max": "100", "delay": "30", "posts": "3", "expiry": "31/12/2030",
    }  # fmt: skip
    assert upstream[ids["Subscriptions"]]["link"] is None  # no link sent
    assert upstream[ids["Custom Comments"]]["quantity"] == 10
    assert upstream[ids["Web Traffic"]]["details"]["type_of_traffic"] == "1"
    assert (upstream[drip]["quantity"], upstream[drip]["runs"], upstream[drip]["interval"]) == (60, 3, 5)

    result = await wait_final(adapter, [*ids.values(), drip, "999999"])
    assert result["999999"] == Rejected("Incorrect order ID")
    for order_id in [*ids.values(), drip]:
        status = result[order_id]
        assert status.status is OrderStatus.COMPLETED
        assert (status.remains, status.currency) == (0, "USD")
        assert status.charge_micros == int(Decimal(upstream[order_id]["charge"]) * 1_000_000)


async def test_single_status_partial_canceled_and_unknown(
    demo_provider: DemoHandle, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(demo_provider, http)
    partial = accepted(await adapter.add(AddOrder(service="1", link="https://x.com/partial", quantity=300)))
    canceled = accepted(await adapter.add(AddOrder(service="1", link="https://x.com/cancel", quantity=300)))
    first = accepted(await adapter.status(partial))
    assert first.status in (OrderStatus.PENDING, OrderStatus.IN_PROGRESS)
    await wait_final(adapter, [partial, canceled])
    assert accepted(await adapter.status(partial)) == accepted(await adapter.status(partial))
    final = accepted(await adapter.status(partial))
    assert (final.status, final.remains, final.charge_micros) == (OrderStatus.PARTIAL, 100, 180_000)
    assert final.start_count is not None
    assert final.start_count > 0
    gone = accepted(await adapter.status(canceled))
    assert (gone.status, gone.remains, gone.charge_micros) == (OrderStatus.CANCELED, 300, 0)
    assert await adapter.status("424242") == Rejected("Incorrect order ID")


async def test_refill_and_refill_status(demo_provider: DemoHandle, http: httpx.AsyncClient) -> None:
    adapter = make_adapter(demo_provider, http)
    good = accepted(await adapter.add(AddOrder(service="1", link="https://x.com/good", quantity=100)))
    bad = accepted(await adapter.add(AddOrder(service="1", link="https://x.com/norefill", quantity=100)))
    assert await adapter.refill(good) == Rejected("The order is not completed")
    await wait_final(adapter, [good, bad])
    assert await adapter.refill(good) == Accepted("1")
    assert await adapter.refills([bad, "777"]) == Accepted({bad: "2", "777": Rejected("Incorrect order ID")})
    single = accepted(await adapter.refill_status(["1"]))
    assert single["1"] in (RefillState.PENDING, RefillState.IN_PROGRESS, RefillState.COMPLETED)
    for _ in range(100):
        states = accepted(await adapter.refill_status(["1", "2", "404"]))
        if states["1"] is RefillState.COMPLETED and states["2"] is RefillState.REJECTED:
            break
        await asyncio.sleep(0.02)
    assert states == {
        "1": RefillState.COMPLETED,
        "2": RefillState.REJECTED,
        "404": Rejected("Refill not found"),
    }
    # The single form's top-level error is that refill's answer, as an entry's is in the list form.
    assert await adapter.refill_status(["404"]) == Accepted({"404": Rejected("Refill not found")})
    assert await adapter.refill_status([]) == Accepted({})


async def test_cancel(demo_provider_factory: DemoFactory, http: httpx.AsyncClient) -> None:
    demo = await demo_provider_factory(step_s=0.5)
    adapter = make_adapter(demo, http)
    cancellable = accepted(await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=1000)))
    fixed = accepted(
        await adapter.add(AddOrder(service="4", link="https://x.com/b", quantity=100, keywords="k"))
    )
    result = await adapter.cancel([cancellable, fixed, "31337", cancellable])
    assert result == Accepted(
        {
            cancellable: True,
            fixed: Rejected("Order cannot be cancelled"),
            "31337": Rejected("Incorrect order ID"),
        }
    )
    status = accepted(await adapter.status(cancellable))
    assert (status.status, status.charge_micros) == (OrderStatus.CANCELED, 0)


async def test_rejections_from_the_provider(demo_provider: DemoHandle, http: httpx.AsyncClient) -> None:
    adapter = make_adapter(demo_provider, http)
    assert await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=10)) == Rejected(
        "Quantity less than minimal 50"
    )
    assert await adapter.add(AddOrder(service="999", link="https://x.com/a", quantity=100)) == Rejected(
        "Incorrect service ID"
    )
    wrong_key = make_adapter(demo_provider, http, key="not-the-key")
    assert await wrong_key.balance() == Rejected("Invalid API key")
    assert await wrong_key.statuses(["1", "2"]) == Rejected("Invalid API key")
    await demo_provider.set_balance("0.01")
    assert await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=100)) == Rejected(
        "Not enough funds on balance"
    )
    assert await demo_provider.orders() == []


async def test_lists_over_100_ids_go_in_batches_of_100(
    demo_provider: DemoHandle, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(demo_provider, http)
    real = [
        accepted(await adapter.add(AddOrder(service="1", link=f"https://x.com/{i}", quantity=100)))
        for i in range(2)
    ]
    fake = [str(100_000 + i) for i in range(148)]
    result = accepted(await adapter.statuses(real + fake))
    assert await demo_provider.requests("status") == 2
    assert len(result) == 150
    assert all(result[i] == Rejected("Incorrect order ID") for i in fake)
    assert all(isinstance(result[i].status, OrderStatus) for i in real)
    cancels = accepted(await adapter.cancel(fake[:101]))
    assert await demo_provider.requests("cancel") == 2
    assert set(cancels) == set(fake[:101])
    refills = accepted(await adapter.refills(fake))
    assert await demo_provider.requests("refill") == 2
    assert all(v == Rejected("Incorrect order ID") for v in refills.values())
    states = accepted(await adapter.refill_status([str(i) for i in range(1, 201)]))
    assert await demo_provider.requests("refill_status") == 2
    assert len(states) == 200


async def test_a_failed_batch_leaves_its_ids_out(demo_provider: DemoHandle, http: httpx.AsyncClient) -> None:
    adapter = make_adapter(demo_provider, http, read_attempts=1)
    await demo_provider.fault("http500", count=1, actions=["status"])
    ids = [str(100_000 + i) for i in range(150)]
    result = accepted(await adapter.statuses(ids))
    assert len(result) in (50, 100)  # whichever batch hit the fault is unknown: absent
    assert all(v == Rejected("Incorrect order ID") for v in result.values())
    await demo_provider.fault("http500", count=2, actions=["status"])
    assert isinstance(await adapter.statuses(ids), Unknown)


# --- caching ---------------------------------------------------------------------------------------


async def test_services_and_balance_are_cached(demo_provider: DemoHandle, http: httpx.AsyncClient) -> None:
    adapter = make_adapter(demo_provider, http, services_ttl_s=0.2)
    first = accepted(await adapter.balance())
    assert first.amount_micros == 1_000_000_000
    assert first.currency == "USD"
    await adapter.balance()
    assert await demo_provider.requests("balance") == 1
    await adapter.balance(fresh=True)
    assert await demo_provider.requests("balance") == 2
    accepted(await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=100)))
    after = accepted(await adapter.balance())  # a write clears the cached balance
    assert await demo_provider.requests("balance") == 3
    assert after.amount_micros == 1_000_000_000 - 90_000

    await adapter.services()
    await adapter.services()
    assert await demo_provider.requests("services") == 1
    await asyncio.sleep(0.25)
    await adapter.services()
    assert await demo_provider.requests("services") == 2
    await adapter.services(fresh=True)
    assert await demo_provider.requests("services") == 3


async def test_failures_are_not_cached(demo_provider: DemoHandle, http: httpx.AsyncClient) -> None:
    adapter = make_adapter(demo_provider, http, read_attempts=1)
    await demo_provider.fault("html", actions=["balance"])
    assert isinstance(await adapter.balance(), Unknown)
    assert isinstance(await adapter.balance(), Accepted)
    assert await demo_provider.requests("balance") == 2


# --- faults: classification, retries ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "extra", "expected", "reason"),
    [
        ("timeout", {}, Unknown, "timed out"),
        ("http500", {}, Unknown, "HTTP 500"),
        ("http500", {"status": 503}, Unknown, "HTTP 503"),
        ("malformed_json", {}, Unknown, "malformed JSON"),
        ("html", {}, Unknown, "HTML page"),
        ("error_body", {"message": "Maintenance"}, Rejected, "Maintenance"),
        ("latency", {"delay_s": 0.1}, Accepted, ""),
    ],
)
async def test_each_fault_kind_is_classified(
    demo_provider: DemoHandle,
    http: httpx.AsyncClient,
    kind: str,
    extra: dict[str, Any],
    expected: type,
    reason: str,
) -> None:
    recorder = Recorder()
    adapter = make_adapter(demo_provider, http, timeout_s=0.3, read_attempts=1, on_exchange=recorder)
    await demo_provider.fault(kind, actions=["balance"], **extra)
    reply = await adapter.balance()
    assert isinstance(reply, expected), reply
    if isinstance(reply, Unknown):
        assert reason in reply.reason
        assert reply.sent is True
    if isinstance(reply, Rejected):
        assert reply.message == reason
    [exchange] = recorder.exchanges
    assert exchange.outcome == expected.__name__.lower()
    assert exchange.sent is True
    if kind == "latency":
        assert exchange.latency_s >= 0.1
    if kind == "timeout":
        assert exchange.http_status is None
        assert 0.3 <= exchange.latency_s < 1.0


async def test_reads_are_retried_on_unknown(demo_provider: DemoHandle, http: httpx.AsyncClient) -> None:
    recorder = Recorder()
    adapter = make_adapter(demo_provider, http, on_exchange=recorder)
    await demo_provider.fault("http500", count=2, actions=["balance"])
    assert isinstance(await adapter.balance(), Accepted)
    assert await demo_provider.requests("balance") == 3
    assert [(e.attempt, e.outcome) for e in recorder.exchanges] == [
        (1, "unknown"),
        (2, "unknown"),
        (3, "accepted"),
    ]

    await demo_provider.fault("malformed_json", count=5, actions=["status"])
    assert isinstance(await adapter.status("1"), Unknown)
    assert await demo_provider.requests("status") == 3  # three attempts, then give up
    await demo_provider.clear_faults()

    await demo_provider.fault("error_body", count=5, actions=["services"])
    assert isinstance(await adapter.services(), Rejected)
    assert await demo_provider.requests("services") == 1  # a rejection is an answer: not retried


@pytest.mark.parametrize("kind", ["timeout", "http500", "malformed_json", "html"])
async def test_add_is_sent_once_and_the_order_exists_upstream(
    demo_provider: DemoHandle, http: httpx.AsyncClient, kind: str
) -> None:
    adapter = make_adapter(demo_provider, http, timeout_s=0.3)
    await demo_provider.fault(kind, count=5, actions=["add"])
    reply = await adapter.add(AddOrder(service="1", link="https://x.com/once", quantity=100))
    assert isinstance(reply, Unknown)
    assert reply.sent is True  # maybe placed: never a rejection
    assert await demo_provider.requests("add") == 1
    orders = await demo_provider.orders()
    assert [o["link"] for o in orders] == ["https://x.com/once"]  # exactly once upstream


async def test_other_writes_are_not_retried(demo_provider: DemoHandle, http: httpx.AsyncClient) -> None:
    adapter = make_adapter(demo_provider, http)
    await demo_provider.fault("http500", count=10, actions=["cancel", "refill"])
    assert isinstance(await adapter.cancel(["1", "2"]), Unknown)
    assert isinstance(await adapter.refill("1"), Unknown)
    assert isinstance(await adapter.refills(["1", "2"]), Unknown)
    assert await demo_provider.requests("cancel") == 1
    assert await demo_provider.requests("refill") == 2


async def test_error_body_on_add_is_rejected_and_nothing_exists(
    demo_provider: DemoHandle, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(demo_provider, http)
    await demo_provider.fault("error_body", actions=["add"], message="Service is paused")
    assert await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=100)) == Rejected(
        "Service is paused"
    )
    assert await demo_provider.orders() == []


async def test_connection_refused_is_unknown_and_not_sent(http: httpx.AsyncClient) -> None:
    recorder = Recorder()
    config = ProviderConnection(f"http://127.0.0.1:{free_port()}/api/v2", "k", timeout_s=1.0)
    adapter = StandardAdapter(config, http=http, on_exchange=recorder, retry_backoff_s=0.01)
    reply = await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=100))
    assert isinstance(reply, Unknown)
    assert reply.sent is False
    assert reply.reason.startswith("not connected: ConnectError")
    assert isinstance(await adapter.balance(), Unknown)
    assert [(e.action, e.attempt, e.sent) for e in recorder.exchanges] == [
        ("add", 1, False), ("balance", 1, False), ("balance", 2, False), ("balance", 3, False),
    ]  # fmt: skip


# --- breaker, limits -------------------------------------------------------------------------------


async def test_breaker_opens_refuses_without_sending_half_opens_and_closes(
    demo_provider: DemoHandle, http: httpx.AsyncClient
) -> None:
    breaker = InMemoryBreaker(failure_threshold=2, reset_after_s=0.3)
    recorder = Recorder()
    adapter = make_adapter(
        demo_provider, http, breaker=breaker, read_attempts=1, balance_ttl_s=0, on_exchange=recorder
    )
    await demo_provider.fault("http500", count=100, actions=["balance"])
    for _ in range(2):
        reply = await adapter.balance()
        assert isinstance(reply, Unknown)
        assert reply.sent
    assert phase(breaker) is BreakerPhase.OPEN
    assert await adapter.balance() == Unknown("circuit open", sent=False)
    assert await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=100)) == Unknown(
        "circuit open", sent=False
    )
    assert await demo_provider.requests("balance") == 2
    assert await demo_provider.requests("add") == 0
    assert await demo_provider.orders() == []
    assert [(e.action, e.sent, e.http_status) for e in recorder.exchanges[-2:]] == [
        ("balance", False, None),
        ("add", False, None),
    ]

    await asyncio.sleep(0.35)  # half-open: one probe; it fails, so the breaker opens again
    assert isinstance(await adapter.balance(), Unknown)
    assert phase(breaker) is BreakerPhase.OPEN
    assert await demo_provider.requests("balance") == 3

    await demo_provider.clear_faults()
    await asyncio.sleep(0.35)
    assert isinstance(await adapter.balance(), Accepted)  # the probe succeeds: closed
    assert phase(breaker) is BreakerPhase.CLOSED
    assert isinstance(await adapter.balance(), Accepted)


async def test_rejections_keep_the_breaker_closed(demo_provider: DemoHandle, http: httpx.AsyncClient) -> None:
    breaker = InMemoryBreaker(failure_threshold=2, reset_after_s=30)
    adapter = make_adapter(demo_provider, http, breaker=breaker)
    for _ in range(5):
        assert isinstance(
            await adapter.add(AddOrder(service="999", link="https://x.com/a", quantity=1)), Rejected
        )
    assert phase(breaker) is BreakerPhase.CLOSED
    assert breaker.state.failures == 0


class CannedProvider:
    """A loopback HTTP server that answers every request with ``body`` (HTTP 200, JSON): for replies
    the demo provider does not give, like a refill status word smm does not know."""

    def __init__(self) -> None:
        self.body = "{}"
        self.requests = 0
        self.api_url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.requests += 1
                body = self.body.encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def canned() -> AsyncIterator[CannedProvider]:
    provider = CannedProvider()
    server = await asyncio.start_server(provider.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider.api_url = f"http://127.0.0.1:{port}/api/v2"
    async with server:
        yield provider
        server.close()


async def test_an_odd_order_status_word_neither_retries_nor_opens_the_circuit(
    demo_provider: DemoHandle, http: httpx.AsyncClient
) -> None:
    """One order the provider calls by a word smm does not know, polled again and again, is that
    order's problem: it must not cost retries nor open the circuit for the whole provider."""
    breaker = InMemoryBreaker(failure_threshold=3, reset_after_s=30)
    recorder = Recorder()
    adapter = make_adapter(demo_provider, http, breaker=breaker, on_exchange=recorder)  # 3 read attempts
    odd = accepted(await adapter.add(AddOrder(service="1", link="https://x.com/odd", quantity=100)))
    await demo_provider.fault("status_word", count=100, actions=["status"], message="On hold")
    replies = [await adapter.statuses([odd]) for _ in range(3)]  # three poll ticks
    replies.append(await adapter.status(odd))
    # The provider still takes new orders: the circuit did not open.
    placed = await adapter.add(AddOrder(service="1", link="https://x.com/new", quantity=100))
    assert isinstance(placed, Accepted), placed
    assert (phase(breaker), breaker.state.failures) == (BreakerPhase.CLOSED, 0)
    assert await demo_provider.requests("status") == 4  # each answer taken once: it will not change
    for reply in replies:  # no decision on a word smm does not know; the reason shows it
        assert isinstance(reply, Unknown), reply
        assert "'On hold'" in reply.reason
        assert reply.sent is True
    assert [e.outcome for e in recorder.exchanges if e.action == "status"] == ["unknown"] * 4


@pytest.mark.parametrize(
    ("action", "ids", "body"),
    [
        ("refill_status", ["7"], '{"status": "Refunded"}'),
        ("refill_status", ["7"], '{"status": "Refunded", "refill": "7"}'),
        (
            "refill_status",
            ["7", "8"],
            '[{"refill": 7, "status": "Refunded"}, {"refill": 8, "status": "Frozen"}]',
        ),
        ("refill_status", ["7", "8"], '{"7": "Refunded", "8": {"status": "Frozen"}}'),
        ("statuses", ["7"], '{"status": "Fraud check", "charge": "1", "remains": "0"}'),
        ("statuses", ["7", "8"], '{"7": {"status": "Frozen"}, "8": {"status": "On hold"}}'),
        ("statuses", ["7", "8"], '[{"order": 7, "status": "Frozen"}, {"order": 8, "status": "Failed"}]'),
    ],
)
async def test_an_answer_whose_every_word_is_unknown_neither_retries_nor_opens_the_circuit(
    canned: CannedProvider, http: httpx.AsyncClient, action: str, ids: list[str], body: str
) -> None:
    breaker = InMemoryBreaker(failure_threshold=3, reset_after_s=30)
    config = ProviderConnection(canned.api_url, "k", timeout_s=2.0)
    adapter = StandardAdapter(config, http=http, breaker=breaker, retry_backoff_s=0.01)
    canned.body = body
    replies = [await getattr(adapter, action)(ids) for _ in range(3)]  # three poll ticks
    assert canned.requests == 3  # each answer taken once: it will not change in a second
    assert (phase(breaker), breaker.state.failures) == (BreakerPhase.CLOSED, 0)
    for reply in replies:  # still no decision on it; the reason says why, for staff
        assert isinstance(reply, Unknown), reply
        assert "unrecognised" in reply.reason


@pytest.mark.parametrize(
    ("action", "ids", "body"),
    [
        ("refill_status", ["7"], '{"state": "Completed"}'),
        ("refill_status", ["7"], '"Refunded"'),  # a bare string is no refill_status answer
        ("refill_status", ["7"], '{"status": {"x": 1}}'),
        ("refill_status", ["7", "8"], '{"7": {"x": 1}}'),
        ("statuses", ["7"], '{"status": null}'),
        ("statuses", ["7"], '{"status": 3}'),
        ("statuses", ["7", "8"], '{"7": {"charge": "1"}, "8": {"unexpected": true}}'),
        ("statuses", ["7", "8"], "{}"),
    ],
)
async def test_an_answer_of_an_unknown_shape_is_retried_and_counts_against_the_circuit(
    canned: CannedProvider, http: httpx.AsyncClient, action: str, ids: list[str], body: str
) -> None:
    breaker = InMemoryBreaker(failure_threshold=3, reset_after_s=30)
    config = ProviderConnection(canned.api_url, "k", timeout_s=2.0)
    adapter = StandardAdapter(config, http=http, breaker=breaker, retry_backoff_s=0.01)
    canned.body = body
    reply = await getattr(adapter, action)(ids)
    assert isinstance(reply, Unknown), reply
    assert canned.requests == 3  # retried: a garbled answer may be a passing fault
    assert phase(breaker) is BreakerPhase.OPEN


async def test_rate_limit_wait_gives_up_without_sending(
    demo_provider: DemoHandle, http: httpx.AsyncClient
) -> None:
    adapter = make_adapter(demo_provider, http, max_requests_per_s=0.5, timeout_s=0.3)
    assert isinstance(
        await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=100)), Accepted
    )
    reply = await adapter.add(AddOrder(service="1", link="https://x.com/b", quantity=100))
    assert isinstance(reply, Unknown)
    assert reply.sent is False
    assert "limit" in reply.reason
    assert await demo_provider.requests("add") == 1
    assert len(await demo_provider.orders()) == 1


async def test_concurrency_is_limited_per_adapter(demo_provider: DemoHandle, http: httpx.AsyncClient) -> None:
    adapter = make_adapter(demo_provider, http, max_concurrency=1)
    await demo_provider.fault("latency", count=3, actions=["balance"], delay_s=0.1)
    started = time.perf_counter()
    replies = await asyncio.gather(*(adapter.balance(fresh=True) for _ in range(3)))
    assert all(isinstance(r, Accepted) for r in replies)
    assert time.perf_counter() - started >= 0.3  # one at a time


# --- secrets ---------------------------------------------------------------------------------------

SECRET = "sk-LEAK-canary-8f2b41"


async def test_the_api_key_never_leaks(
    demo_provider_factory: DemoFactory, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    demo = await demo_provider_factory(api_keys=(SECRET,))
    recorder = Recorder()
    breaker = InMemoryBreaker(failure_threshold=3, reset_after_s=30)
    adapter = make_adapter(demo, http, timeout_s=0.3, on_exchange=recorder, breaker=breaker, read_attempts=1)
    replies: list[object] = [await adapter.services(), await adapter.balance()]
    order = accepted(await adapter.add(AddOrder(service="1", link="https://x.com/a", quantity=100)))
    replies += [
        await adapter.status(order),
        await adapter.statuses([order, "5"]),
        await adapter.refill(order),
    ]
    replies += [await adapter.refill_status(["1", "2"]), await adapter.cancel([order])]
    await demo.fault("error_body", actions=["balance"], message=f"Key {SECRET} is not allowed")
    echoed = await adapter.balance(fresh=True)
    assert echoed == Rejected("Key [redacted] is not allowed")
    await demo.fault("timeout", actions=["balance"])
    await demo.fault("http500", count=2, actions=["balance"])
    replies += [echoed] + [
        await adapter.balance(fresh=True) for _ in range(4)
    ]  # the last one is refused: open
    assert replies[-1] == Unknown("circuit open", sent=False)

    assert any(
        r.levelno == logging.WARNING for r in caplog.records
    )  # the check below has log lines to look at
    assert SECRET not in caplog.text
    assert all(SECRET not in repr(r.__dict__) for r in caplog.records)
    assert SECRET not in repr(adapter)
    assert SECRET not in repr(adapter._config)
    assert SECRET not in repr(replies)
    assert len(recorder.exchanges) == len(replies) + 1  # every call, the add included
    for exchange in recorder.exchanges:
        assert SECRET not in repr(exchange)
        assert "key" not in exchange.params
    assert any("[redacted]" in e.body for e in recorder.exchanges)
    add = next(e for e in recorder.exchanges if e.action == "add")
    assert add.params == {"service": "1", "link": "https://x.com/a", "quantity": "100"}
    assert (add.http_status, add.outcome, add.body) == (200, "accepted", f'{{"order":{order}}}')
    assert add.latency_s > 0
