"""Deciding, per event, user and channel, whether and where to send; tracking what was sent.

This module plans email; ``server/notifications/sms.py`` plans text messages with the same
pieces. Preferences live in the profile's ``notification_preferences`` map (the schema, and its
check, are in ``server/common/preferences.py``):

    {"email": {"order_placed": bool, "order_finished": bool, "refill_done": bool,
               "low_balance": bool, "balance_adjusted": bool},
     "sms": {"order_finished": bool, "security": bool, "admin_alert": bool},
     "api_order_emails": bool, "api_order_sms": bool,
     "low_balance_threshold": "5.00"}   # a decimal string; "0" turns the low-balance email off

Anything missing takes the operator's default (``DEFAULTS``; order emails for API and reseller
orders default to off: resellers place thousands). Transactional mail (verification, reset, key
created, receipts) ignores preferences; everything else carries a one-click unsubscribe link.
Addresses that hard-bounced or complained are suppressed until the user changes address; a bounce
also until a message planned after it (an account email, the only mail still sent there) is
delivered.

Account emails (``smm.accounts.email.requested``: verification, password reset, email change and
its notice) are planned here too, so each leaves the same trail as any other email (the row with
the transport's id that bounces and complaints are matched by, and the staff history), but never
what it says: the worker asks the accounts service for the link only after planning, and the row
stores no context (the link is a credential; only its hash is kept, by the accounts service).
They are planned even for a suppressed address: a user asked for them (a password reset after the
mailbox was fixed must arrive), and a new bounce finds the row all the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import svix
from google.protobuf.message import DecodeError
from psycopg.types.json import Jsonb
from smm.v1 import accounts_service_pb2 as accounts_pb
from smm.v1 import events_pb2

from core.events import DLQ_DELIVERIES, DLQ_DURABLE, DLQ_REASON, DLQ_SUBJECT, MSG_ID
from server.common.db import Pool
from server.common.errors import FieldViolation, InvalidArgument, NotFound, Unauthenticated, collect
from server.common.money import format_micros, parse_micros
from server.common.pagetoken import PageTokenCodec
from server.common.preferences import EMAIL_TOPICS
from server.common.sqlfile import load
from server.notifications.quiet import QUIETED, Burst, dead_letter_burst, gate, review_burst

QUERIES = load(__file__)
DOMAIN = "notifications.smm"
TOPICS = EMAIL_TOPICS
DEFAULTS: dict[str, bool] = {t: True for t in TOPICS}
DLQ_PREFIX = "smm.dlq."
# The email worker's own durables: a dead letter of theirs raises no email (it could loop).
OWN_DURABLES = frozenset(
    {"email-orders", "email-wallet", "email-api-keys", "email-account", "email-providers", "email-dlq"}
)
# The providers service's subject (server/providers/logic.py; one service never imports another).
PROVIDER_BALANCE_LOW = "smm.providers.alert.low_balance"
# The durables that raise the dead-letter alerts (email and text). Each alerts about the other's
# dead letters; those alerts are planned under one key per event (``message_key``) and never
# resent, so two failing channels cannot alert about each other's alerts for ever.
ALERT_DURABLES = frozenset({"email-dlq", "sms-dlq"})
FINISHED = {"completed": "order_completed", "partial": "order_partial", "canceled": "order_canceled"}
ACCOUNT_EMAIL_SUBJECT = "smm.accounts.email.requested"
# An account email's kind -> its template (the worker renders it with the link it is handed).
ACCOUNT_TEMPLATES = {
    accounts_pb.ACCOUNT_EMAIL_KIND_VERIFY_EMAIL: "verify_email",
    accounts_pb.ACCOUNT_EMAIL_KIND_RESET_PASSWORD: "password_reset",
    accounts_pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL: "email_change",
    accounts_pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL_NOTICE: "email_change_notice",
}


@dataclass(frozen=True)
class Contact:
    id: int
    email: str
    name: str
    status: str
    notification_preferences: dict[str, Any]
    phone: str = ""
    phone_verified: bool = False

    def wants(self, topic: str) -> bool:
        email = self.notification_preferences.get("email")
        chosen = email.get(topic) if isinstance(email, dict) else None
        return chosen if isinstance(chosen, bool) else DEFAULTS.get(topic, True)

    def wants_sms(self, topic: str, default: bool = False) -> bool:
        sms = self.notification_preferences.get("sms")
        chosen = sms.get(topic) if isinstance(sms, dict) else None
        return chosen if isinstance(chosen, bool) else default

    def wants_api_orders(self, channel: str) -> bool:
        """Whether order messages for orders placed with API keys / the reseller endpoint go out."""
        flag = "api_order_sms" if channel == "sms" else "api_order_emails"
        return self.notification_preferences.get(flag) is True

    def threshold_micros(self, default: str) -> int:
        value = self.notification_preferences.get("low_balance_threshold", default)
        try:
            return parse_micros(str(value), field="low_balance_threshold")
        except InvalidArgument:
            return parse_micros(default, field="low_balance_threshold")


@dataclass(frozen=True)
class OrderFacts:
    id: int
    user_id: int
    status: str
    source: str
    link: str
    quantity: int
    price_micros: int
    charged_micros: int
    released_micros: int
    remains: int | None
    service_name: str


@dataclass(frozen=True)
class Planned:
    message_id: int
    to: str
    template: str
    context: dict[str, Any]
    unsubscribe_url: str
    status: str
    channel: str = "email"
    status_callback_url: str = ""
    unsubscribe_page_url: str = ""


@dataclass(frozen=True)
class Draft:
    contact: Contact
    template: str
    context: dict[str, Any]
    topic: str = ""  # "" for transactional mail
    # Account emails: asked for by the user, so sent even to a suppressed address.
    requested: bool = False
    # An admin alert of a kind that comes in bursts (``server/notifications/quiet.py``).
    burst: Burst | None = None


@dataclass(frozen=True)
class AccountContact:
    id: int
    email: str
    status: str
    pending_email: str
    email_verified: bool


@dataclass(frozen=True)
class Record:
    id: int
    channel: str
    to_address: str
    template: str
    status: str
    transport: str
    error: str
    create_time: Any
    update_time: Any


API_SOURCES = ("api", "reseller")
DEAD_LETTERED = "A message was dead-lettered"


@dataclass(frozen=True)
class ReviewProvider:
    id: int
    name: str


async def review_alert(pool: Pool, order_id: int) -> tuple[str, list[str], Burst]:
    """The staff alert for an order gone to review: which provider's answer is unknown, and its
    burst kind (one per provider)."""
    async with pool.connection() as conn:
        provider = await QUERIES.one(conn, "review_provider", ReviewProvider, id=order_id)
    if provider is None:
        return (
            "An order needs review",
            [f"Order {order_id}: the provider's answer is unknown"],
            review_burst(None),
        )
    line = f"Order {order_id}: the answer of provider {provider.id} ({provider.name}) is unknown"
    return "An order needs review", [line], review_burst(provider.id)


def burst_of(drafts: list[Any]) -> Burst | None:
    """The burst kind of an event's admin alert (its drafts share it), or None."""
    return next((draft.burst for draft in drafts if draft.burst is not None), None)


