"""Email templates: every message renders in both parts, user input is escaped, subjects stay one
line, missing values fail, the catalogue matches the templates exactly, unsubscribe links appear
only where they may, colours are validated and an unknown locale falls back to English."""

from __future__ import annotations

import email
import re
import unicodedata
from collections.abc import Iterator
from email.message import EmailMessage
from html.parser import HTMLParser
from types import MappingProxyType

import jinja2
import pytest
from jinja2 import nodes
from markupsafe import escape

import workers.mail.catalogue as catalogue
from workers.mail.catalogue import MissingMessageError, en
from workers.mail.render import (
    DEFAULT_COLOR,
    SAMPLES,
    SUBJECT_FRAME,
    TEMPLATE_DIR,
    TEMPLATES,
    TRANSACTIONAL,
    Brand,
    Rendered,
    UnsafeURLError,
    render,
    subject_key,
)
from workers.texts.render import TEMPLATE_DIR as TEXT_TEMPLATE_DIR

BRAND = Brand("SMM Pro", "#1D4ED8", "https://panel.example", "help@panel.example")
HOSTILE = "<script>alert(1)</script> \"quotes\" & 'apos' javascript:alert(1)"
UNSUBSCRIBE = "https://panel.example/unsubscribe?token=abc&list=orders"
ACCOUNT_LINKS = {"verify_email", "password_reset", "email_change"}


def url_keys(name: str) -> set[str]:
    """The context keys that become an href; an order's ``link`` is the customer's target, shown as text."""
    keys = {"order_url", "wallet_url", "admin_url"} | ({"link"} if name in ACCOUNT_LINKS else set())
    return keys & SAMPLES[name].keys()


def text_fields() -> Iterator[tuple[str, str]]:
    for name in TEMPLATES:
        for key in SAMPLES[name]:
            if key not in url_keys(name) and key != "lines":
                yield name, key


class Hrefs(HTMLParser):
    def __init__(self, markup: str) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [value or "" for key, value in attrs if key == "href"]


def sample(template: str, /, **changes: object) -> dict[str, object]:
    return {**SAMPLES[template], **changes}


# --- Every message ------------------------------------------------------------------------------


def test_the_lists_agree_with_the_templates_folder() -> None:
    assert set(SAMPLES) == set(TEMPLATES)
    assert len(set(TEMPLATES)) == len(TEMPLATES)
    assert set(TEMPLATES) >= TRANSACTIONAL
    assert {
        "verify_email",
        "password_reset",
        "email_change",
        "email_change_notice",
        "api_key_created",
        "admin_alert",
        "payment_receipt",
    } == TRANSACTIONAL
    files = {p.name for p in TEMPLATE_DIR.glob("*.j2")}
    messages = {f.split(".")[0] for f in files if not f.startswith(("_", "base."))}
    assert messages == set(TEMPLATES)
    for name in TEMPLATES:
        assert {f"{name}.html.j2", f"{name}.txt.j2"} <= files


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_renders_both_parts(name: str) -> None:
    rendered = render(name, SAMPLES[name], BRAND)
    assert isinstance(rendered, Rendered)
    assert rendered.subject.startswith("SMM Pro: ")
    assert "\n" not in rendered.subject
    assert rendered.html.startswith("<!doctype html>")
    assert rendered.html.rstrip().endswith("</html>")
    assert f"<title>{escape(rendered.subject)}</title>" in rendered.html
    assert "#1d4ed8" in rendered.html
    assert rendered.text.endswith("\n")
    assert not rendered.text.endswith("\n\n")
    assert "\n\n\n" not in rendered.text
    assert "<" not in rendered.text  # no markup in the text part (no sample value holds "<")
    assert "\n-- \n" in rendered.text  # the signature separator keeps its space
    assert "https://panel.example" in rendered.text
    assert "help@panel.example" in rendered.text
    assert 'href="mailto:help@panel.example"' in rendered.html
    for key in url_keys(name):
        url = str(SAMPLES[name][key])
        assert url in Hrefs(rendered.html).hrefs
        assert url in rendered.text
    # Every word came from the catalogue: no placeholder left, no Python repr.
    for part in (rendered.subject, rendered.text, rendered.html):
        assert not re.search(r"\{[a-z_]+\}", part)
        assert "None" not in part
        assert "Undefined" not in part


