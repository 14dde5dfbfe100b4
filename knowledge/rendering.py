"""Articles' Markdown as HTML for the public page and admin's preview: sanitised, headings with anchors.

The ids of the headings come from knowledge.anchors over the same headings chunking cuts at (an ATX
heading of level 2–6 at the start of its line, outside code), so that a citation's #anchor opens the
page at its section. Markdown is rendered without raw HTML and then sanitised by nh3: an article is
written by staff, but it is shown to customers, and an imported file may come from anywhere.
"""

from __future__ import annotations

import re
from typing import Any

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.token import Token

from cs_platform.markdown_html import MARKDOWN_TAGS, MARKDOWN_URL_SCHEMES
from knowledge.anchors import HEADING_LINE, heading_anchors

__all__ = ["article_body_html", "article_headings", "markdown_html"]

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": False}).enable("table")

_HEADING_TAGS = {"h2", "h3", "h4", "h5", "h6"}
_ALLOWED_TAGS = {*MARKDOWN_TAGS, "img", *_HEADING_TAGS}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "th": {"style"},
    "td": {"style"},
    **{tag: {"id"} for tag in _HEADING_TAGS},
}
# markdown-it aligns table cells with style="text-align: …"; nothing else may style the page.
_ALLOWED_STYLE_PROPERTIES = {"text-align"}
_TITLE_LINE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$")


def _clean(html: str) -> SafeString:
    cleaned = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes=set(MARKDOWN_URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
        filter_style_properties=_ALLOWED_STYLE_PROPERTIES,
    )
    return mark_safe(cleaned)  # noqa: S308 - sanitised by nh3 just above


def _lines_without_title(body: str) -> list[str]:
    """The body's lines; a first "# Title" line (a body pasted with its title) is the title, not content."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        if _TITLE_LINE.match(line.strip()):
            return lines[index + 1 :]
        break
    return lines


def _section_headings(tokens: list[Token], lines: list[str]) -> list[tuple[Token, str]]:
    """The heading_open tokens that chunking also treats as headings, each with its heading text."""
    found: list[tuple[Token, str]] = []
    for token in tokens:
        if token.type != "heading_open" or token.tag not in _HEADING_TAGS or token.map is None:
            continue
        match = HEADING_LINE.match(lines[token.map[0]].rstrip())
        # A setext or indented heading is not a section for chunking, so it gets no anchor either.
        if match is not None:
            found.append((token, match.group(2).strip()))
    return found


def article_headings(body: str) -> list[str]:
    """The texts of the body's section headings (level 2–6), in document order."""
    lines = _lines_without_title(body)
    return [text for _, text in _section_headings(_markdown.parse("\n".join(lines)), lines)]


def article_body_html(body: str) -> SafeString:
    """An article's body as sanitised HTML, each section heading with id = its anchor."""
    lines = _lines_without_title(body)
    source = "\n".join(lines)
    tokens = _markdown.parse(source)
    headings = _section_headings(tokens, lines)
    for (token, _), anchor in zip(headings, heading_anchors([text for _, text in headings]), strict=True):
        token.attrSet("id", anchor)
    options: Any = _markdown.options
    return _clean(_markdown.renderer.render(tokens, options, {}))


def markdown_html(text: str) -> SafeString:
    """Any Markdown (an FAQ answer, a preview) as sanitised HTML."""
    return _clean(_markdown.render(text))