def message_key(event_id: str, subject: str, headers: dict[str, str]) -> str:
    """The key messages for an event are planned under (``event_id`` in the message tables).

    An ordinary event's id. A dead letter's alert is about that dead letter, not the event: one
    event may be dead-lettered by several durables, or again after a replay, and each must alert.
    So it is keyed by the dead letter's ``Nats-Msg-Id`` (``dlq:<durable>:<event id>:<seq>``, or
    ``<event id>:replay:<seq>`` for a replayed one); a letter built by hand without one falls back
    to its durable and event id. A dead letter of the alert durables themselves is keyed by the
    event alone: one alert per channel and event, however often the alerts fail (no loop).
    """
    if not subject.startswith(DLQ_PREFIX):
        return event_id
    if subject.removeprefix(DLQ_PREFIX) in ALERT_DURABLES:
        return f"dlq-alerts:{event_id}"
    if headers.get(MSG_ID):
        return headers[MSG_ID]
    if headers.get(DLQ_DURABLE):
        return f"dlq:{headers[DLQ_DURABLE]}:{event_id}"
    return event_id


def resends_failed(subject: str) -> bool:
    """Whether a message that failed is sent again when its event comes back (``smm dlq replay``,
    a redelivery). Not for dead-letter alerts: each dead letter or replay has a key of its own, and
    an alert about a failed alert must never be retried into a loop."""
    return not subject.startswith(DLQ_PREFIX)


