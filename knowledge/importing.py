"""Import and export of the knowledge base: articles as Markdown files, FAQ entries as CSV.

Used by the management commands, admin's import and export pages and the demo data, so the three
agree on the format. An article file is an optional front matter between two `---` lines (keys
`lang`, `tags`, `status`), then `# Title` on the first line of the body; its slug is the file name
without `.md`. Every file (or CSV row) is saved in its own transaction through knowledge.services,
so a re-import is a new version with the old one kept, and one bad file never costs the good ones.
"""

from __future__ import annotations

import csv
import enum
import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from knowledge import services
from knowledge.models import Article, FaqEntry, Locale

__all__ = [
    "FAQ_CSV_COLUMNS",
    "ArticleFile",
    "ImportOutcome",
    "ImportReport",
    "ImportResult",
    "KnowledgeImportError",
    "article_file_parse",
    "article_file_text",
    "article_sources",
    "articles_export_to_directory",
    "articles_export_zip",
    "articles_import",
    "articles_import_paths",
    "faq_csv_export",
    "faq_csv_import",
    "locale_detect",
    "locale_normalise",
]

FAQ_CSV_COLUMNS = ("question", "answer", "locale", "is_quick_entry", "position", "is_published")
# A text whose letters are at least this share Han characters is Chinese: an English article quoting a
# word of Chinese (发票) stays English, a Chinese one naming an app screen or "iPhone" stays Chinese.
CHINESE_SHARE = 0.2
# Large enough for any article, small enough that a stray upload cannot fill memory.
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_ZIP_FILES = 2000

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_LETTER = re.compile(r"[A-Za-z]")
_TITLE_LINE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$")
_FRONT_MATTER_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)[ \t]*:[ \t]*(.*)$")
_LOCALE_ALIASES = {
    "zh-hans": Locale.ZH_HANS,
    "zh": Locale.ZH_HANS,
    "zh-cn": Locale.ZH_HANS,
    "zh_cn": Locale.ZH_HANS,
    "zh-hans-cn": Locale.ZH_HANS,
    "zh_hans": Locale.ZH_HANS,
    "cn": Locale.ZH_HANS,
    "chinese": Locale.ZH_HANS,
    "en": Locale.EN,
    "en-us": Locale.EN,
    "en_us": Locale.EN,
    "en-gb": Locale.EN,
    "en_gb": Locale.EN,
    "english": Locale.EN,
}
_TRUE = {"1", "true", "yes", "y", "t", "on"}
_FALSE = {"0", "false", "no", "n", "f", "off"}


class KnowledgeImportError(ValueError):
    """A file or row that cannot be imported; the message says why, in a sentence for the editor."""


class ImportOutcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(frozen=True)
class ImportResult:
    """What happened to one file (or CSV row): `name` as the editor knows it, the reason when it failed."""

    name: str
    outcome: ImportOutcome
    slug: str = ""
    error: str = ""


@dataclass
class ImportReport:
    results: list[ImportResult] = field(default_factory=list)

    @property
    def counts(self) -> dict[ImportOutcome, int]:
        counted = Counter(result.outcome for result in self.results)
        return {outcome: counted.get(outcome, 0) for outcome in ImportOutcome}

    @property
    def failures(self) -> list[ImportResult]:
        return [result for result in self.results if result.outcome == ImportOutcome.FAILED]

    def summary(self) -> str:
        """The counts in one line: "created 3, updated 1, unchanged 0, failed 1"."""
        return ", ".join(f"{outcome.value} {count}" for outcome, count in self.counts.items())


@dataclass(frozen=True)
class ArticleFile:
    """An article file, parsed: what it says, before it is saved."""

    slug: str
    title: str
    body: str
    # From `lang:` in the front matter; None when the file does not say.
    locale: str | None
    tags: str
    # From `status:` in the front matter; None when the file does not say.
    status: str | None


def locale_normalise(value: str) -> str:
    """The locale ("zh-Hans" or "en") of a language code as people write it: zh, zh-CN, en-US…"""
    locale = _LOCALE_ALIASES.get(value.strip().lower())
    if locale is None:
        raise KnowledgeImportError(f"unknown language {value.strip()!r}: use zh-Hans or en")
    return str(locale)


