"""Writes to the knowledge base: articles with their versions, FAQ entries, and the index rebuild they need.

Admin, the import commands, the admin import pages and the demo data all save through here, so that
every change of an article is a version with its editor, and every change of published content asks
for the index to be rebuilt once the change is committed (never in the request: knowledge/tasks.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from knowledge import tasks
from knowledge.models import Article, ArticleVersion, FaqEntry

__all__ = [
    "ARTICLE_VERSIONED_FIELDS",
    "FAQ_INDEXED_FIELDS",
    "Editor",
    "article_delete",
    "article_publish",
    "article_save",
    "article_unpublish",
    "article_version_restore",
    "articles_delete",
    "faq_entries_delete",
    "faq_entry_delete",
    "faq_entry_save",
    "index_rebuild_on_commit",
    "index_rebuild_wait",
]

# Who saves: a staff user in admin, None for commands and imports (AnonymousUser is recorded as None).
Editor = AbstractBaseUser | AnonymousUser | None

# A change to any of these is a new version of the article (the slug is its address, not its content).
ARTICLE_VERSIONED_FIELDS = ("title", "body", "locale", "tags", "status")
# What retrieval reads of an FAQ entry: a change to one of these changes the index.
FAQ_INDEXED_FIELDS = ("question", "answer", "locale", "is_published")


def _index_rebuild_enqueue() -> None:
    # Looked up on the module at call time, so that the task module can be replaced in tests.
    tasks.index_rebuild_enqueue()


def index_rebuild_on_commit() -> None:
    """Ask for the index to be rebuilt once the current transaction commits (at once outside one).

    Asked for once per transaction: an import of forty articles in one transaction is one build.
    """
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        callback is _index_rebuild_enqueue for _, callback, _ in connection.run_on_commit
    ):
        return
    transaction.on_commit(_index_rebuild_enqueue)


# The name knowledge.indexing gives the thread that builds the index in the embedded default.
INDEX_THREAD_NAME = "knowledge-index-rebuild"


def index_rebuild_wait() -> None:
    """Wait for an index build running on a thread of this process (the embedded default's, with Celery
    eager); return at once when there is none, as with a Celery worker."""
    # A command's exit would kill that daemon thread half-way; and `make run` must not fork its
    # children while it runs (a fork while another thread holds a lock can hang the child).
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        return
    for thread in threading.enumerate():
        if thread.name == INDEX_THREAD_NAME and thread is not threading.current_thread():
            thread.join()


def _user_or_none(user: Editor) -> Any:
    """The editor to record: a signed-in user, or None for a command, an import or the anonymous user."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user


def _line_endings_normalised(text: str) -> str:
    # A browser's textarea sends CRLF, a file may have either: one form, so that an unchanged text
    # exported and imported again (or saved again in admin) is not a new version.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _version_write(*, article: Article, user: Any) -> ArticleVersion:
    return ArticleVersion.objects.create(
        article=article,
        number=article.version,
        title=article.title,
        body=article.body,
        locale=article.locale,
        tags=article.tags,
        status=article.status,
        created_by=user,
    )


def article_save(*, article: Article, user: Editor) -> Article:
    """Save a new or edited article; a change of title, body, language, tags or status is a new version."""
    editor = _user_or_none(user)
    article.body = _line_endings_normalised(article.body)
    article.full_clean()
    with transaction.atomic():
        if article.pk is None:
            article.version = 1
            article.updated_by = editor
            article.save()
            _version_write(article=article, user=editor)
            if article.status == Article.Status.PUBLISHED:
                index_rebuild_on_commit()
            return article
        # Locked, so that two editors saving at once get versions n+1 and n+2, not two n+1.
        saved = Article.objects.select_for_update().get(pk=article.pk)
        content_changed = any(
            getattr(saved, name) != getattr(article, name) for name in ARTICLE_VERSIONED_FIELDS
        )
        slug_changed = saved.slug != article.slug
        if not content_changed and not slug_changed:
            # Nothing to keep: the article, its version and its editor stay as they were.
            for name in (*ARTICLE_VERSIONED_FIELDS, "slug", "version", "updated_by_id", "updated_at"):
                setattr(article, name, getattr(saved, name))
            return article
        was_published = saved.status == Article.Status.PUBLISHED
        article.updated_by = editor
        article.version = saved.version + 1 if content_changed else saved.version
        article.save()
        if content_changed:
            _version_write(article=article, user=editor)
        if was_published or article.status == Article.Status.PUBLISHED:
            # A citation names the slug: a published article's new address changes the index too.
            index_rebuild_on_commit()
        return article


