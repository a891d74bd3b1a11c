"""``smm dlq list`` and ``smm dlq replay``: the operator's view of dead letters."""

from __future__ import annotations

import argparse
import asyncio
import sys

import nats
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js.errors import ServiceUnavailableError

from core.config import Settings
from core.events import Namespace
from workers.dlq import DeadLetter, DurableGone, dead_letter_at, dead_letters, replay

CONNECT_TIMEOUT_S = 5.0


async def _quiet(error: Exception) -> None:
    """nats-py logs a traceback per failed attempt; the one line below says it all."""


async def run_dlq(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.nats_url:
        print("SMM_NATS_URL is not set", file=sys.stderr)
        return 2
    try:  # a one-shot tool: fail fast instead of reconnecting for ever like the services do
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            nc = await nats.connect(
                settings.nats_url, name="smm-dlq", connect_timeout=2, allow_reconnect=False,
                max_reconnect_attempts=0, error_cb=_quiet,
            )  # fmt: skip
    except Exception as exc:  # refused, unknown host, or nothing within the time
        print(f"cannot reach SMM_NATS_URL ({type(exc).__name__})", file=sys.stderr)
        return 1
    try:
        return await _run(nc, Namespace(settings.nats_namespace), args)
    except (ServiceUnavailableError, NoRespondersError):  # a plain NATS, or another account
        print("SMM_NATS_URL answers, but not its JetStream API (is JetStream enabled?)", file=sys.stderr)
        return 1
    except nats.errors.Error as exc:  # a timeout or a refused request half-way
        print(f"smm dlq: NATS: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        await nc.drain()


async def _run(nc: NATS, ns: Namespace, args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        shown = 0
        async for letter in dead_letters(nc, ns, durable=args.durable):
            print(
                f"{letter.sequence}\t{letter.durable}\t{letter.subject}\tevent={letter.event_id}\t"
                f"deliveries={letter.deliveries}\t{letter.reason}"
            )
            shown += 1
        if not shown:
            print("no dead letters")
        return 0
    replayed, missing, orphaned = 0, [], []

    async def replay_one(letter: DeadLetter) -> None:
        nonlocal replayed
        try:
            await replay(nc, ns, letter)
        except DurableGone:
            orphaned.append(letter.sequence)
            return
        replayed += 1

    if args.sequences:  # looked up one by one: however many letters come before them
        for sequence in sorted(set(args.sequences)):
            found = await dead_letter_at(nc, ns, sequence)
            if found is None or (args.durable and found.durable != args.durable):
                missing.append(sequence)
                continue
            await replay_one(found)
    else:
        async for letter in dead_letters(nc, ns, durable=args.durable):
            await replay_one(letter)
    print(f"replayed {replayed} dead letter(s)")
    if missing:
        print(f"not found: {', '.join(map(str, missing))}", file=sys.stderr)
    if orphaned:
        print(f"kept, their consumer no longer exists: {', '.join(map(str, orphaned))}", file=sys.stderr)
    return 1 if missing or orphaned else 0
