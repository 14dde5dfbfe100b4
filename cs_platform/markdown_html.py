"""The HTML that rendered Markdown may keep, wherever the platform shows it (admin, /kb/ pages).

One list, so that what a transcript and an article page let through cannot drift apart; each caller
adds only what its own pages need (an article's images and heading ids).
"""

from __future__ import annotations

__all__ = ["MARKDOWN_TAGS", "MARKDOWN_URL_SCHEMES"]

MARKDOWN_TAGS = frozenset(
    {
        "p",
        "br",
        "strong",
        "em",
        "code",
        "pre",
        "ul",
        "ol",
        "li",
        "blockquote",
        "a",
        "h1",
        "h2",
        "h3",
        "h4",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "hr",
        "del",
    }
)
MARKDOWN_URL_SCHEMES = frozenset({"http", "https", "mailto"})