def locale_detect(text: str) -> str:
    """The locale "zh-Hans" when a large enough share of the text's letters are Han characters, else "en"."""
    han = len(_HAN.findall(text))
    latin = len(_LATIN_LETTER.findall(text))
    if han and han / (han + latin) >= CHINESE_SHARE:
        return str(Locale.ZH_HANS)
    return str(Locale.EN)


def _slug_from_name(name: str) -> str:
    file_name = PurePosixPath(name.replace("\\", "/")).name
    if not file_name.lower().endswith(".md"):
        raise KnowledgeImportError("not a Markdown file: the name must end in .md")
    slug = file_name[: -len(".md")]
    try:
        validate_slug(slug)
    except ValidationError:
        raise KnowledgeImportError(
            f"{slug!r} is not a valid slug: the file name may use only letters, digits, hyphens and "
            "underscores (it is the article's address, /kb/<slug>/)"
        ) from None
    max_length = Article._meta.get_field("slug").max_length or 0
    if len(slug) > max_length:
        raise KnowledgeImportError(f"the file name is longer than {max_length} characters")
    return slug


def _tags_parse(value: str) -> str:
    """Tags written "a, b" or as a YAML list "[a, b]", kept as "a, b"."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    tags = [tag.strip().strip("\"'").strip() for tag in value.split(",")]
    return ", ".join(tag for tag in tags if tag)


def _front_matter_split(lines: list[str]) -> tuple[dict[str, str], list[str]]:
    if not lines or lines[0].strip() != "---":
        return {}, lines
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            break
    else:
        raise KnowledgeImportError(
            "the front matter opened by '---' on the first line is never closed by '---'"
        )
    keys: dict[str, str] = {}
    for number, line in enumerate(lines[1:index], start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _FRONT_MATTER_LINE.match(line.strip())
        if match is None:
            raise KnowledgeImportError(f"line {number} of the front matter is not 'key: value'")
        value = match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        keys[match.group(1).lower()] = value
    return keys, lines[index + 1 :]


def article_file_parse(*, name: str, text: str) -> ArticleFile:
    """Parse one article file named `name` (only its file name counts); KnowledgeImportError if bad."""
    slug = _slug_from_name(name)
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    keys, body_lines = _front_matter_split(lines)
    while body_lines and not body_lines[0].strip():
        body_lines = body_lines[1:]
    title_match = _TITLE_LINE.match(body_lines[0].strip()) if body_lines else None
    if title_match is not None:
        title = title_match.group(1).strip()
        body_lines = body_lines[1:]
    elif keys.get("title"):
        # Written by another tool (Jekyll, Hugo): the title in the front matter, the body all text.
        title = keys["title"].strip()
    else:
        raise KnowledgeImportError("the first line of the article (after any front matter) must be '# Title'")
    max_title = Article._meta.get_field("title").max_length or 0
    if len(title) > max_title:
        raise KnowledgeImportError(f"the title is longer than {max_title} characters")
    body = "\n".join(body_lines).strip("\n").rstrip()
    if not body.strip():
        raise KnowledgeImportError("the article has a title but no text")
    # `lang` is the format's; `locale` and `language` are what other tools write.
    language = keys.get("lang") or keys.get("locale") or keys.get("language")
    locale = locale_normalise(language) if language else None
    status = None
    if keys.get("status"):
        status = keys["status"].strip().lower()
        if status not in Article.Status.values:
            raise KnowledgeImportError(f"unknown status {keys['status']!r}: use draft or published")
    return ArticleFile(
        slug=slug,
        title=title,
        body=body,
        locale=locale,
        tags=_tags_parse(keys.get("tags", "")),
        status=status,
    )


def article_file_text(article: Article) -> str:
    """An article as a file: the format article_file_parse reads, so an export imports back unchanged."""
    lines = ["---", f"lang: {article.locale}"]
    if article.tag_list:
        lines.append(f"tags: {', '.join(article.tag_list)}")
    lines += [f"status: {article.status}", "---", f"# {article.title}", "", article.body.strip("\n"), ""]
    return "\n".join(lines)


def _decode(data: bytes) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise KnowledgeImportError(f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KnowledgeImportError("the file is not UTF-8 text") from None


def _article_import_one(
    *, name: str, data: bytes, publish: bool, locale: str | None, user: services.Editor
) -> ImportResult:
    parsed = article_file_parse(name=name, text=_decode(data))
    with transaction.atomic():
        article = Article.objects.select_for_update().filter(slug=parsed.slug).first()
        created = article is None
        if article is None:
            article = Article(slug=parsed.slug)
        version_before = article.version
        article.title = parsed.title
        article.body = parsed.body
        # --locale wins, then the file's lang:, then what the text looks like.
        article.locale = locale or parsed.locale or locale_detect(f"{parsed.title}\n{parsed.body}")
        article.tags = parsed.tags
        if publish:
            article.status = Article.Status.PUBLISHED
        elif parsed.status is not None:
            article.status = parsed.status
        elif created:
            article.status = Article.Status.DRAFT
        try:
            services.article_save(article=article, user=user)
        except ValidationError as error:
            raise KnowledgeImportError("; ".join(error.messages)) from None
    if created:
        outcome = ImportOutcome.CREATED
    else:
        outcome = ImportOutcome.UPDATED if article.version != version_before else ImportOutcome.UNCHANGED
    return ImportResult(name=name, outcome=outcome, slug=parsed.slug)


def articles_import(
    *,
    files: Iterable[tuple[str, bytes]],
    publish: bool = False,
    locale: str | None = None,
    user: services.Editor = None,
) -> ImportReport:
    """Import article files given as (name, content); each is created, updated, unchanged or failed."""
    if locale is not None:
        locale = locale_normalise(locale)
    report = ImportReport()
    seen: dict[str, str] = {}
    for name, data in files:
        try:
            slug = _slug_from_name(name)
            if slug in seen:
                raise KnowledgeImportError(f"the slug {slug!r} was already imported from {seen[slug]}")
            seen[slug] = name
            result = _article_import_one(name=name, data=data, publish=publish, locale=locale, user=user)
        except KnowledgeImportError as error:
            result = _failed(name, str(error))
        report.results.append(result)
    return report


def _is_hidden(path: PurePosixPath) -> bool:
    # Finder's and zip tools' leftovers (.DS_Store, __MACOSX/, ._name) are not articles.
    return any(part.startswith((".", "__MACOSX")) for part in path.parts)


def _failed(name: str, error: str) -> ImportResult:
    return ImportResult(name=name, outcome=ImportOutcome.FAILED, error=error)


def _zip_members(data: bytes, *, archive_name: str) -> tuple[list[tuple[str, bytes]], list[ImportResult]]:
    """The .md files in a zip archive as (name, content) in name order, and the members refused."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return [], [_failed(archive_name, "not a zip archive")]
    sources: list[tuple[str, bytes]] = []
    refused: list[ImportResult] = []
    with archive:
        members = sorted(
            (
                member
                for member in archive.infolist()
                if not member.is_dir()
                and member.filename.lower().endswith(".md")
                and not _is_hidden(PurePosixPath(member.filename))
            ),
            key=lambda member: member.filename,
        )
        if len(members) > MAX_ZIP_FILES:
            return [], [_failed(archive_name, f"more than {MAX_ZIP_FILES} articles in one archive")]
        for member in members:
            # Read as a path: the file name (the slug) is its last part.
            name = f"{archive_name}/{member.filename}"
            if member.file_size > MAX_FILE_BYTES:
                refused.append(_failed(name, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MB"))
                continue
            try:
                sources.append((name, archive.read(member)))
            except (zipfile.BadZipFile, OSError, RuntimeError) as error:
                refused.append(_failed(name, f"cannot be read from the archive ({error})"))
    return sources, refused


def article_sources(items: Iterable[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], list[ImportResult]]:
    """Uploaded files as article files: a .zip is opened and its .md files taken, any other file kept
    as it is (a name not ending in .md fails on import, with its reason). Also the archives refused."""
    sources: list[tuple[str, bytes]] = []
    refused: list[ImportResult] = []
    for name, data in items:
        if name.lower().endswith(".zip"):
            members, failures = _zip_members(data, archive_name=name)
            sources += members
            refused += failures
        else:
            sources.append((name, data))
    return sources, refused


def articles_import_paths(
    *, paths: Iterable[Path], publish: bool = False, locale: str | None = None, user: services.Editor = None
) -> ImportReport:
    """Import what a command line names: .md files, .zip archives, and folders searched recursively
    for .md files. A path that does not exist is reported as failed, not skipped in silence."""
    items: list[tuple[str, bytes]] = []
    missing: list[ImportResult] = []
    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*.md")):
                if found.is_file() and not _is_hidden(PurePosixPath(found.relative_to(path).as_posix())):
                    items.append((str(found), found.read_bytes()))
        elif path.is_file():
            items.append((str(path), path.read_bytes()))
        else:
            missing.append(_failed(str(path), "no such file or folder"))
    sources, refused = article_sources(items)
    report = articles_import(files=sources, publish=publish, locale=locale, user=user)
    report.results[:0] = missing + refused
    return report


def _articles_for_export() -> list[Article]:
    return list(Article.objects.order_by("slug"))


def articles_export_to_directory(directory: Path) -> int:
    """Write every article to `directory` as <slug>.md; return how many."""
    directory.mkdir(parents=True, exist_ok=True)
    articles = _articles_for_export()
    for article in articles:
        (directory / f"{article.slug}.md").write_text(article_file_text(article), encoding="utf-8")
    return len(articles)


def articles_export_zip() -> bytes:
    """Every article as <slug>.md in a zip archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for article in _articles_for_export():
            archive.writestr(f"{article.slug}.md", article_file_text(article))
    return buffer.getvalue()


def _boolean(value: str, *, column: str, default: bool) -> bool:
    value = value.strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise KnowledgeImportError(f"{column} is {value!r}: use true or false")


def _faq_row_import(*, row: dict[str, str], user: services.Editor) -> tuple[ImportOutcome, FaqEntry]:
    question = (row.get("question") or "").strip()
    answer = (row.get("answer") or "").strip()
    if not question:
        raise KnowledgeImportError("the question is empty")
    locale = locale_normalise(row["locale"]) if (row.get("locale") or "").strip() else locale_detect(question)
    position_text = (row.get("position") or "").strip()
    try:
        position = int(position_text) if position_text else 0
    except ValueError:
        raise KnowledgeImportError(f"position is {position_text!r}: use a whole number") from None
    is_quick_entry = _boolean(row.get("is_quick_entry") or "", column="is_quick_entry", default=False)
    is_published = _boolean(row.get("is_published") or "", column="is_published", default=True)
    with transaction.atomic():
        entry = FaqEntry.objects.select_for_update().filter(locale=locale, question=question).first()
        created = entry is None
        if entry is None:
            entry = FaqEntry(locale=locale, question=question)
        before = (entry.answer, entry.is_quick_entry, entry.position, entry.is_published)
        entry.answer = answer
        entry.is_quick_entry = is_quick_entry
        entry.position = position
        entry.is_published = is_published
        try:
            services.faq_entry_save(entry=entry, user=user)
        except ValidationError as error:
            raise KnowledgeImportError("; ".join(error.messages)) from None
    if created:
        return ImportOutcome.CREATED, entry
    after = (entry.answer, entry.is_quick_entry, entry.position, entry.is_published)
    return (ImportOutcome.UPDATED if after != before else ImportOutcome.UNCHANGED), entry


def faq_csv_import(*, text: str, user: services.Editor = None, source: str = "CSV") -> ImportReport:
    """Import FAQ entries from CSV text with the FAQ_CSV_COLUMNS header; an entry is matched by
    (locale, question) and updated. Each row is one result, named "<source> row N"."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    columns = [column.strip() for column in reader.fieldnames or []]
    missing = [column for column in ("question", "answer") if column not in columns]
    report = ImportReport()
    if missing:
        error = (
            f"the first line must be the header {','.join(FAQ_CSV_COLUMNS)} (missing: {', '.join(missing)})"
        )
        report.results.append(ImportResult(name=source, outcome=ImportOutcome.FAILED, error=error))
        return report
    reader.fieldnames = columns
    for row in reader:
        # The header is line 1; csv counts lines, so a quoted answer with line breaks is still named right.
        name = f"{source} line {reader.line_num}"
        try:
            outcome, entry = _faq_row_import(row=row, user=user)
            result = ImportResult(name=name, outcome=outcome, slug=entry.question)
        except KnowledgeImportError as error:
            result = _failed(name, str(error))
        report.results.append(result)
    return report


def faq_csv_export() -> str:
    """Every FAQ entry as CSV with the FAQ_CSV_COLUMNS header, by language and position."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FAQ_CSV_COLUMNS)
    for entry in FaqEntry.objects.order_by("locale", "position", "question", "id"):
        writer.writerow(
            [
                entry.question,
                entry.answer,
                entry.locale,
                "true" if entry.is_quick_entry else "false",
                entry.position,
                "true" if entry.is_published else "false",
            ]
        )
    return buffer.getvalue()
