"""`smm dlq list` / `smm dlq replay` past the first thousand dead letters, on real JetStream."""

from __future__ import annotations

import argparse

import pytest
from nats.aio.client import Client as NATS

from core.config import Settings
from core.events import (
    DLQ_DELIVERIES,
    DLQ_DURABLE,
    DLQ_REASON,
    DLQ_SUBJECT,
    EVENT_ID,
    MSG_ID,
    REPLAY_FOR,
    Durable,
    Namespace,
    ensure_durable,
    ensure_streams,
)
from ops.dlq_cli import run_dlq
from workers.dlq import dead_letter_at

pytestmark = pytest.mark.integration

LETTERS = 1_005  # the tool read at most 1,000: later letters were neither listed nor replayable


async def _dead_letter(nc: NATS, ns: Namespace, n: int) -> int:
    headers = {
        MSG_ID: f"dlq:test:{n}",
        EVENT_ID: f"e{n}",
        DLQ_REASON: "gave up after 6: provider down",
        DLQ_DELIVERIES: "6",
        DLQ_SUBJECT: "smm.catalog.category.changed",
        DLQ_DURABLE: "email-orders" if n % 2 else "analytics",
    }
    ack = await nc.jetstream().publish(ns.subject("smm.dlq.test"), f"{n}".encode(), headers=headers)
    return ack.seq


def _args(command: str, *sequences: int, durable: str = "") -> argparse.Namespace:
    return argparse.Namespace(dlq_command=command, sequences=list(sequences), durable=durable)


async def test_list_and_replay_reach_every_dead_letter(
    settings: Settings, nc: NATS, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = Namespace("dlqcli")
    js = nc.jetstream()
    await ensure_streams(js, ns)
    for name in ("analytics", "email-orders"):  # a replay is for the durable that dead-lettered it
        await ensure_durable(js, ns, Durable(name, "CATALOG", "smm.catalog.>"))
    local = settings.model_copy(update={"nats_namespace": ns.prefix})
    sequences = [await _dead_letter(nc, ns, n) for n in range(LETTERS)]

    assert await run_dlq(local, _args("list")) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == LETTERS
    assert listed[-1].split("\t")[:4] == [
        str(sequences[-1]),
        "analytics",
        "smm.catalog.category.changed",
        f"event=e{LETTERS - 1}",
    ]
    assert await run_dlq(local, _args("list", durable="analytics")) == 0
    assert len(capsys.readouterr().out.splitlines()) == (LETTERS + 1) // 2

    # One letter far down the stream, by its sequence; one that does not exist.
    late = sequences[1_003]
    assert await run_dlq(local, _args("replay", late, 10**9)) == 1
    captured = capsys.readouterr()
    assert "replayed 1 dead letter(s)" in captured.out
    assert f"not found: {10**9}" in captured.err
    assert await dead_letter_at(nc, ns, late) is None
    replayed = await js.get_last_msg(ns.stream("CATALOG"), ns.subject("smm.catalog.category.changed"))
    headers = dict(replayed.headers or {})
    assert (replayed.data, headers[EVENT_ID], headers[REPLAY_FOR]) == (b"1003", "e1003", "email-orders")

    # All the rest of one consumer's, then everything left.
    assert await run_dlq(local, _args("replay", durable="analytics")) == 0
    assert f"replayed {(LETTERS + 1) // 2} dead letter(s)" in capsys.readouterr().out
    assert await run_dlq(local, _args("replay")) == 0
    assert f"replayed {LETTERS // 2 - 1} dead letter(s)" in capsys.readouterr().out
    assert await run_dlq(local, _args("list")) == 0
    assert capsys.readouterr().out == "no dead letters\n"
    catalog = await js.stream_info(ns.stream("CATALOG"))
    assert catalog.state.messages == LETTERS


async def test_a_letter_whose_consumer_is_gone_is_kept_not_replayed(
    settings: Settings, nc: NATS, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay goes to the durable that dead-lettered the event only; one renamed or removed since
    would never see it, so the letter stays for the operator instead of vanishing."""
    ns = Namespace(settings.nats_namespace)
    js = nc.jetstream()
    await ensure_streams(js, ns)
    await ensure_durable(js, ns, Durable("analytics", "CATALOG", "smm.catalog.>"))
    kept = await _dead_letter(nc, ns, 1)  # email-orders: no such consumer here
    sent = await _dead_letter(nc, ns, 2)  # analytics
    assert await run_dlq(settings, _args("replay")) == 1
    captured = capsys.readouterr()
    assert "replayed 1 dead letter(s)" in captured.out
    assert f"kept, their consumer no longer exists: {kept}" in captured.err
    assert await dead_letter_at(nc, ns, sent) is None
    letter = await dead_letter_at(nc, ns, kept)
    assert letter is not None
    assert letter.durable == "email-orders"
