"""Knowledge in admin: articles keep their versions and editors, every change of published content asks
for an index rebuild, and the FAQ, retrieval settings, index builds and import pages work."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client

from knowledge import services, tasks
from knowledge.anchors import heading_anchors
from knowledge.models import Article, ArticleVersion, FaqEntry, IndexBuild, RetrievalSettings
from tests import factories

pytestmark = pytest.mark.django_db

ArticleFactory: Any = factories.ArticleFactory
FaqEntryFactory: Any = factories.FaqEntryFactory

ARTICLE_CHANGELIST = "/admin/knowledge/article/"
FAQ_CHANGELIST = "/admin/knowledge/faqentry/"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Index rebuilds asked for (on commit), recorded instead of run."""
    asked: list[str] = []
    monkeypatch.setattr(tasks, "index_rebuild_enqueue", lambda: asked.append("rebuild"))
    return asked


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Callable[[], AbstractContextManager[Any]]:
    """`with committed():` is one transaction, committed at the end: its on-commit callbacks run.

    The test's own transaction never commits, so what came before is taken as committed (its callbacks
    forgotten, as a commit empties the list) and so is what the block did: the services ask for one
    rebuild per transaction and look at that list to know whether they asked already.
    """

    @contextmanager
    def commit() -> Iterator[None]:
        connection.run_on_commit.clear()
        with django_capture_on_commit_callbacks(execute=True):
            yield
        connection.run_on_commit.clear()

    return commit


def editor(username: str = "editor") -> User:
    return User.objects.create_user(username=username, password="secret", is_staff=True)


def saved_article(**fields: Any) -> Article:
    """An article saved through the service, as an editor would (version 1 recorded)."""
    values = {"slug": "returns", "title": "Returns", "body": "Within 30 days.", "locale": "en"}
    values.update(fields)
    return services.article_save(article=Article(**values), user=None)