# Dead letters a worker retries by itself (``workers/dispatch.py``): staff need not replay them.
RETRIED_DURABLES = {
    "dispatch-order-created": "smm sends the order again every 10 minutes for a week: no replay needed",
}
GAVE_UP = "gave up after "  # the runner's wording of a letter whose retries ran out (workers/runner.py)


def dead_letter_lines(durable: str, headers: dict[str, str]) -> list[str]:
    reason = headers.get(DLQ_REASON, "?")
    retried = RETRIED_DURABLES.get(durable) if reason.startswith(GAVE_UP) else None
    return [
        f"Consumer: {durable}",
        f"Event: {headers.get(DLQ_SUBJECT, '?')}",
        f"Reason: {reason}",
        f"Deliveries: {headers.get(DLQ_DELIVERIES, '?')}",
        retried or "Re-drive it with: smm dlq list / smm dlq replay",
    ]


def stuck_alert(stuck: events_pb2.OrdersStuck) -> tuple[str, list[str]]:
    """The staff alert's title and lines for orders, and refills, open too long (at most 50 of each)."""
    refills = [f"Refill {r.refill_id} of order {r.order_id}" for r in stuck.refills[:50]]
    orders = [f"Order {i}" for i in stuck.order_ids[:50]]
    if not orders:
        return "Refills are stuck", refills
    return ("Orders and refills are stuck" if refills else "Orders are stuck"), orders + refills


def provider_balance_alert(low: events_pb2.ProviderBalanceLow) -> tuple[str, list[str]]:
    """The staff alert's title and lines for a provider whose balance fell below its mark."""
    return "A provider's balance is low", [
        f"Provider {low.provider_id} ({low.provider_name}): {low.balance} {low.currency} left,"
        f" below the {low.low_balance} {low.currency} set for it",
        "Orders it rejects for want of funds fail or go to a fallback: top it up with the provider.",
    ]


def order_context(order: OrderFacts, contact: Contact, currency: str, web_url: str) -> dict[str, Any]:
    return {
        "name": contact.name,
        "order_id": str(order.id),
        "service_name": order.service_name,
        "link": order.link,
        "quantity": str(order.quantity),
        "remains": str(order.remains or 0),
        "price": format_micros(order.price_micros),
        "charged": format_micros(order.charged_micros),
        "released": format_micros(order.released_micros),
        "currency": currency,
        "order_url": f"{web_url}/orders/{order.id}",
    }


def resend_event(body: bytes) -> tuple[str, dict[str, Any]]:
    """The type and data of a signed Resend event. Any other shape is BAD_WEBHOOK: never coerced
    (``str(None)`` would look up "None")."""
    try:
        event = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
        raise _not_a_resend_event() from exc
    kind = event.get("type") if isinstance(event, dict) else None
    data = event.get("data") if isinstance(event, dict) else None
    if not (isinstance(kind, str) and isinstance(data, dict)):
        raise _not_a_resend_event()
    return kind, data


