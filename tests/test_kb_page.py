"""The public article page /kb/<slug>/: only published articles, sanitised, headings with the anchors
citations name, in the article's language."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from knowledge.anchors import HEADING_LINE, heading_anchors
from knowledge.chunking import article_chunks
from tests import factories

pytestmark = pytest.mark.django_db

ArticleFactory: Any = factories.ArticleFactory

BODY = """The lead paragraph.

## How to return an item

Open **My orders**.

### Within 30 days

Most items.

```
## Not a heading: inside code
```

## How to return an item

The same heading again.

#### 包装 要求

原包装。

## Refunds ##

Five to seven days.
"""


def page_of(slug: str) -> tuple[int, str, Any]:
    response = Client().get(f"/kb/{slug}/")
    return response.status_code, response.content.decode(), response


def heading_ids(page: str) -> list[str]:
    return re.findall(r'<h[2-6] id="([^"]+)">', page)


def test_it_gives_every_heading_the_anchor_of_its_text_in_document_order() -> None:
    article = ArticleFactory(slug="returns", title="Returns", body=BODY)
    in_code = False
    headings = []
    for line in BODY.splitlines():
        in_code = not in_code if line.startswith("```") else in_code
        match = None if in_code else HEADING_LINE.match(line)
        if match:
            headings.append(match.group(2).strip())

    status, page, _ = page_of(article.slug)

    assert status == 200
    assert headings == [
        "How to return an item",
        "Within 30 days",
        "How to return an item",
        "包装 要求",
        "Refunds",
    ]
    assert heading_ids(page) == heading_anchors(headings)
    assert heading_ids(page) == [
        "how-to-return-an-item",
        "within-30-days",
        "how-to-return-an-item-2",
        "包装-要求",
        "refunds",
    ]


def test_it_has_an_id_for_every_anchor_chunking_cites() -> None:
    article = ArticleFactory(slug="returns", title="Returns", body=BODY)

    _, page, _ = page_of(article.slug)

    cited = {chunk.anchor for chunk in article_chunks(title=article.title, body=article.body) if chunk.anchor}
    assert cited == {"how-to-return-an-item", "within-30-days", "how-to-return-an-item-2", "refunds"}
    assert cited <= set(heading_ids(page))


def test_it_shows_the_title_the_language_and_the_updated_date() -> None:
    article = ArticleFactory(
        slug="fapiao", title="发票说明", body="发货后开具。\n\n## 企业发票\n\n填写税号。", locale="zh-Hans"
    )

    status, page, response = page_of("fapiao")

    assert status == 200
    assert '<html lang="zh-Hans">' in page
    assert "<title>发票说明</title>" in page
    assert "<h1>发票说明</h1>" in page
    assert f'<time datetime="{article.updated_at.isoformat()}">{article.updated_at:%Y-%m-%d}</time>' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert response["Content-Type"] == "text/html; charset=utf-8"


def test_it_never_shows_a_draft() -> None:
    ArticleFactory(slug="draft", status="draft", title="Secret plans")

    status, page, _ = page_of("draft")

    assert status == 404
    assert "Secret plans" not in page


def test_it_answers_404_for_an_unknown_slug() -> None:
    status, _, _ = page_of("no-such-article")

    assert status == 404


def test_it_renders_the_markdown_without_anything_that_could_run() -> None:
    ArticleFactory(
        slug="xss",
        body='Hello <script>alert(1)</script> <img src=x onerror="alert(1)">\n\n'
        "[click](javascript:alert(1)) [ok](https://example.com)\n\n![pic](https://example.com/a.png)",
    )

    _, page, response = page_of("xss")

    body = page.split('<div class="article-body">', 1)[1].split("</div>", 1)[0]
    assert "<script" not in body
    assert "<img src=x" not in body
    assert "Hello &lt;script&gt;alert(1)&lt;/script&gt; &lt;img src=x onerror" in body
    assert 'href="javascript' not in body
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">ok</a>' in body
    assert '<img src="https://example.com/a.png" alt="pic">' in body
    policy = response["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src" not in policy
    nonce = re.search(r"style-src 'nonce-([^']+)'", policy)
    assert nonce is not None
    assert f'<style nonce="{nonce.group(1)}">' in page


def test_it_skips_a_title_line_repeated_at_the_top_of_the_body() -> None:
    ArticleFactory(slug="returns", title="Returns", body="# Returns\n\nWithin 30 days.")

    _, page, _ = page_of("returns")

    assert page.count("<h1>") == 1
    assert "<p>Within 30 days.</p>" in page


def test_it_lists_the_published_articles_by_language() -> None:
    ArticleFactory(slug="returns", title="Returns", locale="en")
    ArticleFactory(slug="fapiao", title="发票说明", locale="zh-Hans")
    ArticleFactory(slug="draft", title="Draft plans", locale="en", status="draft")

    response = Client().get("/kb/")

    page = response.content.decode()
    assert response.status_code == 200
    sections = re.findall(
        r'<section lang="([^"]+)">.*?<h2 id="[^"]+">([^<]+)</h2>(.*?)</section>', page, re.DOTALL
    )
    assert [
        (locale, name, re.findall(r'<a href="([^"]+)">([^<]+)</a>', links))
        for locale, name, links in sections
    ] == [
        ("zh-Hans", "简体中文", [("/kb/fapiao/", "发票说明")]),
        ("en", "English", [("/kb/returns/", "Returns")]),
    ]
    assert "Draft plans" not in page