class _FormReader(HTMLParser):
    """The fields a browser would submit from the page's main form (not the buttons, not the files)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, Any] = {}
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        name = attributes.get("name")
        if tag == "input" and name:
            kind = attributes.get("type", "text")
            if kind in {"submit", "button", "file", "image"}:
                return
            if kind in {"checkbox", "radio"}:
                if "checked" in attributes:
                    self.data[name] = attributes.get("value") or "on"
                return
            self.data[name] = attributes.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in attributes:
            self.data[self._select] = attributes.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            # A browser drops one newline that starts a textarea's content.
            text = self.data[self._textarea] + data
            self.data[self._textarea] = text[1:] if text.startswith("\n") else text


def form_data(client: Client, url: str, **changes: Any) -> dict[str, Any]:
    reader = _FormReader()
    response = client.get(url)
    assert response.status_code == 200
    reader.feed(response.content.decode())
    reader.data.pop("csrfmiddlewaretoken", None)
    reader.data.update(changes)
    return reader.data


def change_url(article: Article) -> str:
    return f"/admin/knowledge/article/{article.pk}/change/"


# --- the service ----------------------------------------------------------------------------------


def test_it_saves_a_new_article_as_version_one_by_its_editor() -> None:
    user = editor()

    article = services.article_save(
        article=Article(slug="returns", title="Returns", body="Within 30 days.", tags="returns, refunds"),
        user=user,
    )

    article.refresh_from_db()
    assert (article.version, article.updated_by) == (1, user)
    versions = list(
        ArticleVersion.objects.filter(article=article).values_list("number", "title", "body", "created_by")
    )
    assert versions == [(1, "Returns", "Within 30 days.", user.pk)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "Returning items"),
        ("body", "Within 60 days."),
        ("locale", "zh-Hans"),
        ("tags", "returns"),
        ("status", "published"),
    ],
)
def test_it_saves_a_new_version_when_the_content_changes(field: str, value: str) -> None:
    article = saved_article()
    user = editor()

    setattr(article, field, value)
    services.article_save(article=article, user=user)

    article.refresh_from_db()
    assert (article.version, article.updated_by, getattr(article, field)) == (2, user, value)
    numbers = list(
        ArticleVersion.objects.filter(article=article).order_by("number").values_list("number", field)
    )
    original = {"title": "Returns", "body": "Within 30 days.", "locale": "en", "tags": "", "status": "draft"}
    assert numbers == [(1, original[field]), (2, value)]


def test_it_keeps_the_version_and_the_editor_when_nothing_changed() -> None:
    article = saved_article()
    before = Article.objects.get(pk=article.pk)

    services.article_save(article=Article.objects.get(pk=article.pk), user=editor())

    after = Article.objects.get(pk=article.pk)
    assert (after.version, after.updated_by, after.updated_at) == (1, None, before.updated_at)
    assert ArticleVersion.objects.filter(article=article).count() == 1


def test_it_treats_windows_line_endings_as_the_same_text() -> None:
    article = saved_article(body="One.\n\n## Two\n\nThree.")

    article.body = "One.\r\n\r\n## Two\r\n\r\nThree."
    services.article_save(article=article, user=None)

    article.refresh_from_db()
    assert (article.version, article.body) == (1, "One.\n\n## Two\n\nThree.")


def test_it_restores_an_earlier_version_as_a_new_one_and_keeps_the_status() -> None:
    article = saved_article(title="Returns", body="Within 30 days.", tags="returns")
    article.title, article.body, article.tags = "Returns (new)", "Within 60 days.", ""
    services.article_save(article=article, user=None)
    services.article_publish(article=article, user=None)
    user = editor()

    restored = services.article_version_restore(
        version=ArticleVersion.objects.get(article=article, number=1), user=user
    )

    restored.refresh_from_db()
    assert (
        restored.version,
        restored.title,
        restored.body,
        restored.tags,
        restored.status,
        restored.updated_by,
    ) == (
        4,
        "Returns",
        "Within 30 days.",
        "returns",
        "published",
        user,
    )
    assert list(
        ArticleVersion.objects.filter(article=article).order_by("number").values_list("number", "title")
    ) == [
        (1, "Returns"),
        (2, "Returns (new)"),
        (3, "Returns (new)"),
        (4, "Returns"),
    ]


def test_it_refuses_an_article_with_a_bad_slug_and_saves_nothing() -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as raised:
        services.article_save(article=Article(slug="退货 政策", title="x", body="y"), user=None)

    assert "slug" in raised.value.message_dict
    assert (Article.objects.count(), ArticleVersion.objects.count()) == (0, 0)


def test_it_asks_for_a_rebuild_when_a_published_article_is_saved(rebuilds: list[str], committed: Any) -> None:
    with committed():
        article = saved_article(status="published")
    with committed():
        article.body = "Within 60 days."
        services.article_save(article=article, user=None)

    assert rebuilds == ["rebuild", "rebuild"]


def test_it_asks_for_no_rebuild_for_a_draft_or_an_unchanged_article(
    rebuilds: list[str], committed: Any
) -> None:
    with committed():
        draft = saved_article()
        draft.body = "Within 60 days."
        services.article_save(article=draft, user=None)
        published = saved_article(slug="published", status="published")
    rebuilds.clear()

    with committed():
        services.article_save(article=Article.objects.get(pk=published.pk), user=None)

    assert rebuilds == []


def test_it_asks_for_a_rebuild_when_an_article_is_published_or_unpublished(
    rebuilds: list[str], committed: Any
) -> None:
    article = saved_article()

    with committed():
        services.article_publish(article=article, user=None)
    with committed():
        services.article_unpublish(article=article, user=None)

    article.refresh_from_db()
    assert (article.status, article.version, rebuilds) == ("draft", 3, ["rebuild", "rebuild"])


def test_it_asks_for_a_rebuild_when_a_published_slug_changes(rebuilds: list[str], committed: Any) -> None:
    article = saved_article(status="published")

    with committed():
        article.slug = "returning-items"
        services.article_save(article=article, user=None)

    article.refresh_from_db()
    assert (article.slug, article.version, rebuilds) == ("returning-items", 1, ["rebuild"])


def test_it_asks_for_a_rebuild_once_per_transaction(rebuilds: list[str], committed: Any) -> None:
    with committed(), transaction.atomic():
        for number in range(5):
            saved_article(slug=f"article-{number}", status="published")

    assert (Article.objects.count(), rebuilds) == (5, ["rebuild"])


def test_it_asks_for_no_rebuild_when_the_transaction_rolls_back(rebuilds: list[str], committed: Any) -> None:
    def save_then_fail() -> None:
        with transaction.atomic():
            saved_article(status="published")
            raise RuntimeError

    with committed(), pytest.raises(RuntimeError):
        save_then_fail()

    assert (Article.objects.count(), rebuilds) == (0, [])


def test_it_asks_for_a_rebuild_when_a_published_article_is_deleted(
    rebuilds: list[str], committed: Any
) -> None:
    published = saved_article(status="published")
    draft = saved_article(slug="draft")

    with committed():
        services.article_delete(article=draft)
    assert rebuilds == []
    with committed():
        services.article_delete(article=published)

    assert (Article.objects.count(), ArticleVersion.objects.count(), rebuilds) == (0, 0, ["rebuild"])


def test_it_saves_faq_entries_and_asks_for_a_rebuild_when_retrieval_reads_the_change(
    rebuilds: list[str], committed: Any
) -> None:
    user = editor()
    with committed():
        entry = services.faq_entry_save(
            entry=FaqEntry(question="How long is delivery?", answer="2–4 days."), user=user
        )
    assert (entry.updated_by, rebuilds) == (user, ["rebuild"])

    with committed():
        entry.position = 3
        services.faq_entry_save(entry=entry, user=None)
    assert rebuilds == ["rebuild"]
    with committed():
        entry.answer = "Two to four working days."
        services.faq_entry_save(entry=entry, user=None)
    with committed():
        services.faq_entry_delete(entry=entry)

    assert (FaqEntry.objects.count(), rebuilds) == (0, ["rebuild", "rebuild", "rebuild"])


# --- articles in admin ------------------------------------------------------------------------------


def test_it_lists_articles_with_their_version_and_editor(admin_client: Client, admin_user: User) -> None:
    article = saved_article(title="Returns within 30 days", slug="returns-30")
    article.body = "Changed."
    services.article_save(article=article, user=admin_user)

    response = admin_client.get(ARTICLE_CHANGELIST)

    page = response.content.decode()
    row = re.search(r"<tbody>\s*<tr[^>]*>(.*?)</tr>", page, re.DOTALL)
    assert row is not None
    cells = [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row.group(0), re.DOTALL)
    ]
    assert cells[1:6] == ["Returns within 30 days", "returns-30", "English", "Draft", "2"]
    assert cells[6] == "admin"
    assert 'href="/admin/knowledge/article/import/"' in page
    assert 'href="/admin/knowledge/article/export/"' in page


def test_it_finds_articles_by_their_text_and_filters_them(admin_client: Client) -> None:
    saved_article(slug="returns", title="Returns", body="Send it back within 30 days.", status="published")
    saved_article(slug="invoices", title="Invoices", body="Fapiao within 24 hours.", locale="zh-Hans")

    searched = admin_client.get(ARTICLE_CHANGELIST, {"q": "fapiao"}).content.decode()
    filtered = admin_client.get(ARTICLE_CHANGELIST, {"status__exact": "published"}).content.decode()

    assert ("Invoices" in searched, "Returns" in searched) == (True, False)
    assert ("Returns" in filtered, "Invoices" in filtered) == (True, False)


def test_it_saves_an_article_added_in_admin_as_version_one_by_the_admin(
    admin_client: Client, admin_user: User, rebuilds: list[str], committed: Any
) -> None:
    data = form_data(
        admin_client,
        "/admin/knowledge/article/add/",
        title="Returns",
        slug="returns",
        locale="en",
        status="published",
        tags="returns",
        body="## How\n\nWithin 30 days.",
    )

    with committed():
        response = admin_client.post("/admin/knowledge/article/add/", data)

    assert response.status_code == 302
    article = Article.objects.get()
    assert (article.version, article.updated_by, article.status) == (1, admin_user, "published")
    assert list(article.versions.values_list("number", "created_by")) == [(1, admin_user.pk)]
    assert rebuilds == ["rebuild"]


def test_it_saves_an_edit_in_admin_as_a_new_version(admin_client: Client, admin_user: User) -> None:
    article = saved_article()
    data = form_data(
        admin_client, change_url(article), body="Within 60 days.\r\n\r\n## Exceptions\r\n\r\nNone."
    )

    response = admin_client.post(change_url(article), data)

    assert response.status_code == 302
    article.refresh_from_db()
    assert (article.version, article.body, article.updated_by) == (
        2,
        "Within 60 days.\n\n## Exceptions\n\nNone.",
        admin_user,
    )
    assert list(article.versions.order_by("number").values_list("number", "body")) == [
        (1, "Within 30 days."),
        (2, "Within 60 days.\n\n## Exceptions\n\nNone."),
    ]


def test_it_saves_no_version_when_the_admin_form_is_saved_unchanged(admin_client: Client) -> None:
    article = saved_article(body="Line one.\n\n## Two\n\nLine two.")
    data = form_data(admin_client, change_url(article))
    # What a browser sends: the textarea's line breaks as CRLF.
    data["body"] = data["body"].replace("\n", "\r\n")

    response = admin_client.post(change_url(article), data)

    assert response.status_code == 302
    article.refresh_from_db()
    assert (article.version, article.versions.count(), article.updated_by) == (1, 1, None)


def test_it_previews_the_article_sanitised_with_the_anchors_of_its_headings(admin_client: Client) -> None:
    article = saved_article(
        body="Lead <script>alert(1)</script>\n\n## How to return\n\n[x](javascript:alert(1))\n\n"
        "## 退货 政策\n\nOK"
    )

    page = admin_client.get(change_url(article)).content.decode()

    preview = re.search(r'<div class="kb-preview" lang="en">(.*?)</div>', page, re.DOTALL)
    assert preview is not None
    assert "<script>" not in preview.group(1)
    assert 'href="javascript' not in preview.group(1)
    assert re.findall(r'<h2 id="([^"]+)">', preview.group(1)) == heading_anchors(
        ["How to return", "退货 政策"]
    )


def test_it_lists_the_versions_with_a_restore_link_for_each_earlier_one(admin_client: Client) -> None:
    article = saved_article(title="First")
    article.title = "Second"
    services.article_save(article=article, user=None)

    page = admin_client.get(change_url(article)).content.decode()

    restore_links = re.findall(r'href="(/admin/knowledge/article/\d+/versions/\d+/restore/)"', page)
    assert restore_links == [f"/admin/knowledge/article/{article.pk}/versions/1/restore/"]
    assert "current" in page


def test_it_asks_before_restoring_and_restores_on_post(admin_client: Client, admin_user: User) -> None:
    article = saved_article(title="First", body="Old text.")
    article.title, article.body = "Second", "New text."
    services.article_save(article=article, user=None)
    url = f"/admin/knowledge/article/{article.pk}/versions/1/restore/"

    confirmation = admin_client.get(url)
    article.refresh_from_db()
    assert (confirmation.status_code, article.version, article.title) == (200, 2, "Second")
    assert "Old text." in confirmation.content.decode()

    response = admin_client.post(url)

    article.refresh_from_db()
    assert (response.status_code, response["Location"]) == (302, change_url(article))
    assert (article.version, article.title, article.body, article.updated_by) == (
        3,
        "First",
        "Old text.",
        admin_user,
    )


def test_it_refuses_a_restore_without_the_csrf_token(admin_user: User) -> None:
    article = saved_article(title="First")
    article.title = "Second"
    services.article_save(article=article, user=None)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    response = client.post(f"/admin/knowledge/article/{article.pk}/versions/1/restore/")

    article.refresh_from_db()
    assert (response.status_code, article.version, article.title) == (403, 2, "Second")


def test_it_refuses_a_restore_to_staff_who_may_not_change_articles() -> None:
    article = saved_article(title="First")
    article.title = "Second"
    services.article_save(article=article, user=None)
    client = Client()
    client.force_login(editor())

    response = client.post(f"/admin/knowledge/article/{article.pk}/versions/1/restore/")

    article.refresh_from_db()
    assert (response.status_code, article.version) == (403, 2)


def test_it_publishes_and_unpublishes_selected_articles_through_the_service(
    admin_client: Client, admin_user: User, rebuilds: list[str], committed: Any
) -> None:
    first, second = saved_article(slug="first"), saved_article(slug="second", status="published")

    with committed():
        admin_client.post(
            ARTICLE_CHANGELIST, {"action": "publish", "_selected_action": [first.pk, second.pk]}
        )
    first.refresh_from_db()
    second.refresh_from_db()
    assert [(first.status, first.version, first.updated_by), (second.status, second.version)] == [
        ("published", 2, admin_user),
        ("published", 1),
    ]
    with committed():
        admin_client.post(ARTICLE_CHANGELIST, {"action": "unpublish", "_selected_action": [first.pk]})

    first.refresh_from_db()
    assert (first.status, first.version, rebuilds) == ("draft", 3, ["rebuild", "rebuild"])


def test_it_asks_for_a_rebuild_when_admin_deletes_articles(
    admin_client: Client, rebuilds: list[str], committed: Any
) -> None:
    one, two, three = (saved_article(slug=slug, status="published") for slug in ("one", "two", "three"))

    with committed():
        admin_client.post(f"/admin/knowledge/article/{one.pk}/delete/", {"post": "yes"})
    assert rebuilds == ["rebuild"]
    with committed():
        admin_client.post(
            ARTICLE_CHANGELIST,
            {"action": "delete_selected", "_selected_action": [two.pk, three.pk], "post": "yes"},
        )

    assert (Article.objects.count(), rebuilds) == (0, ["rebuild", "rebuild"])


# --- import and export in admin ------------------------------------------------------------------------


def upload(name: str, text: str | bytes) -> io.BytesIO:
    file = io.BytesIO(text.encode() if isinstance(text, str) else text)
    file.name = name
    return file


def test_it_imports_uploaded_articles_and_reports_a_bad_file_without_losing_the_good_one(
    admin_client: Client, admin_user: User
) -> None:
    response = admin_client.post(
        "/admin/knowledge/article/import/",
        {
            "markdown_files": [
                upload("returns.md", "# Returns\n\nWithin 30 days."),
                upload("Bad Name.md", "# Bad\n\nText."),
            ],
            "publish": "on",
            "locale": "",
        },
    )

    assert response.status_code == 200
    article = Article.objects.get()
    assert (article.slug, article.title, article.status, article.locale, article.updated_by) == (
        "returns",
        "Returns",
        "published",
        "en",
        admin_user,
    )
    page = response.content.decode()
    rows = re.findall(r'<tr class="outcome-(\w+)">\s*<td>([^<]*)</td>', page)
    assert rows == [("created", "returns.md"), ("failed", "Bad Name.md")]
    assert "is not a valid slug" in page
    assert "created 1, updated 0, unchanged 0, failed 1" in page


def test_it_imports_a_zip_of_articles_in_the_chosen_language(admin_client: Client) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("kb/returns.md", "# Returns\n\nWithin 30 days.")
        writer.writestr("kb/deep/invoices.md", "# Invoices\n\nSent by email.")
        writer.writestr("__MACOSX/kb/._returns.md", "junk")

    response = admin_client.post(
        "/admin/knowledge/article/import/",
        {"markdown_files": [upload("kb.zip", archive.getvalue())], "locale": "zh-Hans"},
    )

    assert response.status_code == 200
    assert list(Article.objects.order_by("slug").values_list("slug", "locale", "status")) == [
        ("invoices", "zh-Hans", "draft"),
        ("returns", "zh-Hans", "draft"),
    ]


def test_it_reports_an_upload_that_is_not_a_zip(admin_client: Client) -> None:
    response = admin_client.post(
        "/admin/knowledge/article/import/", {"markdown_files": [upload("kb.zip", b"not a zip")]}
    )

    assert re.findall(r'<tr class="outcome-(\w+)">\s*<td>([^<]*)</td>', response.content.decode()) == [
        ("failed", "kb.zip")
    ]
    assert Article.objects.count() == 0


def test_it_exports_every_article_as_a_zip_of_markdown_files(admin_client: Client) -> None:
    saved_article(
        slug="returns", title="Returns", body="Within 30 days.", tags="returns, refunds", status="published"
    )
    saved_article(slug="fapiao", title="发票", body="发货后开具。", locale="zh-Hans")

    response = admin_client.get("/admin/knowledge/article/export/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith('attachment; filename="articles-')
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["fapiao.md", "returns.md"]
        assert archive.read("returns.md").decode() == (
            "---\nlang: en\ntags: returns, refunds\nstatus: published\n---\n# Returns\n\nWithin 30 days.\n"
        )


def test_it_sends_anonymous_users_from_the_import_and_export_pages_to_the_login_page() -> None:
    pages = [
        "/admin/knowledge/article/import/",
        "/admin/knowledge/article/export/",
        "/admin/knowledge/faqentry/import/",
        "/admin/knowledge/faqentry/export/",
    ]

    locations = [Client().get(page)["Location"] for page in pages]

    assert locations == [f"/admin/login/?next={page}" for page in pages]


def test_it_refuses_the_import_to_staff_who_may_not_add_articles() -> None:
    client = Client()
    client.force_login(editor())

    response = client.post(
        "/admin/knowledge/article/import/", {"markdown_files": [upload("returns.md", "# R\n\nText.")]}
    )

    assert (response.status_code, Article.objects.count()) == (403, 0)


# --- FAQ entries in admin -------------------------------------------------------------------------------


def test_it_saves_the_faq_list_edits_through_the_service(
    admin_client: Client, admin_user: User, rebuilds: list[str], committed: Any
) -> None:
    entry = FaqEntryFactory(
        question="How long is delivery?", position=1, is_quick_entry=True, is_published=True
    )
    data = form_data(admin_client, FAQ_CHANGELIST)
    data.pop("form-0-is_published")
    data["form-0-position"] = "5"
    data["_save"] = "Save"

    with committed():
        response = admin_client.post(FAQ_CHANGELIST, data)

    assert response.status_code == 302
    entry.refresh_from_db()
    assert (entry.position, entry.is_published, entry.updated_by, rebuilds) == (
        5,
        False,
        admin_user,
        ["rebuild"],
    )
    page = admin_client.get(FAQ_CHANGELIST).content.decode()
    assert 'href="/admin/knowledge/faqentry/import/"' in page
    assert 'href="/admin/knowledge/faqentry/export/"' in page


def test_it_asks_for_a_rebuild_when_admin_deletes_faq_entries(
    admin_client: Client, rebuilds: list[str], committed: Any
) -> None:
    entries = [FaqEntryFactory(), FaqEntryFactory()]

    with committed():
        admin_client.post(
            FAQ_CHANGELIST,
            {"action": "delete_selected", "_selected_action": [entry.pk for entry in entries], "post": "yes"},
        )

    assert (FaqEntry.objects.count(), rebuilds) == (0, ["rebuild"])


def test_it_imports_an_faq_csv_in_admin_and_reports_each_bad_row(
    admin_client: Client, admin_user: User
) -> None:
    csv_text = (
        "question,answer,locale,is_quick_entry,position,is_published\n"
        "How long is delivery?,2–4 working days.,en,true,1,true\n"
        ",No question,en,false,2,true\n"
        "运费多少？,满99元包邮。,zh-Hans,yes,1,\n"
    )

    response = admin_client.post("/admin/knowledge/faqentry/import/", {"file": upload("faq.csv", csv_text)})

    assert response.status_code == 200
    assert list(
        FaqEntry.objects.order_by("locale").values_list(
            "question", "locale", "is_quick_entry", "position", "is_published", "updated_by"
        )
    ) == [
        ("How long is delivery?", "en", True, 1, True, admin_user.pk),
        ("运费多少？", "zh-Hans", True, 1, True, admin_user.pk),
    ]
    rows = re.findall(r'<tr class="outcome-(\w+)">\s*<td>([^<]*)</td>', response.content.decode())
    assert rows == [
        ("created", "faq.csv line 2"),
        ("failed", "faq.csv line 3"),
        ("created", "faq.csv line 4"),
    ]
    assert "the question is empty" in response.content.decode()


def test_it_exports_the_faq_as_csv_a_spreadsheet_reads(admin_client: Client) -> None:
    FaqEntryFactory(
        question="运费多少？", answer="满99元包邮。", locale="zh-Hans", position=1, is_quick_entry=False
    )

    response = admin_client.get("/admin/knowledge/faqentry/export/")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response.content.decode("utf-8") == (
        "\ufeffquestion,answer,locale,is_quick_entry,position,is_published\n运费多少？,满99元包邮。,zh-Hans,false,1,true\n"
    )


# --- retrieval settings and index builds ------------------------------------------------------------------


def test_it_edits_the_retrieval_settings_as_one_row(admin_client: Client) -> None:
    assert (
        admin_client.get("/admin/knowledge/retrievalsettings/")["Location"]
        == "/admin/knowledge/retrievalsettings/add/"
    )
    data = form_data(admin_client, "/admin/knowledge/retrievalsettings/add/", relevance_threshold="0.4")

    response = admin_client.post("/admin/knowledge/retrievalsettings/add/", data)

    assert response["Location"] == "/admin/knowledge/retrievalsettings/1/change/"
    assert list(RetrievalSettings.objects.values_list("pk", "relevance_threshold")) == [(1, 0.4)]
    assert (
        admin_client.get("/admin/knowledge/retrievalsettings/")["Location"]
        == "/admin/knowledge/retrievalsettings/1/change/"
    )
    assert admin_client.get("/admin/knowledge/retrievalsettings/add/").status_code == 403
    assert (
        admin_client.post("/admin/knowledge/retrievalsettings/1/delete/", {"post": "yes"}).status_code == 403
    )
    assert RetrievalSettings.objects.count() == 1


def test_it_lists_index_builds_read_only(admin_client: Client) -> None:
    IndexBuild.objects.create(
        status=IndexBuild.Status.FAILED,
        embedder_model="fuse-multilingual",
        chunk_count=12,
        faq_count=3,
        error="Out of memory\ntrace",
    )

    page = admin_client.get("/admin/knowledge/indexbuild/").content.decode()

    assert "fuse-multilingual" in page
    assert "Out of memory" in page
    assert "trace" not in page
    assert admin_client.get("/admin/knowledge/indexbuild/add/").status_code == 403


def test_it_rebuilds_the_index_from_the_button_and_the_action(
    admin_client: Client, rebuilds: list[str], committed: Any
) -> None:
    build = IndexBuild.objects.create(status=IndexBuild.Status.READY, embedder_model="m")

    assert admin_client.get("/admin/knowledge/indexbuild/rebuild/").status_code == 405
    with committed():
        button = admin_client.post("/admin/knowledge/indexbuild/rebuild/")
    with committed():
        admin_client.post(
            "/admin/knowledge/indexbuild/", {"action": "rebuild_index_now", "_selected_action": [build.pk]}
        )

    assert (button.status_code, button["Location"], rebuilds) == (
        302,
        "/admin/knowledge/indexbuild/",
        ["rebuild", "rebuild"],
    )


def test_it_refuses_a_rebuild_to_staff_who_may_not_change_articles(
    rebuilds: list[str], committed: Any
) -> None:
    client = Client()
    client.force_login(editor())

    with committed():
        response = client.post("/admin/knowledge/indexbuild/rebuild/")

    assert (response.status_code, rebuilds) == (403, [])
