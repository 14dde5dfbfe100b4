"""Import and export of the knowledge base: article files, FAQ CSV, the commands, and the demo data."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from cs_platform.demo import DEMO_KNOWLEDGE_DIR, demo_knowledge_load
from knowledge import importing, services, tasks
from knowledge.importing import KnowledgeImportError, article_file_parse, locale_detect
from knowledge.models import Article, ArticleVersion, FaqEntry, IndexBuild
from tests import factories

pytestmark = pytest.mark.django_db

FaqEntryFactory: Any = factories.FaqEntryFactory

RETURNS = (
    "---\nlang: en\ntags: returns, refunds\n---\n# Returns\n\nWithin 30 days.\n\n## How\n\nFrom My orders.\n"
)


@pytest.fixture(autouse=True)
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Index rebuilds asked for, recorded instead of run (the tests' transaction never commits anyway)."""
    asked: list[str] = []
    monkeypatch.setattr(tasks, "index_rebuild_enqueue", lambda: asked.append("rebuild"))
    return asked


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Callable[[], AbstractContextManager[Any]]:
    """`with committed():` is one committed transaction (see tests/test_knowledge_admin.py's twin)."""

    @contextmanager
    def commit() -> Iterator[None]:
        connection.run_on_commit.clear()
        with django_capture_on_commit_callbacks(execute=True):
            yield
        connection.run_on_commit.clear()

    return commit


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run(*args: str) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def run_failing(*args: str) -> tuple[str, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command(*args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue(), str(raised.value)


# --- the file format ---------------------------------------------------------------------------------


def test_it_reads_the_front_matter_the_title_and_the_body() -> None:
    parsed = article_file_parse(name="kb/en/returns.md", text=RETURNS)

    assert parsed == importing.ArticleFile(
        slug="returns",
        title="Returns",
        body="Within 30 days.\n\n## How\n\nFrom My orders.",
        locale="en",
        tags="returns, refunds",
        status=None,
    )


def test_it_reads_a_file_without_front_matter_with_windows_line_endings_and_a_byte_order_mark() -> None:
    parsed = article_file_parse(name="fapiao.md", text="\ufeff# 发票\r\n\r\n发货后开具。\r\n")

    assert (parsed.slug, parsed.title, parsed.body, parsed.locale, parsed.tags, parsed.status) == (
        "fapiao",
        "发票",
        "发货后开具。",
        None,
        "",
        None,
    )


def test_it_reads_tags_as_a_yaml_list_and_a_quoted_status() -> None:
    parsed = article_file_parse(
        name="a.md", text='---\ntags: [returns, "refunds"]\nstatus: "Published"\n---\n# A\n\nB'
    )

    assert (parsed.tags, parsed.status) == ("returns, refunds", "published")


def test_it_takes_the_title_and_language_from_front_matter_other_tools_write() -> None:
    parsed = article_file_parse(
        name="returns.md", text="---\ntitle: Returns\nlanguage: zh-CN\n---\n\nWithin 30 days."
    )

    assert (parsed.title, parsed.body, parsed.locale) == ("Returns", "Within 30 days.", "zh-Hans")


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        ("退货政策.md", "# T\n\nB", "'退货政策' is not a valid slug"),
        ("returns policy.md", "# T\n\nB", "'returns policy' is not a valid slug"),
        ("returns.txt", "# T\n\nB", "not a Markdown file"),
        (
            "returns.md",
            "Returns\n\nB",
            "the first line of the article (after any front matter) must be '# Title'",
        ),
        ("returns.md", "## Returns\n\nB", "must be '# Title'"),
        ("returns.md", "---\nlang: en\n# Returns\n\nB", "never closed"),
        ("returns.md", "---\nlang: fr\n---\n# Returns\n\nB", "unknown language 'fr'"),
        ("returns.md", "---\nstatus: live\n---\n# Returns\n\nB", "unknown status 'live'"),
        ("returns.md", "---\njust words\n---\n# Returns\n\nB", "line 2 of the front matter"),
        ("returns.md", "# Returns\n\n", "no text"),
    ],
)
def test_it_says_what_is_wrong_with_a_bad_file(name: str, text: str, error: str) -> None:
    with pytest.raises(KnowledgeImportError) as raised:
        article_file_parse(name=name, text=text)

    assert error in str(raised.value)