def email_facts(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The email id and bounce details (``{}`` when absent or null) of an ``email.*`` event."""
    email_id, bounce = data.get("email_id"), data.get("bounce")
    if bounce is None:
        bounce = {}
    if not (isinstance(email_id, str) and email_id and isinstance(bounce, dict)):
        raise _not_a_resend_event()
    return email_id, bounce


def _not_a_resend_event() -> InvalidArgument:
    return InvalidArgument("not a Resend event", reason="BAD_WEBHOOK", domain=DOMAIN)


class Notifications:
    def __init__(
        self,
        pool: Pool,
        tokens: PageTokenCodec,
        *,
        api_url: str,
        web_url: str,
        currency: str,
        low_balance_default: str,
        resend_webhook_secret: str,
        alert_interval_s: int = 0,
    ) -> None:
        self._pool = pool
        self._alert_interval_s = alert_interval_s
        self._tokens = tokens
        self._api_url = api_url.rstrip("/")
        self._web_url = web_url.rstrip("/")
        self._currency = currency
        self._low_default = low_balance_default
        self._resend_secret = resend_webhook_secret

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
            alert = await gate(conn, "email", key, burst_of(drafts), self._alert_interval_s)
            for draft in drafts:
                address = draft.contact.email
                suppressed = not draft.requested and await QUERIES.scalar(
                    conn, "is_suppressed", address=address
                )
                draft = replace(draft, context=alert.context(draft.context))
                await QUERIES.execute(
                    conn,
                    "plan_message",
                    event_id=key,
                    user_id=draft.contact.id,
                    to_address=address,
                    template=draft.template,
                    status=QUIETED if alert.quiet else "suppressed" if suppressed else "queued",
                    resend_failed=resends_failed(subject),
                    context=Jsonb(draft.context),
                    unsubscribe_url=self._unsubscribe_url(draft),
                )
                row = await (
                    await conn.execute(
                        QUERIES.sql("planned_message"),
                        {"event_id": key, "to_address": address, "template": draft.template},
                    )
                ).fetchone()
                assert row is not None
                message_id, status, stored_context, stored_unsubscribe = row
                if status in ("suppressed", QUIETED):
                    continue
                if stored_context is None:  # planned before what a message says was stored
                    stored_context, stored_unsubscribe = draft.context, self._unsubscribe_url(draft)
                # What the first planning stored, not what the draft says now: the balance, a name
                # or the clock may have moved since, and the redelivery of a message Resend
                # accepted must be the same request (else a 409, and Resend's email id is lost).
                planned.append(
                    Planned(
                        message_id,
                        address,
                        draft.template,
                        stored_context,
                        stored_unsubscribe,
                        status,
                        unsubscribe_page_url=self._unsubscribe_page_url(stored_unsubscribe),
                    )
                )
        return planned

    def _unsubscribe_url(self, draft: Draft) -> str:
        if not draft.topic:
            return ""
        token = self._tokens.encode(
            {"user": draft.contact.id, "topic": draft.topic}, filters={"use": "unsubscribe"}
        )
        return f"{self._api_url}/api/v1/public/unsubscribe?{urlencode({'token': token})}"

    def _unsubscribe_page_url(self, unsubscribe_url: str) -> str:
        """The body's link: the web front end's page for the same token, which shows what the
        link turns off and POSTs on a click. Never the one-click URL: mail scanners and link
        previews GET every link in a body, and a GET must not unsubscribe (RFC 8058)."""
        if not unsubscribe_url:
            return ""
        return f"{self._web_url}/unsubscribe?{urlsplit(unsubscribe_url).query}"

    async def _drafts(self, subject: str, payload: bytes, headers: dict[str, str]) -> list[Draft]:
        if subject.startswith(DLQ_PREFIX):
            durable = subject.removeprefix(DLQ_PREFIX)
            if durable in OWN_DURABLES:  # never an alert about the alerts themselves (no loop)
                return []
            return await self._admin_alert(
                DEAD_LETTERED, dead_letter_lines(durable, headers), dead_letter_burst(durable)
            )
        if subject == ACCOUNT_EMAIL_SUBJECT:
            return await self._account_email(events_pb2.AccountEmailRequested.FromString(payload))
        if subject == "smm.orders.order.created":
            created = events_pb2.OrderCreated.FromString(payload)
            return await self._order_drafts(created.order_id, "order_placed", "order_placed")
        if subject == "smm.orders.order.changed":
            changed = events_pb2.OrderChanged.FromString(payload)
            if changed.status in FINISHED:
                return await self._order_drafts(changed.order_id, FINISHED[changed.status], "order_finished")
            if changed.status == "needs_review":
                return await self._admin_alert(*await review_alert(self._pool, changed.order_id))
            return []
        if subject == "smm.orders.refill.completed":
            refill = events_pb2.RefillCompleted.FromString(payload)
            drafts = await self._order_drafts(refill.order_id, "refill_done", "refill_done")
            return [replace(d, context={**d.context, "refill_id": str(refill.refill_id)}) for d in drafts]
        if subject == "smm.wallet.balance.adjusted":
            adjusted = events_pb2.BalanceAdjusted.FromString(payload)
            contact = await self._contact(adjusted.user_id)
            if contact is None or not contact.wants("balance_adjusted"):
                return []
            context = {
                "name": contact.name,
                "amount": adjusted.amount,
                "reason": adjusted.reason,
                "balance": format_micros(await self._available(adjusted.user_id)),
                "currency": self._currency,
                "wallet_url": f"{self._web_url}/wallet",
            }
            return [Draft(contact, "balance_adjusted", context, "balance_adjusted")]
        if subject == "smm.accounts.api_key.created":
            key = events_pb2.ApiKeyCreated.FromString(payload)
            contact = await self._contact(key.user_id)
            if contact is None:
                return []
            context = {
                "name": contact.name,
                "key_name": key.name,
                "key_prefix": key.prefix,
                "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            }
            return [Draft(contact, "api_key_created", context)]
        if subject == "smm.orders.alert.stuck":
            stuck = events_pb2.OrdersStuck.FromString(payload)
            return await self._admin_alert(*stuck_alert(stuck))
        if subject == "smm.wallet.ledger.alert":
            alert = events_pb2.LedgerAlert.FromString(payload)
            return await self._admin_alert("The ledger check failed", list(alert.problems[:50]))
        if subject == PROVIDER_BALANCE_LOW:
            low = events_pb2.ProviderBalanceLow.FromString(payload)
            return await self._admin_alert(*provider_balance_alert(low))
        return []

    async def _account_email(self, requested: events_pb2.AccountEmailRequested) -> list[Draft]:
        """The account email to plan: the address it goes to and its template, no content (the
        link is minted by the accounts service when the worker asks, after this). What the
        accounts service would skip anyway (an address already confirmed, no change pending, an
        inactive account) is not planned."""
        template = ACCOUNT_TEMPLATES.get(requested.kind)
        if template is None:
            raise InvalidArgument.for_field("kind", "must be an account email kind", domain=DOMAIN)
        async with self._pool.connection() as conn:
            account = await QUERIES.one(conn, "account_contact", AccountContact, id=requested.user_id)
        if account is None or account.status != "active":
            return []
        to = account.email
        if requested.kind == accounts_pb.ACCOUNT_EMAIL_KIND_VERIFY_EMAIL and account.email_verified:
            return []
        if requested.kind in (
            accounts_pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL,
            accounts_pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL_NOTICE,
        ):
            if not account.pending_email:
                return []
            if requested.kind == accounts_pb.ACCOUNT_EMAIL_KIND_CHANGE_EMAIL:
                to = account.pending_email
        contact = Contact(account.id, to, "", account.status, {})
        return [Draft(contact, template, {}, requested=True)]

    async def _available(self, user_id: int) -> int:
        async with self._pool.connection() as conn:
            return int(await QUERIES.scalar(conn, "wallet_available", user_id=user_id))

    async def _contact(self, user_id: int) -> Contact | None:
        async with self._pool.connection() as conn:
            contact = await QUERIES.one(conn, "user_contact", Contact, id=user_id)
        return contact if contact is not None and contact.status == "active" else None

    async def _order_drafts(self, order_id: int, template: str, topic: str) -> list[Draft]:
        async with self._pool.connection() as conn:
            order = await QUERIES.one(conn, "order_facts", OrderFacts, id=order_id)
            if order is None:
                return []
            contact = await QUERIES.one(conn, "user_contact", Contact, id=order.user_id)
            available = int(await QUERIES.scalar(conn, "wallet_available", user_id=order.user_id))
        if contact is None or contact.status != "active":
            return []
        drafts = []
        api_order = order.source in API_SOURCES
        if contact.wants(topic) and (not api_order or contact.wants_api_orders("email")):
            drafts.append(
                Draft(contact, template, order_context(order, contact, self._currency, self._web_url), topic)
            )
        threshold = contact.threshold_micros(self._low_default)
        if (
            template == "order_placed"
            and threshold > 0
            and available < threshold
            and contact.wants("low_balance")
        ):
            context = {
                "name": contact.name,
                "balance": format_micros(available),
                "threshold": format_micros(threshold),
                "currency": self._currency,
                "wallet_url": f"{self._web_url}/wallet",
            }
            drafts.append(Draft(contact, "low_balance", context, "low_balance"))
        return drafts

    async def _admin_alert(self, title: str, lines: list[str], burst: Burst | None = None) -> list[Draft]:
        async with self._pool.connection() as conn:
            admins = await QUERIES.all(conn, "admin_contacts", Contact)
        context = {"title": title, "lines": lines, "admin_url": f"{self._web_url}/admin"}
        return [Draft(a, "admin_alert", context, burst=burst) for a in admins]

    async def record(
        self, message_id: int, status: str, transport: str, transport_id: str, error: str
    ) -> None:
        if status not in ("sent", "failed"):
            collect([FieldViolation("status", "must be sent or failed")], domain=DOMAIN)
        async with self._pool.connection() as conn:
            await QUERIES.scalar(
                conn,
                "record_delivery",
                id=message_id,
                status=status,
                transport=transport,
                transport_message_id=transport_id[:200],
                error=error[:1000],
            )

    async def resend_webhook(self, body: bytes, headers: dict[str, str]) -> bool:
        if not self._resend_secret:
            raise NotFound("Resend webhooks are not configured", reason="WEBHOOKS_OFF", domain=DOMAIN)
        webhook = svix.Webhook(self._resend_secret)  # a malformed secret is ours to fix: not caught
        try:
            webhook.verify(body, headers)
        except (svix.WebhookVerificationError, ValueError) as exc:
            # Svix raises ValueError (binascii.Error, UnicodeDecodeError) for a signature header or
            # a body it cannot even parse: no signature matches those either.
            raise Unauthenticated(
                "the Svix signature does not match", reason="INVALID_SIGNATURE", domain=DOMAIN
            ) from exc
        kind, data = resend_event(body)
        status = {
            "email.delivered": "delivered",
            "email.bounced": "bounced",
            "email.complained": "complained",
        }.get(kind)
        if status is None:
            return False  # contact.*, domain.*, email.sent ...: nothing of ours to record
        email_id, bounce = email_facts(data)
        bounce_type = bounce.get("type")
        if bounce_type is None:
            bounce_type = "Permanent"  # no details: treated as a hard bounce
        elif not isinstance(bounce_type, str):
            raise _not_a_resend_event()
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    QUERIES.sql("delivery_event"), {"transport_message_id": email_id, "status": status}
                )
            ).fetchone()
            if row is None:
                return False
            if status == "complained" or (status == "bounced" and bounce_type.lower() != "transient"):
                await QUERIES.execute(conn, "suppress_address", address=row[1], reason=status)
            elif status == "delivered":
                await QUERIES.execute(conn, "lift_bounce", address=row[1], planned_at=row[2])
        return True

    def _unsubscribe_token(self, token: str) -> tuple[int, str]:
        """The user and topic an unsubscribe link names."""
        try:
            values = self._tokens.decode(token, filters={"use": "unsubscribe"})
            user_id, topic = int(values["user"]), str(values["topic"])
        except (InvalidArgument, KeyError, ValueError, TypeError) as exc:
            raise InvalidArgument.for_field(
                "token", "is not a valid unsubscribe link", domain=DOMAIN
            ) from exc
        if topic not in TOPICS:
            raise InvalidArgument.for_field("token", "is not a valid unsubscribe link", domain=DOMAIN)
        return user_id, topic

    async def unsubscribe(self, token: str) -> str:
        user_id, topic = self._unsubscribe_token(token)
        async with self._pool.connection() as conn:
            await QUERIES.scalar(conn, "set_preference", id=user_id, topic=topic, enabled=False)
        return topic

    async def describe_unsubscribe(self, token: str) -> tuple[str, bool]:
        """The topic a link turns off and whether the user still gets it; changes nothing (the
        confirmation page's GET: scanners fetch every link in a mail)."""
        user_id, topic = self._unsubscribe_token(token)
        async with self._pool.connection() as conn:
            contact = await QUERIES.one(conn, "user_contact", Contact, id=user_id)
        if contact is None:  # the account was deleted since the mail went out
            raise InvalidArgument.for_field("token", "is not a valid unsubscribe link", domain=DOMAIN)
        return topic, contact.wants(topic)

    async def history(self, user_id: int, limit: int) -> list[Record]:
        """Email and text messages together, newest first."""
        async with self._pool.connection() as conn:
            return await QUERIES.all(conn, "list_user_messages", Record, user_id=user_id, limit=limit)