def article_publish(*, article: Article, user: Editor) -> Article:
    """Publish an article (a new version when it was a draft)."""
    article.status = Article.Status.PUBLISHED
    return article_save(article=article, user=user)


def article_unpublish(*, article: Article, user: Editor) -> Article:
    """Take an article back to draft (a new version when it was published); it leaves the index."""
    article.status = Article.Status.DRAFT
    return article_save(article=article, user=user)


def article_version_restore(*, version: ArticleVersion, user: Editor) -> Article:
    """Save the article again as it was in `version`: a new version, the earlier ones all kept."""
    article = Article.objects.get(pk=version.article_id)
    article.title = version.title
    article.body = version.body
    article.locale = version.locale
    article.tags = version.tags
    # The status stays as it is now: restoring an old text must not take a published article off the
    # site (or publish a draft); publishing is its own decision, with its own action.
    return article_save(article=article, user=user)


def article_delete(*, article: Article) -> None:
    """Delete an article with its versions and chunks; a published one leaves the index."""
    articles_delete(articles=[article])


def articles_delete(*, articles: Iterable[Article]) -> int:
    """Delete articles (admin's bulk delete); return how many; the index is rebuilt if one was published."""
    primary_keys = [article.pk for article in articles]
    with transaction.atomic():
        selected = Article.objects.filter(pk__in=primary_keys)
        any_published = selected.filter(status=Article.Status.PUBLISHED).exists()
        count = selected.count()
        selected.delete()
        if any_published:
            index_rebuild_on_commit()
    return count


def faq_entry_save(*, entry: FaqEntry, user: Editor) -> FaqEntry:
    """Save a new or edited FAQ entry; the index is rebuilt when what retrieval reads of it changed."""
    editor = _user_or_none(user)
    entry.answer = _line_endings_normalised(entry.answer)
    entry.full_clean()
    with transaction.atomic():
        if entry.pk is None:
            entry.updated_by = editor
            entry.save()
            if entry.is_published:
                index_rebuild_on_commit()
            return entry
        saved = FaqEntry.objects.select_for_update().get(pk=entry.pk)
        changed_fields = [
            name
            for name in ("question", "answer", "locale", "is_quick_entry", "position", "is_published")
            if getattr(saved, name) != getattr(entry, name)
        ]
        if not changed_fields:
            entry.updated_by_id = saved.updated_by_id
            entry.updated_at = saved.updated_at
            return entry
        entry.updated_by = editor
        entry.save()
        indexed_change = any(name in FAQ_INDEXED_FIELDS for name in changed_fields)
        if indexed_change and (saved.is_published or entry.is_published):
            index_rebuild_on_commit()
        return entry


def faq_entry_delete(*, entry: FaqEntry) -> None:
    """Delete an FAQ entry; a published one leaves the index."""
    faq_entries_delete(entries=[entry])


def faq_entries_delete(*, entries: Iterable[FaqEntry]) -> int:
    """Delete FAQ entries (admin's bulk delete); return how many; rebuild the index if one was published."""
    primary_keys = [entry.pk for entry in entries]
    with transaction.atomic():
        selected = FaqEntry.objects.filter(pk__in=primary_keys)
        any_published = selected.filter(is_published=True).exists()
        count = selected.count()
        selected.delete()
        if any_published:
            index_rebuild_on_commit()
    return count