@pytest.mark.parametrize(
    ("text", "locale"),
    [
        ("How do I get a fapiao (发票) for my order?", "en"),
        ("如何申请电子发票？在「我的订单」中点击 Invoice 按钮即可。", "zh-Hans"),
        ("我的 iPhone app 打不开", "zh-Hans"),
        ("", "en"),
    ],
)
def test_it_detects_the_language_from_the_share_of_chinese_characters(text: str, locale: str) -> None:
    assert locale_detect(text) == locale


def test_it_writes_an_article_back_in_the_format_it_reads() -> None:
    article = Article(
        slug="returns",
        title="Returns",
        body="Within 30 days.",
        locale="en",
        tags="returns,refunds",
        status="draft",
    )

    text = importing.article_file_text(article)

    assert text == "---\nlang: en\ntags: returns, refunds\nstatus: draft\n---\n# Returns\n\nWithin 30 days.\n"
    parsed = article_file_parse(name="returns.md", text=text)
    assert (parsed.title, parsed.body, parsed.locale, parsed.tags, parsed.status) == (
        "Returns",
        "Within 30 days.",
        "en",
        "returns, refunds",
        "draft",
    )


# --- importing articles ----------------------------------------------------------------------------------


def test_it_imports_a_folder_recursively_as_drafts_and_prints_the_counts(tmp_path: Path) -> None:
    write(tmp_path, "en/returns.md", RETURNS)
    write(tmp_path, "zh/deep/fapiao.md", "# 发票\n\n发货后 24 小时内开具电子发票。")
    write(tmp_path, "notes.txt", "not an article")
    write(tmp_path, ".git/hidden.md", "# Hidden\n\nNo.")

    stdout, stderr = run("import_articles", str(tmp_path))

    assert stdout == "articles: created 2, updated 0, unchanged 0, failed 0\n"
    assert stderr == ""
    assert list(
        Article.objects.order_by("slug").values_list("slug", "title", "locale", "tags", "status", "version")
    ) == [
        ("fapiao", "发票", "zh-Hans", "", "draft", 1),
        ("returns", "Returns", "en", "returns, refunds", "draft", 1),
    ]
    assert ArticleVersion.objects.count() == 2


def test_it_takes_the_language_from_the_option_then_the_file_then_the_text(tmp_path: Path) -> None:
    with_lang = write(tmp_path, "with-lang.md", "---\nlang: zh-Hans\n---\n# Title\n\nEnglish words only.")
    detected = write(tmp_path, "detected.md", "# 发票\n\n发货后开具。")

    run("import_articles", str(with_lang), str(detected))
    assert dict(Article.objects.values_list("slug", "locale")) == {
        "with-lang": "zh-Hans",
        "detected": "zh-Hans",
    }
    run("import_articles", "--locale", "en", str(with_lang), str(detected))

    assert dict(Article.objects.values_list("slug", "locale")) == {"with-lang": "en", "detected": "en"}


def test_it_updates_a_reimported_slug_and_keeps_the_earlier_version(tmp_path: Path) -> None:
    path = write(tmp_path, "returns.md", RETURNS)
    run("import_articles", "--publish", str(path))
    write(tmp_path, "returns.md", RETURNS.replace("Within 30 days.", "Within 60 days."))

    stdout, _ = run("import_articles", str(path))

    assert stdout == "articles: created 0, updated 1, unchanged 0, failed 0\n"
    article = Article.objects.get()
    assert (article.version, article.status, article.body.splitlines()[0]) == (
        2,
        "published",
        "Within 60 days.",
    )
    assert list(article.versions.order_by("number").values_list("number", "body")) == [
        (1, "Within 30 days.\n\n## How\n\nFrom My orders."),
        (2, "Within 60 days.\n\n## How\n\nFrom My orders."),
    ]


