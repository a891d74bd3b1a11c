"""Text message templates: every one renders from the catalogue, user input stays on one line and
cannot add lines, bodies stay within three segments, missing values fail, transports are chosen
by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jinja2
import pytest

from workers.sms import minutes_until
from workers.texts.render import (
    MAX_BODY,
    MAX_VALUE,
    SAMPLES,
    SECURITY_CHANGES,
    TEMPLATE_DIR,
    TEMPLATES,
    clean_context,
    one_line,
    render,
)
from workers.texts.transports import make_sms_transport


def test_the_list_agrees_with_the_templates_folder() -> None:
    assert {p.name for p in TEMPLATE_DIR.glob("*.j2")} == {f"{n}.txt.j2" for n in TEMPLATES}
    assert set(SAMPLES) == set(TEMPLATES)


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_renders_from_the_catalogue(name: str) -> None:
    body = render(name, SAMPLES[name], panel_name="Panel")
    assert body.startswith("Panel")
    assert "{" not in body
    assert "}" not in body
    assert len(body) <= MAX_BODY
    assert body == body.strip()


def test_the_verification_code_and_its_lifetime_are_in_the_text() -> None:
    body = render("phone_verification", {"name": "", "code": "004217", "minutes": 10}, panel_name="smm")
    assert body == "smm: your verification code is 004217. It works once, for 10 minutes. Never share it."


@pytest.mark.parametrize("change", SECURITY_CHANGES)
def test_every_security_change_has_its_sentence(change: str) -> None:
    body = render("security_notice", {"change": change, "time": "2026-01-01 00:00 UTC"}, panel_name="smm")
    assert "Not you?" in body
    assert "(2026-01-01 00:00 UTC)" in body


def test_an_unknown_security_change_fails_instead_of_sending_a_blank() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render("security_notice", {"change": "bogus", "time": "now"}, panel_name="smm")


@pytest.mark.parametrize(
    "evil", ["Bot\nCall +1 555 000 0000", "Bot\r\nSTOP", "Bot\u2028x", "Bot\x00\x1bx", "\u202eBot"]
)
def test_user_values_cannot_add_lines_or_control_characters(evil: str) -> None:
    body = render("api_key_created", {"key_name": evil, "key_prefix": "smm_k_1"}, panel_name="smm")
    assert "\n" not in body
    assert "\r" not in body
    assert "\u2028" not in body
    assert "\u202e" not in body
    assert all(c >= " " for c in body)


def test_long_values_and_bodies_are_cut() -> None:
    assert len(one_line("x" * 500)) == MAX_VALUE
    assert one_line("x" * 500).endswith("...")
    lines = ["y" * 200 for _ in range(10)]
    body = render("admin_alert", {"title": "t" * 300, "lines": lines}, panel_name="smm")
    assert len(body) <= MAX_BODY
    assert "(+7 more)" in body or body.endswith("...")


def test_missing_and_none_values_raise() -> None:
    with pytest.raises(jinja2.UndefinedError):
        render("order_completed", {"order_id": 1}, panel_name="smm")
    with pytest.raises(TypeError):
        clean_context({"order_id": None})
    with pytest.raises(TypeError):
        clean_context({"order_id": {"nested": 1}})
    with pytest.raises(LookupError):
        render("no_such_text", {}, panel_name="smm")
    with pytest.raises(ValueError, match="reserved"):
        render("order_completed", {**SAMPLES["order_completed"], "panel_name": "x"}, panel_name="smm")


def test_minutes_left_round_up() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert minutes_until(now + timedelta(minutes=10), now) == 10
    assert minutes_until(now + timedelta(seconds=61), now) == 2
    assert minutes_until(now - timedelta(seconds=5), now) == 1


def test_transports_are_chosen_by_name(tmp_path: object) -> None:
    assert type(make_sms_transport("file", sms_dir=str(tmp_path))).__name__ == "FileSmsTransport"
    with pytest.raises(ValueError, match="needs"):
        make_sms_transport("twilio")
    assert (
        type(
            make_sms_transport("twilio", twilio_account_sid="AC1", twilio_auth_token="t", twilio_from="MG1")
        ).__name__
        == "TwilioTransport"
    )
    with pytest.raises(ValueError, match="unknown SMS transport"):
        make_sms_transport("pigeon")


def test_the_public_names_are_pinned() -> None:
    from workers.texts import transports, twilio_transport

    assert transports.__all__ == [
        "SMS_TRANSPORT_KINDS",
        "PermanentSmsError",
        "TransientSmsError",
        "make_sms_transport",
    ]
    assert twilio_transport.__all__ == ["TwilioTransport"]
