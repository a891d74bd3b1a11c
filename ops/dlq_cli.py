"""``smm dlq list`` and ``smm dlq replay``: the operator's view of dead letters."""

from __future__ import annotations

import argparse
import asyncio
import sys

import nats

from core.config import Settings
from core.events import Namespace
from workers.dlq import list_dead_letters, replay

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
    ns = Namespace(settings.nats_namespace)
    try:
        letters = await list_dead_letters(nc, ns, durable=args.durable)
        if args.dlq_command == "list":
            if not letters:
                print("no dead letters")
            for letter in letters:
                print(
                    f"{letter.sequence}\t{letter.durable}\t{letter.subject}\tevent={letter.event_id}\t"
                    f"deliveries={letter.deliveries}\t{letter.reason}"
                )
            return 0
        wanted = set(args.sequences)
        chosen = [letter for letter in letters if not wanted or letter.sequence in wanted]
        missing = wanted - {letter.sequence for letter in chosen}
        for letter in chosen:
            await replay(nc, ns, letter)
        print(f"replayed {len(chosen)} dead letter(s)")
        if missing:
            print(f"not found: {', '.join(map(str, sorted(missing)))}", file=sys.stderr)
            return 1
        return 0
    finally:
        await nc.drain()
