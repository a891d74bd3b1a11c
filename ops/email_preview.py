"""``smm email preview NAME``: one email rendered with sample data, as it would be sent."""

from __future__ import annotations

import sys

from core.config import Settings
from workers.mail.render import SAMPLES, TEMPLATES, TRANSACTIONAL, Brand, render


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