def test_it_reports_an_unchanged_file_and_saves_no_version(tmp_path: Path) -> None:
    path = write(tmp_path, "returns.md", RETURNS)
    run("import_articles", str(path))

    stdout, _ = run("import_articles", str(path))

    assert stdout == "articles: created 0, updated 0, unchanged 1, failed 0\n"
    assert (Article.objects.get().version, ArticleVersion.objects.count()) == (1, 1)


def test_it_publishes_only_with_the_option_and_keeps_the_status_of_an_existing_article(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "returns.md", RETURNS)
    run("import_articles", str(path))
    assert Article.objects.get().status == "draft"
    run("import_articles", "--publish", str(path))
    assert Article.objects.get().status == "published"

    write(tmp_path, "returns.md", RETURNS.replace("30", "60"))
    run("import_articles", str(path))

    assert list(Article.objects.values_list("status", "version")) == [("published", 3)]


def test_it_imports_the_good_files_reports_the_bad_ones_and_exits_non_zero(tmp_path: Path) -> None:
    write(tmp_path, "returns.md", RETURNS)
    write(tmp_path, "Bad Name.md", "# Bad\n\nText.")
    write(tmp_path, "no-title.md", "Just text.")
    (tmp_path / "latin1.md").write_bytes("# Caf\xe9\n\nText.".encode("latin-1"))

    stdout, stderr, error = run_failing("import_articles", str(tmp_path), str(tmp_path / "missing.md"))

    assert stdout == "articles: created 1, updated 0, unchanged 0, failed 4\n"
    assert stderr.splitlines() == [
        f"failed: {tmp_path / 'missing.md'}: no such file or folder",
        f"failed: {tmp_path / 'Bad Name.md'}: 'Bad Name' is not a valid slug: the file name may use only "
        "letters, digits, hyphens and underscores (it is the article's address, /kb/<slug>/)",
        f"failed: {tmp_path / 'latin1.md'}: the file is not UTF-8 text",
        f"failed: {tmp_path / 'no-title.md'}: the first line of the article (after any front matter) "
        "must be '# Title'",
    ]
    assert error == "4 of 5 failed (see above)"
    assert list(Article.objects.values_list("slug", flat=True)) == ["returns"]


def test_it_refuses_a_slug_given_twice_in_one_import(tmp_path: Path) -> None:
    write(tmp_path, "en/returns.md", RETURNS)
    write(tmp_path, "zh/returns.md", "# 退货\n\n30 天内。")

    _, stderr, _ = run_failing("import_articles", str(tmp_path))

    first, second = tmp_path / "en/returns.md", tmp_path / "zh/returns.md"
    assert stderr == f"failed: {second}: the slug 'returns' was already imported from {first}\n"
    assert list(Article.objects.values_list("title", flat=True)) == ["Returns"]


def test_it_round_trips_every_article_through_export_and_import(tmp_path: Path) -> None:
    write(tmp_path / "in", "returns.md", RETURNS)
    write(
        tmp_path / "in",
        "fapiao.md",
        "---\nstatus: published\n---\n# 发票\n\n发货后开具。\n\n## 企业发票\n\n"
        "| 类型 | 时间 |\n|---|---|\n| 电子 | 24 小时 |",
    )
    run("import_articles", str(tmp_path / "in"))
    before = list(
        Article.objects.order_by("slug").values_list("slug", "title", "body", "locale", "tags", "status")
    )

    exported, _ = run("export_articles", str(tmp_path / "out"))
    Article.objects.all().delete()
    run("import_articles", str(tmp_path / "out"))
    after = list(
        Article.objects.order_by("slug").values_list("slug", "title", "body", "locale", "tags", "status")
    )
    again, _ = run("import_articles", str(tmp_path / "out"))

    assert exported == f"articles: exported 2 to {tmp_path / 'out'}\n"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["fapiao.md", "returns.md"]
    assert after == before
    assert again == "articles: created 0, updated 0, unchanged 2, failed 0\n"


def test_it_imports_a_zip_named_on_the_command_line(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "kb.zip", "w") as archive:
        archive.writestr("returns.md", RETURNS)

    stdout, _ = run("import_articles", "--publish", str(tmp_path / "kb.zip"))

    assert stdout == "articles: created 1, updated 0, unchanged 0, failed 0\n"
    assert list(Article.objects.values_list("slug", "status")) == [("returns", "published")]


