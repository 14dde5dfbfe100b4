"""Anchors of an article's headings, shared by the public page (ids) and chunking (citations' #anchor).

Pure functions, no Django models: both sides must compute the same anchor for the same heading, or a
citation would open the page at nowhere.
"""

from __future__ import annotations

import re

from django.utils.text import slugify

__all__ = ["HEADING_LINE", "heading_anchors"]

# An ATX heading of level 2 to 6 ("## Returns"); level 1 is the article's title.
HEADING_LINE = re.compile(r"^(#{2,6})[ \t]+(.+?)[ \t#]*$")


def heading_anchors(headings: list[str]) -> list[str]:
    """One anchor per heading, in order: slugified (Chinese kept), a repeated one suffixed -2, -3…"""
    anchors: list[str] = []
    seen: dict[str, int] = {}
    for heading in headings:
        base = slugify(heading, allow_unicode=True) or "section"
        count = seen.get(base, 0) + 1
        seen[base] = count
        anchors.append(base if count == 1 else f"{base}-{count}")
    return anchors