def test_the_message_shows_what_it_is_about() -> None:
    partial = render("order_partial", SAMPLES["order_partial"], BRAND)
    assert partial.subject == "SMM Pro: Order #1043 partially completed"
    assert "Back to your balance: 1.20 USD" in partial.text
    assert "Not delivered: 1200" in partial.text
    canceled = render("order_canceled", SAMPLES["order_canceled"], BRAND)
    assert "2.00 USD went back to your balance." in canceled.text
    low = render("low_balance", SAMPLES["low_balance"], BRAND)
    assert "3.20 USD" in low.text
    assert "5.00 USD" in low.text
    adjusted = render("balance_adjusted", SAMPLES["balance_adjusted"], BRAND)
    assert "Amount: +10.00 USD" in adjusted.text
    assert "Reason: Compensation for order #1043" in adjusted.text
    key = render("api_key_created", SAMPLES["api_key_created"], BRAND)
    assert "smm_live_4kq9…" in key.text
    assert key.subject == "SMM Pro: New API key: Reseller bot"
    notice = render("email_change_notice", SAMPLES["email_change_notice"], BRAND)
    assert Hrefs(notice.html).hrefs == ["https://panel.example", "mailto:help@panel.example"]  # no link
    alert = render("admin_alert", SAMPLES["admin_alert"], BRAND)
    assert alert.text.startswith("3 things need attention\n")
    assert "Hello" not in alert.text
    lines = SAMPLES["admin_alert"]["lines"]
    assert isinstance(lines, list)
    for line in lines:
        assert f"- {line}" in alert.text
        assert f">{line}</li>" in alert.html


def test_money_is_shown_as_given_never_reformatted() -> None:
    rendered = render("order_placed", sample("order_placed", price="12.5", currency="EUR"), BRAND)
    assert "Price: 12.5 EUR" in rendered.text
    assert "12.50" not in rendered.text


def test_an_empty_name_greets_without_it() -> None:
    rendered = render("verify_email", sample("verify_email", name=""), BRAND)
    assert rendered.text.startswith("Hello,\n")
    assert ">Hello,</p>" in rendered.html


def test_the_parts_compose_into_a_mime_message() -> None:
    for name in TEMPLATES:
        rendered = render(name, SAMPLES[name], BRAND, unsubscribe_url=UNSUBSCRIBE)
        message = EmailMessage()
        message["Subject"] = rendered.subject
        message["To"] = "alex@example.com"
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        parsed = email.message_from_bytes(message.as_bytes())
        assert parsed["Subject"] == rendered.subject


# --- Hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "key"), list(text_fields()))
def test_user_input_is_escaped_in_html_and_plain_in_text(name: str, key: str) -> None:
    rendered = render(name, sample(name, **{key: HOSTILE}), BRAND)
    assert "<script" not in rendered.html
    assert str(escape(HOSTILE)) in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &#34;quotes&#34; &amp; &#39;apos&#39;" in rendered.html
    assert HOSTILE in rendered.text
    assert "&lt;" not in rendered.text
    assert "&amp;" not in rendered.text
    assert not any(href.lower().startswith("javascript:") for href in Hrefs(rendered.html).hrefs)
    assert 'href="javascript' not in rendered.html.lower()


@pytest.mark.parametrize("name", ["order_placed", "order_completed", "order_partial", "order_canceled"])
def test_the_customer_link_of_an_order_is_text_never_an_href(name: str) -> None:
    rendered = render(name, sample(name, link="javascript:alert(document.cookie)"), BRAND)
    assert "javascript:alert(document.cookie)" in rendered.html
    assert not any("javascript" in href for href in Hrefs(rendered.html).hrefs)
    assert "Link: javascript:alert(document.cookie)" in rendered.text


def test_a_javascript_name_is_only_text() -> None:
    rendered = render("verify_email", sample("verify_email", name="javascript:alert(1)"), BRAND)
    assert "Hello javascript:alert(1)," in rendered.html
    assert "javascript" not in " ".join(Hrefs(rendered.html).hrefs)


def test_alert_lines_are_escaped() -> None:
    rendered = render("admin_alert", sample("admin_alert", lines=[HOSTILE, "ok"]), BRAND)
    assert "<script" not in rendered.html
    assert f'<li style="margin:0 0 8px 0;">{escape(HOSTILE)}</li>' in rendered.html
    assert f"- {HOSTILE}\n" in rendered.text