def test_it_asks_for_an_index_rebuild_when_it_imports_published_articles(
    tmp_path: Path, rebuilds: list[str], committed: Any
) -> None:
    write(tmp_path, "returns.md", RETURNS)

    with committed():
        run("import_articles", "--publish", str(tmp_path))

    assert rebuilds == ["rebuild"]


# --- FAQ entries -----------------------------------------------------------------------------------------

FAQ_CSV = (
    "question,answer,locale,is_quick_entry,position,is_published\n"
    'How long is delivery?,"Two to four working days.\nExpress: next day.",en,true,1,true\n'
    "运费多少？,满 99 元包邮。,zh-Hans,false,2,false\n"
)


def test_it_imports_faq_entries_from_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "faq.csv", FAQ_CSV)

    stdout, _ = run("import_faq", str(path))

    assert stdout == "FAQ entries: created 2, updated 0, unchanged 0, failed 0\n"
    assert list(
        FaqEntry.objects.order_by("locale").values_list(
            "question", "answer", "locale", "is_quick_entry", "position", "is_published"
        )
    ) == [
        ("How long is delivery?", "Two to four working days.\nExpress: next day.", "en", True, 1, True),
        ("运费多少？", "满 99 元包邮。", "zh-Hans", False, 2, False),
    ]


def test_it_updates_the_faq_entry_with_the_same_language_and_question(tmp_path: Path) -> None:
    existing = FaqEntryFactory(
        question="运费多少？", answer="Old.", locale="zh-Hans", is_quick_entry=True, position=0
    )
    same_question_in_english = FaqEntryFactory(question="运费多少？", answer="Other.", locale="en")
    path = write(tmp_path, "faq.csv", FAQ_CSV)

    stdout, _ = run("import_faq", str(path))
    again, _ = run("import_faq", str(path))

    assert stdout == "FAQ entries: created 1, updated 1, unchanged 0, failed 0\n"
    assert again == "FAQ entries: created 0, updated 0, unchanged 2, failed 0\n"
    existing.refresh_from_db()
    same_question_in_english.refresh_from_db()
    assert (existing.answer, existing.is_quick_entry, existing.position, existing.is_published) == (
        "满 99 元包邮。",
        False,
        2,
        False,
    )
    assert same_question_in_english.answer == "Other."
    assert FaqEntry.objects.count() == 3


def test_it_reports_bad_faq_rows_keeps_the_good_ones_and_exits_non_zero(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "faq.csv",
        "question,answer,locale,is_quick_entry,position,is_published\n"
        "Good?,Yes.,en,true,1,true\n"
        "Bad locale?,No.,fr,true,1,true\n"
        "Bad flag?,No.,en,maybe,1,true\n"
        "Bad position?,No.,en,true,first,true\n"
        "检测语言？,是的。,,,,\n",
    )

    stdout, stderr, error = run_failing("import_faq", str(path))

    assert stdout == "FAQ entries: created 2, updated 0, unchanged 0, failed 3\n"
    assert stderr.splitlines() == [
        f"failed: {path} line 3: unknown language 'fr': use zh-Hans or en",
        f"failed: {path} line 4: is_quick_entry is 'maybe': use true or false",
        f"failed: {path} line 5: position is 'first': use a whole number",
    ]
    assert error == "3 of 5 failed (see above)"
    assert list(
        FaqEntry.objects.order_by("question").values_list(
            "question", "locale", "is_quick_entry", "position", "is_published"
        )
    ) == [
        ("Good?", "en", True, 1, True),
        ("检测语言？", "zh-Hans", False, 0, True),
    ]


def test_it_refuses_a_csv_without_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "faq.csv", "How long?,Two days.,en\n")

    _, stderr, _ = run_failing("import_faq", str(path))

    assert stderr == (
        f"failed: {path}: the first line must be the header "
        "question,answer,locale,is_quick_entry,position,is_published (missing: question, answer)\n"
    )
    assert FaqEntry.objects.count() == 0


