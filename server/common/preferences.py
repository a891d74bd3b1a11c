"""The schema of a user's ``notification_preferences`` map: checked by the accounts service when a
user saves it, read by the notifications service when it plans messages.

    {"email": {"order_placed": bool, "order_finished": bool, "refill_done": bool,
               "low_balance": bool, "balance_adjusted": bool},
     "sms": {"order_finished": bool, "security": bool, "admin_alert": bool},
     "api_order_emails": bool,          # order emails for orders placed with API keys / the reseller endpoint
     "api_order_sms": bool,             # the same for order texts
     "low_balance_threshold": "5.00"}   # a decimal string; "0" turns the low-balance email off

Every key is optional (unset takes the operator's default); other top-level keys are kept and
ignored, so a front end may store its own settings there.
"""

from __future__ import annotations

from collections.abc import Mapping

from server.common.errors import FieldViolation, InvalidArgument
from server.common.money import parse_micros

EMAIL_TOPICS: tuple[str, ...] = (
    "order_placed",
    "order_finished",
    "refill_done",
    "low_balance",
    "balance_adjusted",
)
# order_finished: an order ended; security: password, address, two-factor and API key changes;
# admin_alert: staff alerts (admins only).
SMS_TOPICS: tuple[str, ...] = ("order_finished", "security", "admin_alert")
CHANNEL_TOPICS: Mapping[str, tuple[str, ...]] = {"email": EMAIL_TOPICS, "sms": SMS_TOPICS}
FLAGS: tuple[str, ...] = ("api_order_emails", "api_order_sms")
THRESHOLD = "low_balance_threshold"


def violations(preferences: Mapping[str, object], *, field: str) -> list[FieldViolation]:
    """What is wrong with a preferences map, each named ``<field>.<key>[.<topic>]``."""
    found: list[FieldViolation] = []
    for channel, topics in CHANNEL_TOPICS.items():
        if channel not in preferences:
            continue
        chosen = preferences[channel]
        if not isinstance(chosen, Mapping):
            found.append(FieldViolation(f"{field}.{channel}", "must be an object of topic: true|false"))
            continue
        for topic, value in chosen.items():
            if topic not in topics:
                found.append(
                    FieldViolation(f"{field}.{channel}.{topic}", f"must be one of {', '.join(topics)}")
                )
            elif not isinstance(value, bool):
                found.append(FieldViolation(f"{field}.{channel}.{topic}", "must be true or false"))
    for flag in FLAGS:
        if flag in preferences and not isinstance(preferences[flag], bool):
            found.append(FieldViolation(f"{field}.{flag}", "must be true or false"))
    if THRESHOLD in preferences and not _is_amount(preferences[THRESHOLD]):
        found.append(FieldViolation(f"{field}.{THRESHOLD}", 'must be a decimal string like "5.00"'))
    return found


def _is_amount(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_micros(value, field=THRESHOLD)
    except InvalidArgument:
        return False
    return True
