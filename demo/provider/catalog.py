"""The services the demo offers: at least one of every type in PROTOCOL.md §3.2."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from demo.provider.config import MICROS

__all__ = ["CATALOG", "SERVICE_TYPES", "Service", "find_service", "generated_services"]

SERVICE_TYPES: tuple[str, ...] = (
    "Default",
    "Package",
    "SEO",
    "Custom Comments",
    "Custom Comments Package",
    "Mentions",
    "Mentions with Hashtags",
    "Mentions Custom List",
    "Mentions Hashtag",
    "Mentions User Followers",
    "Mentions Media Likers",
    "Comment Likes",
    "Comment Replies",
    "Poll",
    "Invites from Groups",
    "Subscriptions",
    "Web Traffic",
)


@dataclass(frozen=True)
class Service:
    id: int
    name: str
    type: str
    category: str
    rate_micros: int  # per 1000
    min: int
    max: int
    refill: bool = False
    cancel: bool = False
    dripfeed: bool = False


def _rate(text: str) -> int:
    return int(Decimal(text) * MICROS)


CATALOG: tuple[Service, ...] = (
    Service(
        1,
        "Instagram Followers [Refill 30 days]",
        "Default",
        "Instagram",
        _rate("0.90"),
        50,
        10000,
        refill=True,
        cancel=True,
        dripfeed=True,
    ),
    Service(
        2, "Instagram Likes", "Default", "Instagram", _rate("0.25"), 10, 50000, cancel=True, dripfeed=True
    ),
    Service(3, "Instagram Story Views Package", "Package", "Instagram", _rate("1.50"), 1, 1),
    Service(4, "Website SEO Keyword Clicks", "SEO", "Website", _rate("3.00"), 100, 5000),
    Service(
        5, "Instagram Custom Comments", "Custom Comments", "Instagram", _rate("8"), 10, 1500, cancel=True
    ),
    Service(
        6, "Instagram Custom Comments Package", "Custom Comments Package", "Instagram", _rate("5.00"), 1, 1
    ),
    Service(7, "Instagram Mentions", "Mentions", "Instagram Mentions", _rate("2.00"), 100, 10000),
    Service(
        8,
        "Instagram Mentions with Hashtags",
        "Mentions with Hashtags",
        "Instagram Mentions",
        _rate("2.50"),
        100,
        10000,
    ),
    Service(
        9,
        "Instagram Mentions Custom List",
        "Mentions Custom List",
        "Instagram Mentions",
        _rate("3.00"),
        10,
        1000,
    ),
    Service(
        10, "Instagram Mentions Hashtag", "Mentions Hashtag", "Instagram Mentions", _rate("2.20"), 100, 10000
    ),
    Service(
        11,
        "Instagram Mentions User Followers",
        "Mentions User Followers",
        "Instagram Mentions",
        _rate("2.40"),
        100,
        10000,
    ),
    Service(
        12,
        "Instagram Mentions Media Likers",
        "Mentions Media Likers",
        "Instagram Mentions",
        _rate("2.60"),
        100,
        10000,
    ),
    Service(
        13, "Instagram Comment Likes", "Comment Likes", "Instagram", _rate("1.20"), 20, 5000, refill=True
    ),
    Service(14, "Instagram Comment Replies", "Comment Replies", "Instagram", _rate("9.00"), 10, 500),
    Service(15, "Twitter Poll Votes", "Poll", "Twitter", _rate("1.10"), 100, 10000, cancel=True),
    Service(16, "Telegram Invites from Groups", "Invites from Groups", "Telegram", _rate("4.00"), 100, 20000),
    Service(17, "Instagram Auto Likes", "Subscriptions", "Instagram Auto", _rate("0.30"), 50, 5000),
    Service(
        18,
        "Website Traffic",
        "Web Traffic",
        "Website",
        _rate("0.10"),
        500,
        1000000,
        cancel=True,
        dripfeed=True,
    ),
)

_BY_ID = {service.id: service for service in CATALOG}


def find_service(value: str | None) -> Service | None:
    """The service for a ``service`` parameter (digits), or None."""
    text = (value or "").strip()
    if not text.isdigit():
        return None
    return _BY_ID.get(int(text))


GENERATED_FIRST_ID = 100_000


def generated_services(count: int) -> list[Service]:
    """``count`` plain services (ids from 100000) for benchmarks of big provider lists."""
    return [
        Service(
            GENERATED_FIRST_ID + n,
            f"Generated Followers #{n}",
            "Default",
            f"Generated {n // 100}",
            _rate("0.50") + n,
            10,
            100_000,
            refill=n % 2 == 0,
            cancel=n % 3 == 0,
        )
        for n in range(count)
    ]
