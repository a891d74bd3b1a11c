"""The service types smm sells (PROTOCOL.md's vocabulary, upper snake case), shared by the catalog,
which stores and shows them, and orders, which validate an order by its type."""

from __future__ import annotations

SERVICE_TYPES = frozenset(
    {
        "DEFAULT", "PACKAGE", "SEO", "CUSTOM_COMMENTS", "CUSTOM_COMMENTS_PACKAGE", "MENTIONS",
        "MENTIONS_WITH_HASHTAGS", "MENTIONS_CUSTOM_LIST", "MENTIONS_HASHTAG", "MENTIONS_USER_FOLLOWERS",
        "MENTIONS_MEDIA_LIKERS", "COMMENT_LIKES", "COMMENT_REPLIES", "POLL", "INVITES_FROM_GROUPS",
        "SUBSCRIPTIONS", "WEB_TRAFFIC",
    }
)  # fmt: skip
# Types whose client sends the quantity (and which may drip-feed).
QUANTITY_TYPES = frozenset(
    {
        "DEFAULT", "SEO", "MENTIONS", "MENTIONS_WITH_HASHTAGS", "MENTIONS_HASHTAG",
        "MENTIONS_USER_FOLLOWERS", "MENTIONS_MEDIA_LIKERS", "COMMENT_LIKES", "POLL",
        "INVITES_FROM_GROUPS", "WEB_TRAFFIC",
    }
)  # fmt: skip
