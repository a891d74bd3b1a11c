"""New-order validation: a valid order of every service type, and every rule refusing bad input
field by field (server/orders/validation.py; PROTOCOL.md §3.2)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.common.errors import FieldViolation, InvalidArgument
from server.orders import validation
from server.orders.validation import (
    DELAYS,
    MAX_BILLABLE,
    SERVICE_TYPES,
    OrderInput,
    ServiceTerms,
    ValidOrder,
    validate_order,
)

TODAY = date(2030, 6, 15)
LINK = "https://instagram.com/p/Cx1"
NOT_URL = "must be an http or https URL, like https://example.com/post"
NO_DRIP = "this service does not support drip-feed"


def terms(type_: str = "DEFAULT", lo: int = 10, hi: int = 10_000, *, drip: bool = False) -> ServiceTerms:
    return ServiceTerms(type=type_, min_quantity=lo, max_quantity=hi, dripfeed=drip)


@dataclass(frozen=True)
class Ok:
    id: str
    terms: ServiceTerms
    order: OrderInput
    expected: ValidOrder


def ok(
    link: str, quantity: int, billable: int, upstream: dict[str, str], runs: int = 1, interval: int = 0
) -> ValidOrder:
    return ValidOrder(
        link=link, quantity=quantity, runs=runs, interval=interval, billable=billable, upstream=upstream
    )


VALID = [
    Ok(
        "default",
        terms(),
        OrderInput(link=f"  {LINK}  ", quantity=100, comments="ignored", username="ignored"),
        ok(LINK, 100, 100, {"link": LINK, "quantity": "100"}),
    ),
    Ok(
        "default-at-min",
        terms(),
        OrderInput(link=LINK, quantity=10),
        ok(LINK, 10, 10, {"link": LINK, "quantity": "10"}),
    ),
    Ok(
        "default-at-max-localhost",
        terms(),
        OrderInput(link="http://localhost:8080/a?b=c#d", quantity=10_000),
        ok("http://localhost:8080/a?b=c#d", 10_000, 10_000, {"link": "http://localhost:8080/a?b=c#d", "quantity": "10000"}),
    ),
    Ok(
        "default-port-bounds",
        terms(),
        OrderInput(link="https://example.com:65535/p", quantity=10),
        ok("https://example.com:65535/p", 10, 10, {"link": "https://example.com:65535/p", "quantity": "10"}),
    ),
    Ok(
        "default-port-one",
        terms(),
        OrderInput(link="http://example.com:1", quantity=10),
        ok("http://example.com:1", 10, 10, {"link": "http://example.com:1", "quantity": "10"}),
    ),
    Ok(
        "default-idn-path-and-trailing-dot",
        terms(),
        OrderInput(link="HTTPS://ru.wikipedia.org./wiki/Кошка", quantity=50),
        ok("HTTPS://ru.wikipedia.org./wiki/Кошка", 50, 50, {"link": "HTTPS://ru.wikipedia.org./wiki/Кошка", "quantity": "50"}),
    ),
    Ok(
        "default-dripfeed",
        terms(drip=True),
        OrderInput(link=LINK, quantity=100, runs=5, interval=30),
        ok(LINK, 100, 500, {"link": LINK, "quantity": "100", "runs": "5", "interval": "30"}, runs=5, interval=30),
    ),
    Ok(
        "default-dripfeed-total-exactly-max",
        terms(drip=True),
        OrderInput(link=LINK, quantity=10, runs=1000, interval=1440),
        ok(LINK, 10, 10_000, {"link": LINK, "quantity": "10", "runs": "1000", "interval": "1440"}, runs=1000, interval=1440),
    ),
    Ok(
        "package-ignores-quantity",
        terms("PACKAGE", 1, 1),
        OrderInput(link=LINK, quantity=7),
        ok(LINK, 0, 1000, {"link": LINK}),
    ),
    Ok(
        "seo",
        terms("SEO"),
        OrderInput(link=LINK, quantity=200, keywords="smm panel\r\n\r\n  cheap likes \n"),
        ok(LINK, 200, 200, {"link": LINK, "quantity": "200", "keywords": "smm panel\ncheap likes"}),
    ),
    Ok(
        "custom-comments",
        terms("CUSTOM_COMMENTS", 1, 100),
        OrderInput(link=LINK, comments="Nice!\r\nGreat\tpost\n\n  Wow  \n"),
        ok(LINK, 3, 3, {"link": LINK, "comments": "Nice!\nGreat\tpost\nWow"}),
    ),
    Ok(
        "custom-comments-with-matching-quantity",
        terms("CUSTOM_COMMENTS", 1, 100),
        OrderInput(link=LINK, quantity=2, comments="a\nb"),
        ok(LINK, 2, 2, {"link": LINK, "comments": "a\nb"}),
    ),
    Ok(
        "custom-comments-package",
        terms("CUSTOM_COMMENTS_PACKAGE", 1, 1),
        OrderInput(link=LINK, quantity=99, comments="one\ntwo\nthree"),
        ok(LINK, 0, 1000, {"link": LINK, "comments": "one\ntwo\nthree"}),
    ),
    Ok(
        "mentions",
        terms("MENTIONS"),
        OrderInput(link=LINK, quantity=50, usernames=" alice \r\nbob"),
        ok(LINK, 50, 50, {"link": LINK, "quantity": "50", "usernames": "alice\nbob"}),
    ),
    Ok(
        "mentions-with-hashtags",
        terms("MENTIONS_WITH_HASHTAGS"),
        OrderInput(link=LINK, quantity=60, usernames="alice\nbob", hashtags="#a\n #b "),
        ok(LINK, 60, 60, {"link": LINK, "quantity": "60", "usernames": "alice\nbob", "hashtags": "#a\n#b"}),
    ),
    Ok(
        "mentions-custom-list",
        terms("MENTIONS_CUSTOM_LIST", 1, 100),
        OrderInput(link=LINK, usernames="alice\n\nbob\ncarol\n"),
        ok(LINK, 3, 3, {"link": LINK, "usernames": "alice\nbob\ncarol"}),
    ),
    Ok(
        "mentions-hashtag",
        terms("MENTIONS_HASHTAG"),
        OrderInput(link=LINK, quantity=70, hashtag=" #travel "),
        ok(LINK, 70, 70, {"link": LINK, "quantity": "70", "hashtag": "#travel"}),
    ),
    Ok(
        "mentions-user-followers",
        terms("MENTIONS_USER_FOLLOWERS"),
        OrderInput(link=LINK, quantity=80, username="natgeo"),
        ok(LINK, 80, 80, {"link": LINK, "quantity": "80", "username": "natgeo"}),
    ),
    Ok(
        "mentions-media-likers",
        terms("MENTIONS_MEDIA_LIKERS"),
        OrderInput(link=LINK, quantity=90, media=" https://instagram.com/p/Other "),
        ok(LINK, 90, 90, {"link": LINK, "quantity": "90", "media": "https://instagram.com/p/Other"}),
    ),
    Ok(
        "comment-likes",
        terms("COMMENT_LIKES"),
        OrderInput(link=LINK, quantity=100, username="commenter"),
        ok(LINK, 100, 100, {"link": LINK, "quantity": "100", "username": "commenter"}),
    ),
    Ok(
        "comment-replies",
        terms("COMMENT_REPLIES", 1, 100),
        OrderInput(link=LINK, username="owner", comments="Agreed\nSame here"),
        ok(LINK, 2, 2, {"link": LINK, "username": "owner", "comments": "Agreed\nSame here"}),
    ),
    Ok(
        "poll",
        terms("POLL"),
        OrderInput(link=LINK, quantity=500, answer_number=" 02 "),
        ok(LINK, 500, 500, {"link": LINK, "quantity": "500", "answer_number": "2"}),
    ),
    Ok(
        "invites-from-groups",
        terms("INVITES_FROM_GROUPS"),
        OrderInput(link=LINK, quantity=40, groups="https://t.me/a\nhttps://t.me/b"),
        ok(LINK, 40, 40, {"link": LINK, "quantity": "40", "groups": "https://t.me/a\nhttps://t.me/b"}),
    ),
    Ok(
        "subscriptions",
        terms("SUBSCRIPTIONS", 50, 5000),
        OrderInput(link="not a link", quantity=3, username=" natgeo ", min=100, max=200, posts=10, delay=30),
        ok("", 0, 2000, {"username": "natgeo", "min": "100", "max": "200", "posts": "10", "delay": "30"}),
    ),
    Ok(
        "subscriptions-old-posts-expiry",
        terms("SUBSCRIPTIONS", 50, 5000),
        OrderInput(username="natgeo", min=200, max=200, posts=10, old_posts=5, expiry="1/7/2030"),
        ok(
            "",
            0,
            3000,
            {"username": "natgeo", "min": "200", "max": "200", "posts": "10", "delay": "0", "old_posts": "5", "expiry": "01/07/2030"},
        ),
    ),
    Ok(
        "subscriptions-posts-left-out-take-the-default",
        replace(terms("SUBSCRIPTIONS", 50, 5000), default_posts=30),
        OrderInput(username="natgeo", min=100, max=200, old_posts=30),
        ok("", 0, 200 * 60, {"username": "natgeo", "min": "100", "max": "200", "posts": "30", "delay": "0", "old_posts": "30"}),
    ),
    Ok(
        "subscriptions-posts-given-beat-the-default",
        replace(terms("SUBSCRIPTIONS", 50, 5000), default_posts=30),
        OrderInput(username="natgeo", min=100, max=200, posts=500),
        ok("", 0, 200 * 500, {"username": "natgeo", "min": "100", "max": "200", "posts": "500", "delay": "0"}),
    ),
    Ok(
        "subscriptions-expiry-today",
        terms("SUBSCRIPTIONS", 1, 100),
        OrderInput(username="u", min=1, max=100, posts=10_000, old_posts=10_000, delay=600, expiry="15/06/2030"),
        ok(
            "",
            0,
            2_000_000,
            {"username": "u", "min": "1", "max": "100", "posts": "10000", "delay": "600", "old_posts": "10000", "expiry": "15/06/2030"},
        ),
    ),
    Ok(
        "web-traffic-google-keyword",
        terms("WEB_TRAFFIC", 100, 100_000),
        OrderInput(
            link=LINK, quantity=1000, country=" us ", device="5", type_of_traffic="1",
            google_keyword="buy followers", referring_url="https://ignored.example",
        ),
        ok(
            LINK, 1000, 1000,
            {"link": LINK, "quantity": "1000", "country": "US", "device": "5", "type_of_traffic": "1", "google_keyword": "buy followers"},
        ),
    ),
    Ok(
        "web-traffic-referrer-dripfeed",
        terms("WEB_TRAFFIC", 100, 100_000, drip=True),
        OrderInput(
            link=LINK, quantity=1000, runs=10, interval=60, country="de", device="2", type_of_traffic="2",
            google_keyword="ignored", referring_url="https://news.example.com/a",
        ),
        ok(
            LINK, 1000, 10_000,
            {
                "link": LINK, "quantity": "1000", "country": "DE", "device": "2", "type_of_traffic": "2",
                "referring_url": "https://news.example.com/a", "runs": "10", "interval": "60",
            },
            runs=10,
            interval=60,
        ),
    ),
    Ok(
        "web-traffic-blank-referrer",
        terms("WEB_TRAFFIC", 100, 100_000),
        OrderInput(link=LINK, quantity=100, country="GB", device="1", type_of_traffic="3"),
        ok(LINK, 100, 100, {"link": LINK, "quantity": "100", "country": "GB", "device": "1", "type_of_traffic": "3"}),
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_valid_order(case: Ok) -> None:
    assert validate_order(case.terms, case.order, today=TODAY) == case.expected


def test_every_type_has_a_valid_case() -> None:
    assert {c.terms.type for c in VALID} == SERVICE_TYPES


# --- refusals ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    id: str
    terms: ServiceTerms
    order: OrderInput
    violations: list[tuple[str, str]]


def d(**kw: object) -> OrderInput:
    """A valid DEFAULT order with some fields replaced."""
    base: dict[str, object] = {"link": LINK, "quantity": 100}
    base.update(kw)
    return OrderInput(**base)  # type: ignore[arg-type]


def sub(**kw: object) -> OrderInput:
    """A valid subscription with some fields replaced."""
    base: dict[str, object] = {"username": "natgeo", "min": 100, "max": 200, "posts": 10}
    base.update(kw)
    return OrderInput(**base)  # type: ignore[arg-type]


def web(**kw: object) -> OrderInput:
    base: dict[str, object] = {
        "link": LINK,
        "quantity": 100,
        "country": "US",
        "device": "1",
        "type_of_traffic": "3",
    }
    base.update(kw)
    return OrderInput(**base)  # type: ignore[arg-type]


BETWEEN = "must be between 10 and 10000"
SUBS = terms("SUBSCRIPTIONS", 50, 5000)
WEB = terms("WEB_TRAFFIC", 100, 100_000)
CC = terms("CUSTOM_COMMENTS", 2, 5)
LONG = "x" * 501

BAD = [
    # link
    Bad("link-missing", terms(), d(link=""), [("link", "is required")]),
    Bad("link-blank", terms(), d(link=" \t "), [("link", "is required")]),
    Bad("link-too-long", terms(), d(link="https://example.com/" + "a" * 2029), [("link", "must be at most 2048 bytes (UTF-8)")]),
    Bad("link-too-many-bytes", terms(), d(link="https://example.com/" + "я" * 1015), [("link", "must be at most 2048 bytes (UTF-8)")]),
    Bad("link-space", terms(), d(link="https://exa mple.com/p"), [("link", "must not contain spaces or control characters")]),
    Bad("link-nbsp", terms(), d(link="https://example.com/\u00a0p"), [("link", "must not contain spaces or control characters")]),
    Bad("link-nul", terms(), d(link="https://example.com/\x00"), [("link", "must not contain spaces or control characters")]),
    # Invisible characters make a link read differently than it goes: zero-width, bidi overrides, C1.
    Bad("link-zero-width", terms(), d(link="https://exam\u200bple.com/p"), [("link", "must not contain spaces or control characters")]),
    Bad("link-bidi-override", terms(), d(link="https://example.com/\u202ep"), [("link", "must not contain spaces or control characters")]),
    Bad("link-c1", terms(), d(link="https://example.com/\x9bp"), [("link", "must not contain spaces or control characters")]),
    Bad("link-bom", terms(), d(link="\ufeffhttps://example.com/p"), [("link", "must not contain spaces or control characters")]),
    Bad("link-no-scheme", terms(), d(link="instagram.com/p/x"), [("link", NOT_URL)]),
    Bad("link-ftp", terms(), d(link="ftp://example.com/x"), [("link", NOT_URL)]),
    Bad("link-javascript", terms(), d(link="javascript:alert(1)"), [("link", NOT_URL)]),
    Bad("link-no-dot", terms(), d(link="https://intranet/x"), [("link", NOT_URL)]),
    Bad("link-empty-label", terms(), d(link="https://a..com/x"), [("link", NOT_URL)]),
    Bad("link-no-host", terms(), d(link="https:///path.com"), [("link", NOT_URL)]),
    Bad("link-bad-port", terms(), d(link="https://example.com:99999/"), [("link", NOT_URL)]),
    Bad("link-junk-port", terms(), d(link="https://example.com:ab/"), [("link", NOT_URL)]),
    # urlsplit reads an empty port as "no port" and takes port 0: neither is a port to send to.
    Bad("link-empty-port", terms(), d(link="https://instagram.com:/p/abc"), [("link", NOT_URL)]),
    Bad("link-empty-port-no-path", terms(), d(link="https://instagram.com:"), [("link", NOT_URL)]),
    Bad("link-empty-port-userinfo", terms(), d(link="https://user:pw@instagram.com:/p"), [("link", NOT_URL)]),
    Bad("link-port-zero", terms(), d(link="https://example.com:0/"), [("link", NOT_URL)]),
    Bad("link-port-zeros", terms(), d(link="https://example.com:000/"), [("link", NOT_URL)]),
    Bad("link-port-65536", terms(), d(link="https://example.com:65536/"), [("link", NOT_URL)]),
    Bad("link-port-signed", terms(), d(link="https://example.com:+443/"), [("link", NOT_URL)]),
    Bad("link-port-negative", terms(), d(link="https://example.com:-1/"), [("link", NOT_URL)]),
    Bad("link-port-underscore", terms(), d(link="https://example.com:4_43/"), [("link", NOT_URL)]),
    Bad("link-port-non-ascii-digits", terms(), d(link="https://example.com:\u0664\u0664\u0663/"), [("link", NOT_URL)]),
    Bad("link-media-empty-port", terms("MENTIONS_MEDIA_LIKERS"), d(media="https://instagram.com:/p/x"), [("media", NOT_URL)]),
    Bad("link-broken-ipv6", terms(), d(link="https://[::1/x"), [("link", NOT_URL)]),
    Bad("link-ipv6", terms(), d(link="https://[::1]/x"), [("link", NOT_URL)]),
    Bad("package-link-missing", terms("PACKAGE", 1, 1), OrderInput(), [("link", "is required")]),
    # quantity
    Bad("quantity-missing", terms(), d(quantity=0), [("quantity", "is required")]),
    Bad("quantity-below-min", terms(), d(quantity=9), [("quantity", BETWEEN)]),
    Bad("quantity-above-max", terms(), d(quantity=10_001), [("quantity", BETWEEN)]),
    Bad("quantity-negative", terms(), d(quantity=-100), [("quantity", BETWEEN)]),
    Bad("quantity-over-safe-limit", terms("DEFAULT", 1, 10**15), d(quantity=10**12 + 1), [("quantity", "must be between 1 and 1000000000000")]),
    Bad("quantity-zero-min-terms", terms("DEFAULT", 0, 10), d(quantity=-1), [("quantity", "must be between 1 and 10")]),
    # drip-feed
    Bad("drip-not-offered", terms(), d(runs=5, interval=30), [("runs", NO_DRIP), ("interval", NO_DRIP)]),
    Bad("drip-not-offered-runs-only", terms(), d(runs=5), [("runs", NO_DRIP)]),
    Bad("drip-not-offered-interval-only", terms(), d(interval=30), [("interval", NO_DRIP)]),
    Bad("drip-package", terms("PACKAGE", 1, 1, drip=True), OrderInput(link=LINK, runs=2, interval=5), [("runs", NO_DRIP), ("interval", NO_DRIP)]),
    Bad("drip-custom-comments", terms("CUSTOM_COMMENTS", 1, 9, drip=True), OrderInput(link=LINK, comments="a", runs=2, interval=5), [("runs", NO_DRIP), ("interval", NO_DRIP)]),
    Bad("drip-runs-without-interval", terms(drip=True), d(runs=5), [("interval", "is required with runs")]),
    Bad("drip-interval-without-runs", terms(drip=True), d(interval=30), [("runs", "is required with interval")]),
    Bad("drip-one-run", terms(drip=True), d(runs=1, interval=30), [("runs", "must be between 2 and 1000")]),
    Bad("drip-too-many-runs", terms(drip=True), d(quantity=10, runs=1001, interval=30), [("runs", "must be between 2 and 1000")]),
    Bad("drip-negative-runs", terms(drip=True), d(runs=-2, interval=30), [("runs", "must be between 2 and 1000")]),
    Bad("drip-interval-too-long", terms(drip=True), d(runs=2, interval=1441), [("interval", "must be between 1 and 1440")]),
    Bad("drip-interval-negative", terms(drip=True), d(runs=2, interval=-5), [("interval", "must be between 1 and 1440")]),
    Bad("drip-total-over-max", terms(drip=True), d(quantity=3000, runs=4, interval=30), [("quantity", "quantity x runs (12000) must be at most 10000")]),
    Bad("drip-per-run-below-min", terms(drip=True), d(quantity=5, runs=4, interval=30), [("quantity", BETWEEN)]),
    # lines, and quantity counted from them
    Bad("comments-missing", CC, OrderInput(link=LINK, comments=" \r\n\n "), [("comments", "is required")]),
    Bad("comments-quantity-mismatch", CC, OrderInput(link=LINK, quantity=3, comments="a\nb\r\n\nc\nd"), [("comments", "must have as many lines as the quantity (3)")]),
    Bad("comments-quantity-negative", CC, OrderInput(link=LINK, quantity=-1, comments="a\nb"), [("comments", "must have as many lines as the quantity (-1)")]),
    Bad("comments-too-few", CC, OrderInput(link=LINK, comments="only one"), [("comments", "must have between 2 and 5 lines (it has 1)")]),
    Bad("comments-too-many", CC, OrderInput(link=LINK, comments="1\n2\n3\n4\n5\n6"), [("comments", "must have between 2 and 5 lines (it has 6)")]),
    Bad("comments-line-too-long", CC, OrderInput(link=LINK, comments=f"ok\n\n{LONG}"), [("comments", "line 3 is longer than 500 characters")]),
    Bad("comments-control-char", CC, OrderInput(link=LINK, comments="ok\nbad\x00nul"), [("comments", "line 2 contains control characters")]),
    Bad("comments-bare-cr", CC, OrderInput(link=LINK, comments="one\rtwo\nthree"), [("comments", "line 1 contains control characters")]),
    Bad("comments-over-10000-lines", terms("CUSTOM_COMMENTS", 1, 10**6), OrderInput(link=LINK, comments="c\n" * 10_001), [("comments", "must have at most 10000 lines")]),
    Bad("cc-package-comments-missing", terms("CUSTOM_COMMENTS_PACKAGE", 1, 1), OrderInput(link=LINK), [("comments", "is required")]),
    Bad("custom-list-missing", terms("MENTIONS_CUSTOM_LIST", 1, 100), OrderInput(link=LINK), [("usernames", "is required")]),
    Bad("custom-list-mismatch", terms("MENTIONS_CUSTOM_LIST", 1, 100), OrderInput(link=LINK, quantity=1, usernames="a\nb"), [("usernames", "must have as many lines as the quantity (1)")]),
    Bad("custom-list-too-few", terms("MENTIONS_CUSTOM_LIST", 3, 100), OrderInput(link=LINK, usernames="a\nb"), [("usernames", "must have between 3 and 100 lines (it has 2)")]),
    Bad("replies-missing-both", terms("COMMENT_REPLIES", 1, 100), OrderInput(link=LINK), [("comments", "is required"), ("username", "is required")]),
    Bad("replies-too-many", terms("COMMENT_REPLIES", 1, 1), OrderInput(link=LINK, username="u", comments="a\nb"), [("comments", "must have between 1 and 1 lines (it has 2)")]),
    # type-specific fields
    Bad("seo-missing", terms("SEO"), OrderInput(link=LINK), [("quantity", "is required"), ("keywords", "is required")]),
    Bad("seo-long-keyword", terms("SEO"), d(keywords=f"fine\n{LONG}"), [("keywords", "line 2 is longer than 500 characters")]),
    Bad("mentions-missing", terms("MENTIONS"), d(), [("usernames", "is required")]),
    Bad("mentions-hashtags-missing", terms("MENTIONS_WITH_HASHTAGS"), d(), [("usernames", "is required"), ("hashtags", "is required")]),
    Bad("mentions-hashtags-one-missing", terms("MENTIONS_WITH_HASHTAGS"), d(usernames="a"), [("hashtags", "is required")]),
    Bad("hashtag-missing", terms("MENTIONS_HASHTAG"), d(hashtag="  "), [("hashtag", "is required")]),
    Bad("hashtag-too-long", terms("MENTIONS_HASHTAG"), d(hashtag="#" + "a" * 1000), [("hashtag", "must be at most 1000 characters")]),
    Bad("hashtag-two-lines", terms("MENTIONS_HASHTAG"), d(hashtag="#a\n#b"), [("hashtag", "must be one line without control characters")]),
    Bad("followers-missing", terms("MENTIONS_USER_FOLLOWERS"), d(), [("username", "is required")]),
    Bad("media-missing", terms("MENTIONS_MEDIA_LIKERS"), d(), [("media", "is required")]),
    Bad("media-not-url", terms("MENTIONS_MEDIA_LIKERS"), d(media="instagram.com/p/x"), [("media", NOT_URL)]),
    Bad("comment-likes-missing", terms("COMMENT_LIKES"), d(), [("username", "is required")]),
    Bad("comment-likes-control", terms("COMMENT_LIKES"), d(username="a\x07b"), [("username", "must be one line without control characters")]),
    Bad("poll-missing", terms("POLL"), d(), [("answer_number", "is required")]),
    Bad("poll-zero", terms("POLL"), d(answer_number="0"), [("answer_number", "must be a positive whole number")]),
    Bad("poll-negative", terms("POLL"), d(answer_number="-1"), [("answer_number", "must be a positive whole number")]),
    Bad("poll-decimal", terms("POLL"), d(answer_number="1.5"), [("answer_number", "must be a positive whole number")]),
    Bad("poll-words", terms("POLL"), d(answer_number="two"), [("answer_number", "must be a positive whole number")]),
    Bad("poll-unicode-digit", terms("POLL"), d(answer_number="\u0663"), [("answer_number", "must be a positive whole number")]),
    Bad("poll-too-long", terms("POLL"), d(answer_number="1234567890"), [("answer_number", "must be a positive whole number")]),
    Bad("groups-missing", terms("INVITES_FROM_GROUPS"), d(), [("groups", "is required")]),
    # web traffic
    Bad("web-missing-all", WEB, OrderInput(link=LINK, quantity=100), [("country", "is required"), ("device", "is required"), ("type_of_traffic", "is required")]),
    Bad("web-country-3-letters", WEB, web(country="USA"), [("country", "must be a 2-letter country code")]),
    Bad("web-country-digit", WEB, web(country="U1"), [("country", "must be a 2-letter country code")]),
    Bad("web-device-0", WEB, web(device="0"), [("device", "must be 1 to 5")]),
    Bad("web-device-6", WEB, web(device="6"), [("device", "must be 1 to 5")]),
    Bad("web-device-word", WEB, web(device="mobile"), [("device", "must be 1 to 5")]),
    Bad("web-traffic-type-4", WEB, web(type_of_traffic="4"), [("type_of_traffic", "must be 1 to 3")]),
    Bad("web-keyword-missing", WEB, web(type_of_traffic="1"), [("google_keyword", "is required")]),
    Bad("web-referrer-missing", WEB, web(type_of_traffic="2", google_keyword="k"), [("referring_url", "is required")]),
    Bad("web-referrer-not-url", WEB, web(type_of_traffic="2", referring_url="google"), [("referring_url", NOT_URL)]),
    Bad("web-quantity-below-min", WEB, web(quantity=99), [("quantity", "must be between 100 and 100000")]),
    # subscriptions
    Bad("subs-missing-all", SUBS, OrderInput(link=LINK, quantity=100), [("username", "is required"), ("min", "is required"), ("max", "is required"), ("posts", "is required")]),
    Bad("subs-min-above-max", SUBS, sub(min=300, max=200), [("max", "must be at least min (300)")]),
    Bad("subs-min-below-service", SUBS, sub(min=49), [("min", "must be between 50 and 5000")]),
    Bad("subs-max-above-service", SUBS, sub(max=5001), [("max", "must be between 50 and 5000")]),
    Bad("subs-negative-min", SUBS, sub(min=-1), [("min", "must be between 50 and 5000")]),
    Bad("subs-posts-too-many", SUBS, sub(posts=10_001), [("posts", "must be between 1 and 10000")]),
    Bad("subs-posts-left-out-old-posts-over-default", replace(SUBS, default_posts=30), sub(posts=0, old_posts=31), [("old_posts", "must be between 0 and 30")]),
    Bad("subs-posts-negative-not-the-default", replace(SUBS, default_posts=30), sub(posts=-1), [("posts", "must be between 1 and 10000")]),
    Bad("subs-posts-negative", SUBS, sub(posts=-1), [("posts", "must be between 1 and 10000")]),
    Bad("subs-old-posts-over-posts", SUBS, sub(posts=10, old_posts=11), [("old_posts", "must be between 0 and 10")]),
    Bad("subs-old-posts-negative", SUBS, sub(old_posts=-1), [("old_posts", "must be between 0 and 10")]),
    Bad("subs-old-posts-bad-posts", SUBS, sub(posts=0, old_posts=10_001), [("posts", "is required"), ("old_posts", "must be between 0 and 10000")]),
    Bad("subs-delay-not-listed", SUBS, sub(delay=7), [("delay", "must be one of " + ", ".join(map(str, DELAYS)) + " minutes")]),
    Bad("subs-delay-negative", SUBS, sub(delay=-5), [("delay", "must be one of " + ", ".join(map(str, DELAYS)) + " minutes")]),
    Bad("subs-expiry-iso", SUBS, sub(expiry="2030-07-01"), [("expiry", "must be a date as d/m/Y, like 31/12/2030")]),
    Bad("subs-expiry-short-year", SUBS, sub(expiry="1/7/30"), [("expiry", "must be a date as d/m/Y, like 31/12/2030")]),
    Bad("subs-expiry-not-real", SUBS, sub(expiry="31/02/2030"), [("expiry", "is not a real date")]),
    Bad("subs-expiry-month-13", SUBS, sub(expiry="1/13/2030"), [("expiry", "is not a real date")]),
    Bad("subs-expiry-past", SUBS, sub(expiry="14/6/2030"), [("expiry", "must not be before today (15/06/2030)")]),
    Bad("subs-dripfeed", terms("SUBSCRIPTIONS", 50, 5000, drip=True), sub(runs=2, interval=5), [("runs", NO_DRIP), ("interval", NO_DRIP)]),
    Bad("subs-hold-over-limit", terms("SUBSCRIPTIONS", 1, 10**12), sub(min=1, max=10**12, posts=1, old_posts=1), [("posts", f"max x (posts + old_posts) must be at most {MAX_BILLABLE}")]),
    Bad("subs-username-two-lines", SUBS, sub(username="a\r\nb"), [("username", "must be one line without control characters")]),
    # every violation at once, in OrderInput field order
    Bad(
        "default-everything-wrong",
        terms(drip=True),
        OrderInput(link="nope", quantity=5, runs=1, interval=2000),
        [("link", NOT_URL), ("quantity", BETWEEN), ("runs", "must be between 2 and 1000"), ("interval", "must be between 1 and 1440")],
    ),
    Bad(
        "subs-everything-wrong",
        SUBS,
        OrderInput(runs=3, username="", min=10, max=6000, posts=20_000, old_posts=-1, delay=1, expiry="soon"),
        [
            ("runs", NO_DRIP), ("username", "is required"), ("min", "must be between 50 and 5000"),
            ("max", "must be between 50 and 5000"), ("posts", "must be between 1 and 10000"),
            ("old_posts", "must be between 0 and 10000"),
            ("delay", "must be one of " + ", ".join(map(str, DELAYS)) + " minutes"),
            ("expiry", "must be a date as d/m/Y, like 31/12/2030"),
        ],
    ),
    Bad("unknown-type", terms("FOLLOWERS_PLUS"), d(), [("service", "has a type that cannot be ordered (FOLLOWERS_PLUS)")]),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_refused(case: Bad) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_order(case.terms, case.order, today=TODAY)
    err = caught.value
    assert [(v.field, v.description) for v in err.violations] == case.violations
    assert {v.reason for v in err.violations} == {"INVALID_FIELD"}
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_ARGUMENT"
    assert err.domain == "orders.smm"
    assert err.metadata == {
        "field": case.violations[0][0],
        "fields": ",".join(field for field, _ in case.violations),
    }


def test_bad_case_ids_are_unique() -> None:
    assert len({c.id for c in BAD}) == len(BAD)
    assert len({c.id for c in VALID}) == len(VALID)


def test_public_names() -> None:
    assert validation.__all__ == [
        "DOMAIN",
        "OrderInput",
        "ServiceTerms",
        "ValidOrder",
        "sizing_field",
        "validate_order",
    ]


def test_the_sizing_field_is_one_the_type_takes() -> None:
    assert validation.sizing_field("DEFAULT") == "quantity"
    assert validation.sizing_field("CUSTOM_COMMENTS") == "comments"
    assert validation.sizing_field("MENTIONS_CUSTOM_LIST") == "usernames"
    assert validation.sizing_field("SUBSCRIPTIONS") == "posts"
    assert validation.sizing_field("PACKAGE") == "service"


# --- properties ----------------------------------------------------------------------------------

_text = st.text(max_size=40)
_int = st.integers(min_value=-(10**13), max_value=10**13)
_orders = st.builds(
    OrderInput,
    link=st.one_of(_text, st.just(LINK)),
    quantity=_int,
    runs=st.integers(-3, 1100),
    interval=st.integers(-3, 1500),
    comments=_text,
    usernames=_text,
    hashtags=_text,
    hashtag=_text,
    username=_text,
    media=st.one_of(_text, st.just(LINK)),
    keywords=_text,
    answer_number=_text,
    groups=_text,
    min=_int,
    max=_int,
    posts=st.integers(-3, 20_000),
    old_posts=st.integers(-3, 20_000),
    delay=st.sampled_from([*DELAYS, -5, 7]),
    expiry=st.one_of(_text, st.just("1/1/2031")),
    country=_text,
    device=_text,
    type_of_traffic=st.sampled_from(["", "1", "2", "3", "4"]),
    google_keyword=_text,
    referring_url=st.one_of(_text, st.just(LINK)),
)
_terms = st.builds(
    ServiceTerms,
    type=st.sampled_from(sorted(SERVICE_TYPES)),
    min_quantity=st.integers(0, 1000),
    max_quantity=st.integers(1, 10**15),
    dripfeed=st.booleans(),
    default_posts=st.sampled_from([0, 1, 30, 10_000]),
)


@settings(max_examples=400, deadline=None)
@given(_terms, _orders)
def test_never_more_than_a_field_error_and_billable_is_bounded(
    service: ServiceTerms, order: OrderInput
) -> None:
    valid: ValidOrder | None = None
    violations: list[FieldViolation] = []
    try:
        valid = validate_order(service, order, today=TODAY)
    except InvalidArgument as err:
        violations = err.violations
    if valid is None:
        assert violations
        assert len({v.field for v in violations}) == len(violations)  # one per field
        return
    assert 0 < valid.billable <= MAX_BILLABLE
    assert valid.runs == 1 or 2 <= valid.runs <= 1000
    assert all(isinstance(value, str) for value in valid.upstream.values())
    if service.type in validation.QUANTITY_TYPES:
        assert valid.billable == valid.quantity * valid.runs <= max(service.max_quantity, 1)
    if service.type == "SUBSCRIPTIONS":  # the hold covers every post the provider is told about
        posts = int(valid.upstream["posts"])
        assert posts == (order.posts or service.default_posts)
        assert valid.billable == order.max * (posts + int(valid.upstream.get("old_posts", "0")))