def test_the_brand_is_escaped_too() -> None:
    brand = Brand(HOSTILE, "#000000", "https://panel.example", "")
    rendered = render("order_completed", SAMPLES["order_completed"], brand)
    assert "<script" not in rendered.html
    assert str(escape(HOSTILE)) in rendered.html
    assert HOSTILE in rendered.text
    assert "mailto:" not in rendered.html  # no support address, no support line


@pytest.mark.parametrize("name", TEMPLATES)
def test_links_are_quoted_in_href(name: str) -> None:
    tricky = {key: f"https://panel.example/{key}?a=1&b=\"x\"&c=<y>&d='z'" for key in url_keys(name)}
    rendered = render(name, sample(name, **tricky), BRAND, unsubscribe_url=UNSUBSCRIBE)
    hrefs = Hrefs(rendered.html).hrefs
    for url in tricky.values():
        assert url in hrefs  # the parser decodes the attribute back to the exact URL
        assert url in rendered.text
        assert 'b="x"' not in rendered.html
        assert "c=<y>" not in rendered.html
        assert "a=1&amp;b=&#34;x&#34;&amp;c=&lt;y&gt;&amp;d=&#39;z&#39;" in rendered.html
    if name not in TRANSACTIONAL:
        assert 'href="https://panel.example/unsubscribe?token=abc&amp;list=orders"' in rendered.html


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "/relative/path",
        "//panel.example/x",
        "https:///no-host",
        "java\nscript:alert(1)",
        " https://panel.example/x",
        "https://panel.example/\r\nx",
        "https://panel.example/\u202ex",
    ],
)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURLError):
        render("verify_email", sample("verify_email", link=url), BRAND)
    with pytest.raises(UnsafeURLError):
        render("order_completed", sample("order_completed", order_url=url), BRAND)
    with pytest.raises(UnsafeURLError):
        render("order_completed", SAMPLES["order_completed"], BRAND, unsubscribe_url=url)
    with pytest.raises(UnsafeURLError):
        render("verify_email", SAMPLES["verify_email"], Brand("x", "#000000", url))


@pytest.mark.parametrize(
    "web_url", ["panel.example", "ftp://panel.example", "https://panel.example /x", "https://panel.example\t"]
)
def test_a_refused_link_never_repeats_its_token(web_url: str) -> None:
    """A misconfigured SMM_WEB_URL makes every account link unsafe; the error goes to the log and
    the dead letter's reason (and from there into the admins' alerts), so it must not carry the
    live single-use token of the link."""
    link = f"{web_url}/reset-password?token=smm_l_LiveSecretToken"
    with pytest.raises(UnsafeURLError) as refused:
        render("password_reset", sample("password_reset", link=link), BRAND)
    assert "LiveSecretToken" not in str(refused.value)
    assert "reset-password" in str(refused.value)  # still says which URL


def test_a_bad_support_address_is_refused() -> None:
    with pytest.raises(UnsafeURLError):
        render("verify_email", SAMPLES["verify_email"], Brand("x", "#000000", "https://p.example", "a b"))


# --- Subjects ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize(
    "evil", ["x\r\nBcc: evil@example.com", "x\nBcc: evil@example.com", "x\u2028y\x85z\x00\x1b[31m\u202e"]
)
def test_a_subject_is_one_line_whatever_the_values(name: str, evil: str) -> None:
    context = {
        key: (evil if isinstance(value, str) and key not in url_keys(name) else value)
        for key, value in SAMPLES[name].items()
    }
    brand = Brand(f"Panel{evil}", "#000000", "https://panel.example")
    subject = render(name, context, brand).subject
    assert not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in subject)
    assert "\u202e" not in subject
    assert "  " not in subject
    assert subject == subject.strip()
    message = EmailMessage()
    message["To"] = "alex@example.com"
    message["Subject"] = subject
    message.set_content("x")
    parsed = email.message_from_bytes(message.as_bytes())
    assert parsed["Bcc"] is None
    assert parsed.get_all("To") == ["alex@example.com"]


