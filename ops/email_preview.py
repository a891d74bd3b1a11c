"""``smm email preview NAME`` and ``smm sms preview NAME``: one email or text message rendered
with sample data, as it would be sent."""

from __future__ import annotations

import sys

from core.config import Settings
from workers.mail.render import SAMPLES, TEMPLATES, TRANSACTIONAL, Brand, render
from workers.texts import render as texts


def preview(settings: Settings, name: str, *, html: bool = False) -> int:
    if name not in TEMPLATES:
        print(f"smm email preview: unknown email {name!r}; known: {', '.join(TEMPLATES)}", file=sys.stderr)
        return 2
    brand = Brand(
        panel_name=settings.panel_name, primary_color=settings.brand_color, web_url=settings.web_url
    )
    unsubscribe = (
        "" if name in TRANSACTIONAL else f"{settings.api_url}/api/v1/public/unsubscribe?token=sample"
    )
    rendered = render(name, SAMPLES[name], brand, unsubscribe_url=unsubscribe)
    print(f"Subject: {rendered.subject}\n")
    print(rendered.html if html else rendered.text)
    return 0


def preview_sms(settings: Settings, name: str) -> int:
    if name not in texts.TEMPLATES:
        print(f"smm sms preview: unknown text {name!r}; known: {', '.join(texts.TEMPLATES)}", file=sys.stderr)
        return 2
    body = texts.render(name, texts.SAMPLES[name], panel_name=settings.panel_name)
    print(body)
    print(f"\n({len(body)} characters)")
    return 0
