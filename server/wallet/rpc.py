"""WalletService servicer: proto <-> domain, nothing else."""

from __future__ import annotations

import grpc
from smm.v1 import wallet_service_pb2 as pb
from smm.v1 import wallet_service_pb2_grpc as pb_grpc

from server.common import auth, idempotency
from server.common.convert import timestamp
from server.common.errors import NotFound
from server.common.money import format_micros, parse_micros
from server.common.pagetoken import PageTokenCodec, newest_first_page, page_size
from server.wallet.ledger import DOMAIN
from server.wallet.logic import BalanceRow, TransactionRow, WalletLogic


def transaction_to_proto(row: TransactionRow) -> pb.Transaction:
    return pb.Transaction(
        id=row.id,
        kind=row.kind,
        reference=row.reference,
        amount=format_micros(row.amount_micros),
        memo=row.memo,
        create_time=timestamp(row.create_time),
        held=format_micros(row.held_micros),
    )


def _signed_in(who: auth.Principal) -> int:
    if who.user_id is None:
        raise NotFound("no user is signed in", reason="USER_NOT_FOUND", domain=DOMAIN)
    return who.user_id


class WalletServicer(pb_grpc.WalletServiceServicer):
    def __init__(self, logic: WalletLogic, tokens: PageTokenCodec, currency: str) -> None:
        self._logic = logic
        self._tokens = tokens
        self._currency = currency

    def _balance(self, row: BalanceRow) -> pb.Balance:
        return pb.Balance(
            available=format_micros(row.available_micros),
            held=format_micros(row.held_micros),
            currency=self._currency,
        )

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Balance:
        return self._balance(await self._logic.balance(_signed_in(auth.principal())))

    async def GetUserBalance(
        self, request: pb.GetUserBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Balance:
        return self._balance(await self._logic.user_balance(request.user_id))

    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTransactionsResponse:
        user_id = _signed_in(auth.principal())
        size = page_size(request.page_size, default=50, maximum=500)
        rows, token = await newest_first_page(
            self._tokens,
            request.page_token,
            {"user": user_id},
            size,
            lambda before_id, limit: self._logic.transactions(user_id, before_id, limit),
        )
        return pb.ListTransactionsResponse(
            transactions=[transaction_to_proto(r) for r in rows], next_page_token=token
        )

    async def CreateBalanceAdjustment(
        self, request: pb.CreateBalanceAdjustmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Transaction:
        who = auth.principal()
        amount = parse_micros(request.amount, field="amount", allow_negative=True)
        key = idempotency.request_key("CreateBalanceAdjustment", who.actor, request.request_id, request)
        row = await self._logic.adjust(
            user_id=request.user_id, amount=amount, reason=request.reason, actor=who.actor, key=key
        )
        return transaction_to_proto(row)

    async def VerifyLedger(
        self, request: pb.VerifyLedgerRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyLedgerResponse:
        problems, checked = await self._logic.verify()
        return pb.VerifyLedgerResponse(ok=not problems, problems=problems, transactions_checked=checked)
