"""``smm dlq list`` and ``smm dlq replay``: the operator's view of dead letters."""

from __future__ import annotations

import argparse
import sys

from core.config import Settings
from core.events import Namespace, connect
from workers.dlq import list_dead_letters, replay


async def run_dlq(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.nats_url:
        print("SMM_NATS_URL is not set", file=sys.stderr)
        return 2
    nc = await connect(settings.nats_url, name="smm-dlq")
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
