"""``smm ledger verify``: every ledger invariant, checked by the server (WalletService.VerifyLedger)."""

from __future__ import annotations

import sys

import grpc
from smm.v1 import wallet_service_pb2 as pb
from smm.v1 import wallet_service_pb2_grpc as pb_grpc

from core.config import Settings
from ops.grpc_client import internal_metadata


async def verify_ledger(target: str, settings: Settings) -> int:
    """0 when every invariant holds; 1 with one line per problem on stderr otherwise."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.WalletServiceStub(channel)
        try:
            result = await stub.VerifyLedger(
                pb.VerifyLedgerRequest(), metadata=internal_metadata(settings, "ledger-cli"), timeout=300
            )
        except grpc.aio.AioRpcError as exc:
            print(f"smm ledger verify: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    if result.ok:
        print(f"ledger ok: {result.transactions_checked} transactions, every invariant holds")
        return 0
    print(f"LEDGER BROKEN: {len(result.problems)} problem(s)", file=sys.stderr)
    for problem in result.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1