def test_the_subject_keeps_user_text_on_one_line() -> None:
    context = sample("api_key_created", key_name="bot\r\nBcc: evil@example.com")
    assert (
        render("api_key_created", context, BRAND).subject == "SMM Pro: New API key: bot Bcc: evil@example.com"
    )


# --- Missing values ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "key"), [(name, key) for name in TEMPLATES for key in SAMPLES[name]])
def test_a_missing_context_value_raises(name: str, key: str) -> None:
    context = dict(SAMPLES[name])
    del context[key]
    with pytest.raises(jinja2.UndefinedError):
        render(name, context, BRAND)


@pytest.mark.parametrize("name", TEMPLATES)
def test_none_is_not_a_value(name: str) -> None:
    key = sorted(SAMPLES[name])[0]
    with pytest.raises(TypeError, match="None"):
        render(name, sample(name, **{key: None}), BRAND)


def test_unknown_templates_and_reserved_keys_raise() -> None:
    with pytest.raises(LookupError, match="no email template"):
        render("welcome", {}, BRAND)
    with pytest.raises(ValueError, match="reserved"):
        render("verify_email", sample("verify_email", brand="x"), BRAND)
    with pytest.raises(ValueError, match="reserved"):
        render("order_placed", sample("order_placed", unsubscribe_url="https://x.example"), BRAND)


# --- The catalogue -----------------------------------------------------------------------------


def translation_calls() -> list[tuple[str, str, set[str]]]:
    """(template file, key, keyword names) for every t(...) call in every template."""
    env = jinja2.Environment(autoescape=True)  # only parsed, never rendered
    calls = []
    # The catalogue is shared with the text messages (workers/texts/templates).
    for path in sorted([*TEMPLATE_DIR.glob("*.j2"), *TEXT_TEMPLATE_DIR.glob("*.j2")]):
        tree = env.parse(path.read_text(encoding="utf-8"))
        for call in tree.find_all(nodes.Call):
            if isinstance(call.node, nodes.Name) and call.node.name == "t":
                assert len(call.args) == 1, f"{path.name}: t() takes the key and keywords only"
                assert call.dyn_args is None
                assert call.dyn_kwargs is None
                key = call.args[0]
                assert isinstance(key, nodes.Const), f"{path.name}: t() with a computed key"
                assert isinstance(key.value, str)
                calls.append((path.name, key.value, {kw.key for kw in call.kwargs}))
    return calls


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", text))


def test_every_key_the_templates_use_exists_and_none_is_unused() -> None:
    calls = translation_calls()
    assert calls
    used = {key for _, key, _ in calls} | {SUBJECT_FRAME} | {subject_key(n) for n in TEMPLATES}
    missing = used - en.MESSAGES.keys()
    unused = en.MESSAGES.keys() - used
    assert not missing, f"keys used but not in en.py: {sorted(missing)}"
    assert not unused, f"keys in en.py that nothing uses: {sorted(unused)}"


def test_every_call_gives_exactly_the_placeholders_of_its_text() -> None:
    for file, key, given in translation_calls():
        assert placeholders(en.MESSAGES[key]) == given, f"{file}: t({key!r}) gives {sorted(given)}"
    assert placeholders(en.MESSAGES[SUBJECT_FRAME]) == {"panel_name", "subject"}
    for name in TEMPLATES:
        needed = placeholders(en.MESSAGES[subject_key(name)])
        assert needed <= SAMPLES[name].keys(), f"{name}.subject needs {sorted(needed)}"


def test_every_catalogue_matches_english() -> None:
    assert "en" in catalogue.CATALOGUES
    for locale, messages in catalogue.CATALOGUES.items():
        assert locale == locale.lower()
        assert messages.keys() <= en.MESSAGES.keys(), f"{locale}: keys English does not have"
        for key, text in messages.items():
            assert placeholders(text) == placeholders(en.MESSAGES[key]), f"{locale}: {key}"
            assert "<" not in text, f"{locale}: {key} is plain text, never HTML"


def test_a_missing_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingMessageError):
        catalogue.message("en", "order.nope")
    monkeypatch.delitem(en.MESSAGES, "order.view")
    with pytest.raises(MissingMessageError, match=r"order\.view"):
        render("order_completed", SAMPLES["order_completed"], BRAND)


