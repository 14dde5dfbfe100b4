"""Pages of the public knowledge base, read-only: a customer opens them from a reply's citations."""

from __future__ import annotations

import secrets

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from knowledge import selectors
from knowledge.models import Locale
from knowledge.rendering import article_body_html

_LOCALE_NAMES = dict(Locale.choices)
# The page's words in its article's language (the citations open the page in the reply's language).
_WORDS = {
    "zh-Hans": {"updated": "更新于", "all": "帮助中心", "empty": "暂无文章。", "tags": "标签"},
    "en": {"updated": "Updated", "all": "Help centre", "empty": "No articles yet.", "tags": "Tags"},
}


def _with_policy(response: HttpResponse, nonce: str) -> HttpResponse:
    # Sanitised HTML already; the policy is the second wall: no script at all, only the page's own
    # style sheet (and markdown-it's text-align on table cells), images from anywhere secure.
    response["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; style-src-attr 'unsafe-inline'; "
        "img-src 'self' https: data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    )
    response["Referrer-Policy"] = "same-origin"
    return response


@require_safe
def article_page(request: HttpRequest, slug: str) -> HttpResponse:
    """One published article; each section heading's id is the anchor its citations name."""
    article = selectors.article_published_get(slug=slug)
    if article is None:
        raise Http404("No published article has this address.")
    nonce = secrets.token_urlsafe(16)
    context = {
        "article": article,
        "body_html": article_body_html(article.body),
        "words": _WORDS.get(article.locale, _WORDS["en"]),
        "nonce": nonce,
    }
    return _with_policy(render(request, "knowledge/article.html", context), nonce)


@require_safe
def article_list_page(request: HttpRequest) -> HttpResponse:
    """Every published article, grouped by language."""
    nonce = secrets.token_urlsafe(16)
    groups = [
        {"locale": locale, "name": _LOCALE_NAMES.get(locale, locale), "articles": articles}
        for locale, articles in selectors.articles_published_by_locale().items()
    ]
    context = {"groups": groups, "nonce": nonce, "words": _WORDS["en"]}
    return _with_policy(render(request, "knowledge/article_list.html", context), nonce)
