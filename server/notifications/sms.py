"""Text messages: who gets one for an event, tracking each, and Twilio's status callbacks.

Who: staff alerts go to every admin with a verified phone unless they turned ``sms.admin_alert``
off (the operator's default is ``SMM_SMS_ADMIN_ALERTS``, on); users get order notices
(``sms.order_finished``) and security notices (``sms.security``: password, address and two-factor
changes, new API keys) only when they opted in (off by default) and their number is verified;
order texts for API-key and reseller orders also need ``api_order_sms``. The phone verification
code goes to the account's unverified number (``smm.accounts.sms.requested``); the code itself is
minted later by the accounts service, when the worker asks for it, and never passes here.

Tracking: one ``sms_messages`` row per (event, number, template), so a redelivered event plans
the same messages (a dead letter's alert is keyed by the dead letter: ``message_key``); no body is
stored. A text that failed before Twilio took it (no SID) is sent again when its event is replayed
or redelivered (``resends_failed``). The worker marks a message ``sending`` before it calls the provider
and ``sent`` with the provider's SID after; a message with a SID is never sent again. Suppressed
numbers (unknown, unreachable, landline, opted out: from a callback or a refused send) get a
``suppressed`` row and nothing is sent until an account sets the number again.

Status callbacks: Twilio signs each with ``X-Twilio-Signature`` (HMAC-SHA1 with the auth token over
the exact callback URL and the form parameters), checked with the SDK's ``RequestValidator``. The
callback URL smm gives Twilio names the message (``?message_id=``), so a callback that overtakes
the worker's own ``sent`` record still finds its row. Statuses only move forward
(queued < sending < sent < delivered | undelivered | failed), whatever order callbacks come in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from google.protobuf.message import DecodeError
from smm.v1 import events_pb2
from twilio.request_validator import RequestValidator

from server.common.db import Pool
from server.common.errors import FieldViolation, InvalidArgument, NotFound, Unauthenticated, collect
from server.notifications.logic import (
    API_SOURCES,
    DEAD_LETTERED,
    DLQ_PREFIX,
    DOMAIN,
    FINISHED,
    PROVIDER_BALANCE_LOW,
    QUERIES,
    Contact,
    OrderFacts,
    Planned,
    burst_of,
    dead_letter_lines,
    message_key,
    order_context,
    provider_balance_alert,
    resends_failed,
    review_alert,
    stuck_alert,
)
from server.notifications.quiet import QUIETED, Burst, dead_letter_burst, gate

CALLBACK_PATH = "/api/v1/webhooks/sms/twilio"
# The SMS worker's own durables: a dead letter of theirs raises no text (it could loop); the email
# worker alerts about them, as this one alerts about the email worker's.
OWN_DURABLES = frozenset(
    {
        "sms-orders",
        "sms-wallet",
        "sms-api-keys",
        "sms-security",
        "sms-phone-codes",
        "sms-providers",
        "sms-dlq",
    }
)
# Twilio error codes that mean the number will not take texts: invalid or unknown number,
# unreachable handset, landline, blocked, or the recipient opted out (STOP).
UNDELIVERABLE_CODES = frozenset(
    {"21211", "21214", "21217", "21408", "21610", "21612", "21614", "30003", "30004", "30005", "30006"}
)
# Twilio's MessageStatus -> ours, with its rank: a status never moves back.
TWILIO_STATUSES: dict[str, tuple[str, int]] = {
    "accepted": ("sent", 2),
    "scheduled": ("sent", 2),
    "queued": ("sent", 2),
    "sending": ("sent", 2),
    "sent": ("sent", 2),
    "delivered": ("delivered", 3),
    "read": ("delivered", 3),
    "undelivered": ("undelivered", 3),
    "failed": ("failed", 3),
    "canceled": ("failed", 3),
}
# What the worker may record, and from which statuses.
WORKER_STATUSES: dict[str, list[str]] = {
    "sending": ["queued", "sending"],
    "queued": ["sending"],  # the provider refused this attempt for now
    "sent": ["queued", "sending"],
    "failed": ["queued", "sending"],
}


@dataclass(frozen=True)
class SmsDraft:
    contact: Contact
    template: str
    context: dict[str, Any]
    # The number: the verified one, or for a verification code the one being verified.
    to: str
    # An admin alert of a kind that comes in bursts (``server/notifications/quiet.py``).
    burst: Burst | None = None


def security_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


SECURITY_CHANGES = {
    events_pb2.SECURITY_CHANGE_PASSWORD_CHANGED: "password_changed",
    events_pb2.SECURITY_CHANGE_PASSWORD_RESET: "password_reset",
    events_pb2.SECURITY_CHANGE_EMAIL_CHANGED: "email_changed",
    events_pb2.SECURITY_CHANGE_TWO_FACTOR_ENABLED: "two_factor_enabled",
    events_pb2.SECURITY_CHANGE_TWO_FACTOR_DISABLED: "two_factor_disabled",
}


class SmsNotifications:
    def __init__(
        self,
        pool: Pool,
        *,
        api_url: str,
        web_url: str,
        currency: str,
        admin_alerts: bool,
        twilio_auth_token: str,
        alert_interval_s: int = 0,
    ) -> None:
        self._pool = pool
        self._alert_interval_s = alert_interval_s
        self._api_url = api_url.rstrip("/")
        self._web_url = web_url.rstrip("/")
        self._currency = currency
        self._admin_alerts = admin_alerts
        self._validator = RequestValidator(twilio_auth_token) if twilio_auth_token else None

    def callback_url(self, message_id: int) -> str:
        """The status callback URL of one message: the exact URL Twilio signs."""
        return f"{self._api_url}{CALLBACK_PATH}?{urlencode({'message_id': message_id})}"

    async def plan(
        self, event_id: str, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> list[Planned]:
        try:
            drafts = await self._drafts(subject, payload, headers or {})
        except DecodeError as exc:
            raise InvalidArgument("the event payload does not match its subject", domain=DOMAIN) from exc
        key = message_key(event_id, subject, headers or {})
        planned = []
        async with self._pool.connection() as conn, conn.transaction():
            alert = await gate(conn, "sms", key, burst_of(drafts), self._alert_interval_s)
            for draft in drafts:
                suppressed = await QUERIES.scalar(conn, "is_number_suppressed", number=draft.to)
                draft = replace(draft, context=alert.context(draft.context))
                await QUERIES.execute(
                    conn,
                    "plan_sms",
                    event_id=key,
                    user_id=draft.contact.id,
                    to_number=draft.to,
                    template=draft.template,
                    status=QUIETED if alert.quiet else "suppressed" if suppressed else "queued",
                    resend_failed=resends_failed(subject),
                )
                row = await (
                    await conn.execute(
                        QUERIES.sql("get_planned_sms"),
                        {"event_id": key, "to_number": draft.to, "template": draft.template},
                    )
                ).fetchone()
                assert row is not None
                message_id, status = row
                if status in ("suppressed", QUIETED):
                    continue
                planned.append(
                    Planned(
                        message_id,
                        draft.to,
                        draft.template,
                        draft.context,
                        "",
                        status,
                        channel="sms",
                        status_callback_url=self.callback_url(message_id),
                    )
                )
        return planned

    async def _drafts(self, subject: str, payload: bytes, headers: dict[str, str]) -> list[SmsDraft]:
        if subject.startswith(DLQ_PREFIX):
            durable = subject.removeprefix(DLQ_PREFIX)
            if durable in OWN_DURABLES:
                return []
            return await self._admin_alert(
                DEAD_LETTERED, dead_letter_lines(durable, headers), dead_letter_burst(durable)
            )
        if subject == "smm.accounts.sms.requested":
            requested = events_pb2.AccountSmsRequested.FromString(payload)
            contact = await self._contact(requested.user_id)
            if contact is None or not contact.phone or contact.phone_verified:
                return []
            return [SmsDraft(contact, "phone_verification", {"name": contact.name}, contact.phone)]
        if subject == "smm.orders.order.changed":
            changed = events_pb2.OrderChanged.FromString(payload)
            if changed.status in FINISHED:
                return await self._order_drafts(changed.order_id, FINISHED[changed.status])
            if changed.status == "needs_review":
                return await self._admin_alert(*await review_alert(self._pool, changed.order_id))
            return []
        if subject == "smm.orders.alert.stuck":
            stuck = events_pb2.OrdersStuck.FromString(payload)
            return await self._admin_alert(*stuck_alert(stuck))
        if subject == "smm.wallet.ledger.alert":
            alert = events_pb2.LedgerAlert.FromString(payload)
            return await self._admin_alert("The ledger check failed", list(alert.problems[:50]))
        if subject == PROVIDER_BALANCE_LOW:
            low = events_pb2.ProviderBalanceLow.FromString(payload)
            return await self._admin_alert(*provider_balance_alert(low))
        if subject == "smm.accounts.api_key.created":
            key = events_pb2.ApiKeyCreated.FromString(payload)
            contact = await self._reachable(key.user_id, "security")
            if contact is None:
                return []
            context = {"name": contact.name, "key_name": key.name, "key_prefix": key.prefix}
            return [SmsDraft(contact, "api_key_created", context, contact.phone)]
        if subject == "smm.accounts.security.changed":
            changed_security = events_pb2.SecurityChanged.FromString(payload)
            change = SECURITY_CHANGES.get(changed_security.change)
            contact = await self._reachable(changed_security.user_id, "security")
            if contact is None or change is None:
                return []
            context = {"name": contact.name, "change": change, "time": security_time()}
            return [SmsDraft(contact, "security_notice", context, contact.phone)]
        return []

    async def _contact(self, user_id: int) -> Contact | None:
        async with self._pool.connection() as conn:
            contact = await QUERIES.one(conn, "user_contact", Contact, id=user_id)
        return contact if contact is not None and contact.status == "active" else None

    async def _reachable(self, user_id: int, topic: str) -> Contact | None:
        """The user, if they opted in to ``topic`` by text and have a verified number."""
        contact = await self._contact(user_id)
        if contact is None or not (contact.phone and contact.phone_verified) or not contact.wants_sms(topic):
            return None
        return contact

    async def _order_drafts(self, order_id: int, template: str) -> list[SmsDraft]:
        async with self._pool.connection() as conn:
            order = await QUERIES.one(conn, "order_facts", OrderFacts, id=order_id)
        if order is None:
            return []
        contact = await self._reachable(order.user_id, "order_finished")
        if contact is None:
            return []
        if order.source in API_SOURCES and not contact.wants_api_orders("sms"):
            return []
        context = order_context(order, contact, self._currency, self._web_url)
        return [SmsDraft(contact, template, context, contact.phone)]

    async def _admin_alert(self, title: str, lines: list[str], burst: Burst | None = None) -> list[SmsDraft]:
        async with self._pool.connection() as conn:
            admins = await QUERIES.all(conn, "admin_contacts", Contact)
        context = {"title": title, "lines": lines, "admin_url": f"{self._web_url}/admin"}
        return [
            SmsDraft(a, "admin_alert", context, a.phone, burst)
            for a in admins
            if a.phone and a.phone_verified and a.wants_sms("admin_alert", self._admin_alerts)
        ]

    async def record(
        self, message_id: int, status: str, transport: str, transport_id: str, error: str, error_code: str
    ) -> None:
        allowed = WORKER_STATUSES.get(status)
        if allowed is None:
            collect(
                [FieldViolation("status", f"must be one of {', '.join(WORKER_STATUSES)} for a text")],
                domain=DOMAIN,
            )
            return
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    QUERIES.sql("record_sms_delivery"),
                    {
                        "id": message_id,
                        "status": status,
                        "allowed": allowed,
                        "transport": transport,
                        "transport_message_id": transport_id[:200],
                        "error": error[:1000],
                        "error_code": error_code[:20],
                    },
                )
            ).fetchone()
            if row is not None and status == "failed" and error_code in UNDELIVERABLE_CODES:
                await QUERIES.execute(
                    conn, "suppress_number", number=row[1], reason="refused", error_code=error_code
                )

    async def twilio_webhook(self, body: bytes, signature: str, message_id: int) -> bool:
        """Apply one status callback; False when it changes nothing (unknown or stale)."""
        if self._validator is None:
            raise NotFound("Twilio callbacks are not configured", reason="WEBHOOKS_OFF", domain=DOMAIN)
        try:
            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError as exc:
            raise InvalidArgument("not a Twilio callback", reason="BAD_WEBHOOK", domain=DOMAIN) from exc
        url = self.callback_url(message_id) if message_id else f"{self._api_url}{CALLBACK_PATH}"
        if not signature or not self._validator.validate(url, params, signature):
            raise Unauthenticated(
                "the Twilio signature does not match", reason="INVALID_SIGNATURE", domain=DOMAIN
            )
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        reported = TWILIO_STATUSES.get((params.get("MessageStatus") or params.get("SmsStatus") or "").lower())
        if not sid or reported is None:
            return False
        status, rank = reported
        error_code = params.get("ErrorCode", "")[:20]
        error = f"Twilio {error_code}" if error_code else ""
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    QUERIES.sql("apply_sms_status"),
                    {
                        "id": message_id,
                        "transport_message_id": sid[:200],
                        "status": status,
                        "rank": rank,
                        "error": error,
                        "error_code": error_code,
                    },
                )
            ).fetchone()
            if row is None:
                return False
            if status in ("undelivered", "failed") and error_code in UNDELIVERABLE_CODES:
                await QUERIES.execute(
                    conn, "suppress_number", number=row[1], reason=status, error_code=error_code
                )
        return True