def test_it_round_trips_the_faq_through_export_and_import(tmp_path: Path) -> None:
    run("import_faq", str(write(tmp_path, "faq.csv", FAQ_CSV)))
    before = list(
        FaqEntry.objects.order_by("locale").values_list(
            "question", "answer", "locale", "is_quick_entry", "position", "is_published"
        )
    )

    exported, _ = run("export_faq", str(tmp_path / "out.csv"))
    FaqEntry.objects.all().delete()
    run("import_faq", str(tmp_path / "out.csv"))

    assert exported == f"FAQ entries: exported 2 to {tmp_path / 'out.csv'}\n"
    assert (tmp_path / "out.csv").read_text(encoding="utf-8") == FAQ_CSV
    assert (
        list(
            FaqEntry.objects.order_by("locale").values_list(
                "question", "answer", "locale", "is_quick_entry", "position", "is_published"
            )
        )
        == before
    )


# --- the demo knowledge base -------------------------------------------------------------------------------


def test_it_loads_the_demo_knowledge_base_once_published_and_asks_for_the_index(
    tmp_path: Path, rebuilds: list[str], committed: Any
) -> None:
    write(tmp_path, "articles/en/returns.md", RETURNS)
    write(tmp_path, "articles/zh-Hans/fapiao.md", "---\nlang: zh-Hans\n---\n# 发票\n\n发货后开具。")
    write(tmp_path, "faq.csv", FAQ_CSV)

    with committed():
        report = demo_knowledge_load(tmp_path)
    with committed():
        again = demo_knowledge_load(tmp_path)

    assert report.summary() == "created 4, updated 0, unchanged 0, failed 0"
    assert again.results == []
    assert list(Article.objects.order_by("slug").values_list("slug", "locale", "status")) == [
        ("fapiao", "zh-Hans", "published"),
        ("returns", "en", "published"),
    ]
    assert FaqEntry.objects.count() == 2
    # Once for the load; the second call finds no ready build yet (none ran here) and asks again.
    assert rebuilds == ["rebuild", "rebuild"]


def test_it_asks_for_no_index_when_the_demo_is_loaded_and_a_build_is_ready(
    tmp_path: Path, rebuilds: list[str], committed: Any
) -> None:
    factories.ArticleFactory()
    FaqEntryFactory()
    IndexBuild.objects.create(status=IndexBuild.Status.READY, embedder_model="m")
    write(tmp_path, "articles/en/returns.md", RETURNS)

    with committed():
        report = demo_knowledge_load(tmp_path)

    assert (report.results, rebuilds, Article.objects.filter(slug="returns").exists()) == ([], [], False)


@pytest.mark.skipif(
    not (DEMO_KNOWLEDGE_DIR / "articles").is_dir(), reason="the demo articles are not there yet"
)
def test_it_imports_every_demo_file_without_a_failure() -> None:
    report = demo_knowledge_load()

    assert report.failures == []
    articles = Article.objects.filter(status="published")
    assert articles.count() == len(list((DEMO_KNOWLEDGE_DIR / "articles").rglob("*.md")))
    # Each demo article's folder names its language, and the file agrees.
    for path in (DEMO_KNOWLEDGE_DIR / "articles").rglob("*.md"):
        assert articles.get(slug=path.stem).locale == path.parent.name, path


def test_it_waits_for_the_index_build_thread_of_the_embedded_default(settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    finished: list[str] = []

    def slow_build() -> None:
        time.sleep(0.3)
        finished.append("built")

    build = threading.Thread(target=slow_build, name=services.INDEX_THREAD_NAME, daemon=True)
    build.start()

    services.index_rebuild_wait()

    assert (finished, build.is_alive()) == (["built"], False)


def test_it_does_not_wait_for_a_build_with_a_celery_worker(settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = False
    release = threading.Event()
    build = threading.Thread(target=release.wait, name=services.INDEX_THREAD_NAME, daemon=True)
    build.start()

    services.index_rebuild_wait()

    assert build.is_alive()
    release.set()
    build.join()
