"""Admin: supervisors write articles and FAQ entries, import and export them, and watch the index.

Every save, publish, restore and delete goes through knowledge.services, so editors get versions and
the index is rebuilt after each change of published content (admin's own bulk delete included).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from knowledge import importing, services
from knowledge.models import Article, ArticleVersion, FaqEntry, IndexBuild, Locale, RetrievalSettings
from knowledge.rendering import article_body_html, markdown_html

# Uploads larger than this in all are refused before they are read (a zip of every article is far less).
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


# --- forms --------------------------------------------------------------------------------------


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """One or more uploaded files (Django's FileField takes one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ".md,.zip"}))
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> Any:
        files = data if isinstance(data, list | tuple) else [data]
        cleaned = [super(MultipleFileField, self).clean(file, initial) for file in files if file]
        if not cleaned:
            raise forms.ValidationError("Choose one or more .md files or a .zip archive.")
        return cleaned


class ArticleForm(forms.ModelForm):
    class Meta:
        model = Article
        fields = ("title", "slug", "locale", "status", "tags", "body")
        widgets = {
            # Room for an article: its sections are what customers are answered from.
            "body": forms.Textarea(attrs={"rows": 24, "cols": 100, "class": "vLargeTextField"}),
            "tags": forms.TextInput(attrs={"class": "vTextField", "placeholder": "returns, refunds"}),
        }


class ArticleImportForm(forms.Form):
    markdown_files = MultipleFileField(
        label="Markdown files or a .zip",
        help_text="Each <slug>.md becomes the article /kb/<slug>/. More than 100 files: send one .zip.",
    )
    publish = forms.BooleanField(
        required=False,
        help_text="Publish every imported article. Otherwise new ones are drafts and existing ones keep "
        "their status (unless the file says status: …).",
    )
    locale = forms.ChoiceField(
        label="Language",
        required=False,
        choices=[("", "From each file (lang:) or detected from its text"), *Locale.choices],
    )


class FaqImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="Header: " + ",".join(importing.FAQ_CSV_COLUMNS) + ". An entry with the same language and "
        "question is updated.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )


def _import_result_context(report: importing.ImportReport) -> dict[str, Any]:
    return {"report": report, "counts": {outcome.value: count for outcome, count in report.counts.items()}}


def _upload_too_large(request: HttpRequest) -> bool:
    return int(request.META.get("CONTENT_LENGTH") or 0) > MAX_UPLOAD_BYTES


def _attachment(content: bytes | str, *, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- articles -----------------------------------------------------------------------------------


class ArticleVersionInline(admin.TabularInline):
    model = ArticleVersion
    fields = ("title", "locale", "status", "tags", "created_by", "created_at", "restore")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ("-number",)
    verbose_name = "earlier version"
    verbose_name_plural = "versions (newest first; the first one is the article as it is now)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ArticleVersion]:
        return super().get_queryset(request).select_related("article", "created_by")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="")
    def restore(self, version: ArticleVersion) -> str | SafeString:
        if version.number == version.article.version:
            return "current"
        url = reverse("admin:knowledge_article_version_restore", args=[version.article_id, version.number])
        return format_html('<a class="button" href="{}">Restore…</a>', url)


def review_items_html(items: Any) -> str | SafeString:
    """Links to the review items (and their conversations) a draft was written from, or a dash."""
    links = [
        (
            reverse("admin:review_reviewitem_change", args=[item.pk]),
            str(item),
            reverse("admin:conversations_conversation_change", args=[item.conversation_id]),
        )
        for item in items
    ]
    if not links:
        return "–"
    return format_html(
        '<ul class="review-links">{}</ul>',
        format_html_join("", '<li><a href="{}">{}</a> (<a href="{}">conversation</a>)</li>', links),
    )


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    form = ArticleForm
    list_display = ("title", "slug", "locale", "status", "version", "updated_by", "updated_at")
    list_filter = ("locale", "status", "updated_at")
    search_fields = ("title", "slug", "body", "tags")
    list_select_related = ("updated_by",)
    prepopulated_fields = {"slug": ("title",)}
    fields = (
        "title",
        "slug",
        "locale",
        "status",
        "tags",
        "body",
        "preview",
        "version",
        "updated_by",
        "updated_at",
        "public_page",
        "from_review",
    )
    readonly_fields = ("preview", "version", "updated_by", "updated_at", "public_page", "from_review")
    inlines = (ArticleVersionInline,)
    actions = ("publish", "unpublish")

    @admin.display(description="Preview (as saved)")
    def preview(self, article: Article) -> str | SafeString:
        if not article.pk:
            return "Shown once the article is saved."
        return format_html(
            '<div class="kb-preview" lang="{}">{}</div>', article.locale, article_body_html(article.body)
        )

    @admin.display(description="Public page")
    def public_page(self, article: Article) -> str | SafeString:
        if not article.pk or article.status != Article.Status.PUBLISHED:
            return "None: only a published article has one."
        url = reverse("knowledge:article", args=[article.slug])
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, url)

    @admin.display(description="Drafted from review")
    def from_review(self, article: Article) -> str | SafeString:
        return review_items_html(article.review_items.all() if article.pk else [])

    def save_model(self, request: HttpRequest, obj: Article, form: Any, change: bool) -> None:
        services.article_save(article=obj, user=request.user)

    def delete_model(self, request: HttpRequest, obj: Article) -> None:
        services.article_delete(article=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        services.articles_delete(articles=list(queryset))

    @admin.action(description="Publish the selected articles", permissions=["change"])
    def publish(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        changed = 0
        for article in queryset:
            if article.status != Article.Status.PUBLISHED:
                services.article_publish(article=article, user=request.user)
                changed += 1
        self.message_user(request, f"Published {changed} article(s).", messages.SUCCESS)

    @admin.action(description="Unpublish the selected articles (back to draft)", permissions=["change"])
    def unpublish(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        changed = 0
        for article in queryset:
            if article.status != Article.Status.DRAFT:
                services.article_unpublish(article=article, user=request.user)
                changed += 1
        self.message_user(request, f"Unpublished {changed} article(s).", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:article_id>/versions/<int:number>/restore/",
                self.admin_site.admin_view(self.version_restore_view),
                name="knowledge_article_version_restore",
            ),
            path("import/", self.admin_site.admin_view(self.import_view), name="knowledge_article_import"),
            path("export/", self.admin_site.admin_view(self.export_view), name="knowledge_article_export"),
        ]
        return own + super().get_urls()

    def version_restore_view(self, request: HttpRequest, article_id: int, number: int) -> HttpResponseBase:
        """GET asks to confirm (showing the version); POST restores it as a new version."""
        article = get_object_or_404(Article, pk=article_id)
        if not self.has_change_permission(request, article):
            raise PermissionDenied
        version = get_object_or_404(ArticleVersion, article=article, number=number)
        change_url = reverse("admin:knowledge_article_change", args=[article.pk])
        if request.method == "POST":
            restored = services.article_version_restore(version=version, user=request.user)
            self.log_change(request, restored, f"Restored version {number} as version {restored.version}.")
            self.message_user(
                request, f"Restored version {number} as version {restored.version}.", messages.SUCCESS
            )
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Restore version {number} of “{article.title}”?",
            "article": article,
            "version": version,
            "version_html": article_body_html(version.body),
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/knowledge/article/version_restore.html", context)

    def import_view(self, request: HttpRequest) -> HttpResponseBase:
        """Upload .md files or a .zip; each file is reported on its own, a bad one never costs the rest."""
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import articles",
            "format_help": "article",
        }
        if request.method == "POST":
            if _upload_too_large(request):
                form = ArticleImportForm()
                messages.error(request, f"The upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
            else:
                form = ArticleImportForm(request.POST, request.FILES)
                if form.is_valid():
                    uploads = [
                        (file.name or "upload", file.read()) for file in form.cleaned_data["markdown_files"]
                    ]
                    sources, refused = importing.article_sources(uploads)
                    # One transaction, a savepoint per file: one index build for the whole upload.
                    with transaction.atomic():
                        report = importing.articles_import(
                            files=sources,
                            publish=form.cleaned_data["publish"],
                            locale=form.cleaned_data["locale"] or None,
                            user=request.user,
                        )
                    report.results[:0] = refused
                    context.update(_import_result_context(report))
                    level = messages.WARNING if report.failures else messages.SUCCESS
                    messages.add_message(request, level, f"Articles imported: {report.summary()}.")
        else:
            form = ArticleImportForm()
        context["form"] = form
        return TemplateResponse(request, "admin/knowledge/import.html", context)

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """Every article as <slug>.md in a zip, in the format the import reads."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        filename = f"articles-{timezone.localdate().isoformat()}.zip"
        return _attachment(importing.articles_export_zip(), filename=filename, content_type="application/zip")


# --- FAQ entries ----------------------------------------------------------------------------------


@admin.register(FaqEntry)
class FaqEntryAdmin(admin.ModelAdmin):
    list_display = ("question", "locale", "is_quick_entry", "position", "is_published", "updated_at")
    list_filter = ("locale", "is_quick_entry", "is_published")
    list_editable = ("is_quick_entry", "position", "is_published")
    search_fields = ("question", "answer")
    fields = (
        "question",
        "answer",
        "answer_preview",
        "locale",
        "is_quick_entry",
        "position",
        "is_published",
        "updated_by",
        "updated_at",
        "from_review",
    )
    readonly_fields = ("answer_preview", "updated_by", "updated_at", "from_review")

    @admin.display(description="Drafted from review")
    def from_review(self, entry: FaqEntry) -> str | SafeString:
        return review_items_html(entry.review_items.all() if entry.pk else [])

    @admin.display(description="Answer preview (as saved)")
    def answer_preview(self, entry: FaqEntry) -> str | SafeString:
        if not entry.pk:
            return "Shown once the entry is saved."
        return format_html(
            '<div class="kb-preview" lang="{}">{}</div>', entry.locale, markdown_html(entry.answer)
        )

    def save_model(self, request: HttpRequest, obj: FaqEntry, form: Any, change: bool) -> None:
        services.faq_entry_save(entry=obj, user=request.user)

    def delete_model(self, request: HttpRequest, obj: FaqEntry) -> None:
        services.faq_entry_delete(entry=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[FaqEntry]) -> None:
        services.faq_entries_delete(entries=list(queryset))

    def get_urls(self) -> list[URLPattern]:
        own = [
            path("import/", self.admin_site.admin_view(self.import_view), name="knowledge_faqentry_import"),
            path("export/", self.admin_site.admin_view(self.export_view), name="knowledge_faqentry_export"),
        ]
        return own + super().get_urls()

    def import_view(self, request: HttpRequest) -> HttpResponseBase:
        """Upload a CSV of FAQ entries; each row is reported on its own, a bad row never costs the rest."""
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import FAQ entries (CSV)",
            "format_help": "faq",
            "faq_columns": ",".join(importing.FAQ_CSV_COLUMNS),
        }
        if request.method == "POST":
            if _upload_too_large(request):
                form = FaqImportForm()
                messages.error(request, f"The upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
            else:
                form = FaqImportForm(request.POST, request.FILES)
                if form.is_valid():
                    upload = form.cleaned_data["file"]
                    name = upload.name or "upload.csv"
                    try:
                        text = upload.read().decode("utf-8-sig")
                    except UnicodeDecodeError:
                        report = importing.ImportReport(
                            [
                                importing.ImportResult(
                                    name, importing.ImportOutcome.FAILED, error="not UTF-8 text"
                                )
                            ]
                        )
                    else:
                        with transaction.atomic():
                            report = importing.faq_csv_import(text=text, user=request.user, source=name)
                    context.update(_import_result_context(report))
                    level = messages.WARNING if report.failures else messages.SUCCESS
                    messages.add_message(request, level, f"FAQ entries imported: {report.summary()}.")
        else:
            form = FaqImportForm()
        context["form"] = form
        return TemplateResponse(request, "admin/knowledge/import.html", context)

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """Every FAQ entry as CSV (with a byte-order mark, so that a spreadsheet reads the Chinese right)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        filename = f"faq-{timezone.localdate().isoformat()}.csv"
        content = "\ufeff" + importing.faq_csv_export()
        return _attachment(content.encode("utf-8"), filename=filename, content_type="text/csv; charset=utf-8")


# --- retrieval settings and the index ---------------------------------------------------------------


@admin.register(RetrievalSettings)
class RetrievalSettingsAdmin(admin.ModelAdmin):
    """One row (pk 1): the list opens its change form, or the add form while there is none."""

    fields = ("faq_match_threshold", "relevance_threshold", "sources_per_reply", "any_language", "updated_at")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not RetrievalSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Refused before the redirect, as Django's own changelist would be.
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        existing = RetrievalSettings.objects.order_by("pk").first()
        if existing is not None:
            return HttpResponseRedirect(
                reverse("admin:knowledge_retrievalsettings_change", args=[existing.pk])
            )
        return HttpResponseRedirect(reverse("admin:knowledge_retrievalsettings_add"))

    def save_model(self, request: HttpRequest, obj: RetrievalSettings, form: Any, change: bool) -> None:
        # Retrieval reads pk 1: the one row is always that one.
        obj.pk = 1
        super().save_model(request, obj, form, change)

    def response_post_save_change(self, request: HttpRequest, obj: RetrievalSettings) -> HttpResponseRedirect:
        # The changelist would only come back here: stay on the form, with Django's "changed" message.
        return HttpResponseRedirect(reverse("admin:knowledge_retrievalsettings_change", args=[obj.pk]))

    def response_post_save_add(self, request: HttpRequest, obj: RetrievalSettings) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:knowledge_retrievalsettings_change", args=[obj.pk]))


@admin.register(IndexBuild)
class IndexBuildAdmin(admin.ModelAdmin):
    """Read-only: builds are made by the rebuild task. "Rebuild index now" asks for one."""

    list_display = (
        "id",
        "status",
        "embedder_model",
        "chunk_count",
        "faq_count",
        "started_at",
        "finished_at",
        "error_summary",
    )
    list_filter = ("status",)
    actions = ("rebuild_index_now",)
    readonly_fields = (
        "status",
        "embedder_model",
        "dimension",
        "chunk_count",
        "faq_count",
        "started_at",
        "finished_at",
        "error",
    )

    @admin.display(description="Error")
    def error_summary(self, build: IndexBuild) -> str:
        first_line = build.error.strip().splitlines()[0] if build.error.strip() else ""
        return first_line if len(first_line) <= 120 else first_line[:119] + "…"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_rebuild_permission(self, request: HttpRequest) -> bool:
        """Who may ask for a rebuild: whoever may change articles."""
        return request.user.has_perm("knowledge.change_article")

    @admin.action(description="Rebuild index now", permissions=["rebuild"])
    def rebuild_index_now(self, request: HttpRequest, queryset: QuerySet[IndexBuild]) -> None:
        services.index_rebuild_on_commit()
        self.message_user(
            request, "An index build was asked for; it appears here when it starts.", messages.SUCCESS
        )

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "rebuild/", self.admin_site.admin_view(self.rebuild_view), name="knowledge_indexbuild_rebuild"
            )
        ]
        return own + super().get_urls()

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> TemplateResponse:
        extra_context = {**(extra_context or {}), "can_rebuild": self.has_rebuild_permission(request)}
        return super().changelist_view(request, extra_context)  # type: ignore[return-value]

    def rebuild_view(self, request: HttpRequest) -> HttpResponseBase:
        """POST (the changelist's button, with CSRF): ask for a build even when the list is empty."""
        return require_POST(self._rebuild)(request)

    def _rebuild(self, request: HttpRequest) -> HttpResponseBase:
        if not self.has_rebuild_permission(request):
            raise PermissionDenied
        services.index_rebuild_on_commit()
        self.message_user(
            request, "An index build was asked for; it appears here when it starts.", messages.SUCCESS
        )
        return HttpResponseRedirect(reverse("admin:knowledge_indexbuild_changelist"))
