"""What PostgreSQL text (and UTF-8) cannot hold: NUL and lone surrogates. Text from outside (a
provider's reply) loses them, so one bad character never fails a whole sync; ids with them are
unusable (``server/common/upstream_id.py``)."""

from __future__ import annotations

import re

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    return UNSTORABLE.sub("", text)