# --- Unsubscribe -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in TEMPLATES if n not in TRANSACTIONAL])
def test_notifications_show_the_unsubscribe_link_only_when_given(name: str) -> None:
    without = render(name, SAMPLES[name], BRAND)
    assert "nsubscribe" not in without.html
    assert "To stop these emails" not in without.text
    with_link = render(name, SAMPLES[name], BRAND, unsubscribe_url=UNSUBSCRIBE)
    assert UNSUBSCRIBE in Hrefs(with_link.html).hrefs
    assert ">Unsubscribe from these emails</a>" in with_link.html
    assert f"To stop these emails, open {UNSUBSCRIBE}\n" in with_link.text


@pytest.mark.parametrize("name", sorted(TRANSACTIONAL))
def test_transactional_messages_never_have_one(name: str) -> None:
    rendered = render(name, SAMPLES[name], BRAND, unsubscribe_url=UNSUBSCRIBE)
    assert UNSUBSCRIBE not in rendered.html
    assert "unsubscribe" not in rendered.html.lower()
    assert UNSUBSCRIBE not in rendered.text
    assert "To stop these emails" not in rendered.text


# --- Brand -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("#1D4ED8", "#1d4ed8"),
        (" #abcdef ", "#abcdef"),
        ("#000000", "#000000"),
        ("red", DEFAULT_COLOR),
        ("#abc", DEFAULT_COLOR),
        ("#abcdefa", DEFAULT_COLOR),
        ("abcdef", DEFAULT_COLOR),
        ("#ggggggg", DEFAULT_COLOR),
        ("#123456;background:url(https://evil.example/x)", DEFAULT_COLOR),
        ('#123456" onload="alert(1)', DEFAULT_COLOR),
        ("", DEFAULT_COLOR),
    ],
)
def test_colours_are_validated(given: str, kept: str) -> None:
    brand = Brand("P", given, "https://panel.example")
    assert brand.primary_color == kept
    rendered = render("order_completed", SAMPLES["order_completed"], brand)
    assert f"background-color:{kept};" in rendered.html
    assert "evil.example" not in rendered.html
    assert "onload" not in rendered.html


def test_button_text_contrasts_with_the_colour() -> None:
    assert Brand("P", "#ffcc00", "https://p.example").on_primary_color == "#111111"
    assert Brand("P", "#ffffff", "https://p.example").on_primary_color == "#111111"
    assert Brand("P", "#1d4ed8", "https://p.example").on_primary_color == "#ffffff"
    assert Brand("P", "#000000", "https://p.example").on_primary_color == "#ffffff"


# --- Locales -----------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["xx", "", "EN", "en-US", "en_GB", "zz-ZZ", "../../etc"])
def test_unknown_locales_fall_back_to_english(locale: str) -> None:
    for name in TEMPLATES:
        assert render(name, SAMPLES[name], BRAND, locale=locale) == render(name, SAMPLES[name], BRAND)
    assert '<html lang="en">' in render("verify_email", SAMPLES["verify_email"], BRAND, locale=locale).html


def test_a_locale_is_used_and_falls_back_key_by_key(monkeypatch: pytest.MonkeyPatch) -> None:
    french = {"verify_email.subject": "Confirmez votre adresse", "common.greeting_named": "Bonjour {name},"}
    monkeypatch.setattr(
        catalogue, "CATALOGUES", MappingProxyType({"en": en.MESSAGES, "fr": MappingProxyType(french)})
    )
    rendered = render("verify_email", SAMPLES["verify_email"], BRAND, locale="fr-CA")
    assert rendered.subject == "SMM Pro: Confirmez votre adresse"
    assert rendered.text.startswith("Bonjour Alex,\n")
    assert "Confirm my address" in rendered.html  # not translated yet: English
    assert '<html lang="fr">' in rendered.html


def test_smm_email_preview_prints_each_email(capsys: pytest.CaptureFixture[str]) -> None:
    from core.config import Settings
    from ops.email_preview import preview

    settings = Settings(panel_name="Boost Panel")
    for name in TEMPLATES:
        assert preview(settings, name) == 0
        out = capsys.readouterr().out
        assert out.startswith("Subject: Boost Panel: ")
    assert preview(settings, "order_completed", html=True) == 0
    assert "<html" in capsys.readouterr().out.lower()
    assert preview(settings, "no_such_email") == 2
    assert "known:" in capsys.readouterr().err
