"""Admin: the review queue. Supervisors (change permission) record verdicts and turn corrections into drafts;
managers (view permission) read it. Permissions are Django's own model permissions, given to the groups
elsewhere.
"""

from __future__ import annotations

import copy
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    QueryDict,
)
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from conversations.admin import (
    compact_time,
    conversation_link,
    message_text_html,
    one_line,
    reply_markers_html,
)
from conversations.errors import ServiceError
from knowledge.models import Article, FaqEntry
from review import selectors, services
from review.models import ReviewItem

DRAFT_KIND_LABELS = {
    services.DRAFT_ARTICLE: _("Draft knowledge article"),
    services.DRAFT_FAQ_ENTRY: _("Draft FAQ entry (unpublished)"),
}
# The knowledge permission each kind of draft needs, besides changing the review item.
DRAFT_KIND_PERMISSIONS = {
    services.DRAFT_ARTICLE: "knowledge.add_article",
    services.DRAFT_FAQ_ENTRY: "knowledge.add_faqentry",
}


class ReviewStateFilter(admin.SimpleListFilter):
    """Open (no verdict yet) or reviewed: what is left to do, and what was done."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, Any]]:
        return [("open", _("Open")), ("reviewed", _("Reviewed"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> QuerySet[ReviewItem]:
        if self.value() == "open":
            return queryset.filter(verdict="")
        if self.value() == "reviewed":
            return queryset.exclude(verdict="")
        return queryset


class ReviewItemForm(forms.ModelForm):
    """The verdict and note; a save without a verdict would record a review of nothing."""

    class Meta:
        model = ReviewItem
        fields = ("verdict", "note")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "verdict" in self.fields:
            self.fields["verdict"].required = True


class CorrectionForm(forms.Form):
    """The corrected answer, turned into a draft article or FAQ entry in one action."""

    kind = forms.ChoiceField(label=_("Make"), widget=forms.RadioSelect)
    title = forms.CharField(
        label=_("Title / question"),
        max_length=200,
        help_text=_("The article's title or the FAQ entry's question; it starts as the customer's question."),
        widget=forms.TextInput(attrs={"class": "vTextField"}),
    )
    answer = forms.CharField(
        label=_("Corrected answer"),
        help_text=_("Markdown. Saved as a draft: publish it from the knowledge base when it is ready."),
        widget=forms.Textarea(attrs={"rows": 8, "class": "vLargeTextField"}),
    )

    def __init__(self, *args: Any, kinds: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["kind"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(kind, DRAFT_KIND_LABELS[kind]) for kind in kinds]
        field.initial = kinds[0]


@admin.register(ReviewItem)
class ReviewItemAdmin(admin.ModelAdmin):
    form = ReviewItemForm
    list_display = ("conversation_column", "reason", "reply_column", "queued", "verdict_column", "reviewer")
    # The item opens from its reply (the conversation's column is a link of its own, to the transcript:
    # as Django's default first-column link it would wrap that one, and the item could not be opened).
    list_display_links = ("reply_column", "queued")
    list_filter = (
        ReviewStateFilter,
        "verdict",
        "reason",
        ("reviewer", admin.RelatedOnlyFieldListFilter),
        "created_at",
    )
    list_select_related = ("message", "reviewer")
    search_fields = ("message__text", "note", "corrected_answer")
    ordering = ("-created_at", "-id")
    fieldsets = (
        (
            _("Conversation"),
            {"fields": ("conversation_detail", "reason", "latest_reason", "latest_rated_at", "created_at")},
        ),
        (_("The reply under review"), {"fields": ("customer_message", "reply_detail")}),
        (_("Verdict"), {"fields": ("verdict", "note", "reviewer", "reviewed_at")}),
        (_("Drafts from the correction"), {"fields": ("corrected_answer", "drafts")}),
    )
    readonly_fields = (
        "conversation_detail",
        "reason",
        "latest_reason",
        "latest_rated_at",
        "created_at",
        "customer_message",
        "reply_detail",
        "reviewer",
        "reviewed_at",
        "corrected_answer",
        "drafts",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # The queue fills by itself from the customers' ratings.
        return False

    # --- the list ---------------------------------------------------------------------------------

    @admin.display(description=_("Conversation"), ordering="conversation__created_at")
    def conversation_column(self, item: ReviewItem) -> str:
        return conversation_link(item.conversation_id)

    @admin.display(description=_("Reply under review"))
    def reply_column(self, item: ReviewItem) -> str:
        if item.message is None:
            return "–"
        return one_line(item.message.text)

    @admin.display(description=_("Queued"), ordering="created_at")
    def queued(self, item: ReviewItem) -> str:
        return compact_time(item.created_at)

    @admin.display(description=_("Verdict"), ordering="verdict")
    def verdict_column(self, item: ReviewItem) -> str:
        if not item.verdict:
            return format_html("<strong>{}</strong>", _("Open"))
        return str(item.get_verdict_display())

    # --- the change page --------------------------------------------------------------------------

    @admin.display(description=_("Conversation"))
    def conversation_detail(self, item: ReviewItem) -> str:
        return format_html("{} ({})", conversation_link(item.conversation_id), _("the whole transcript"))

    @admin.display(description=_("The customer wrote"))
    def customer_message(self, item: ReviewItem) -> str | SafeString:
        question = selectors.customer_message_before(reply=item.message) if item.message else None
        if question is None:
            return "–"
        return format_html(
            '<div class="review-customer-message">{}</div><div class="review-meta">{}</div>',
            message_text_html(question),
            compact_time(question.created_at),
        )

    @admin.display(description=_("The reply"))
    def reply_detail(self, item: ReviewItem) -> str | SafeString:
        if item.message is None:
            return gettext("None: the conversation had no assistant reply when it was rated.")
        reply = item.message
        rating = getattr(reply, "feedback", None)
        details = [compact_time(reply.created_at)]
        if reply.model:
            details.append(reply.model)
        if rating is not None:
            details.append(
                format_html(
                    "{}{}", rating.get_rating_display(), f": “{rating.comment}”" if rating.comment else ""
                )
            )
        return format_html(
            '<div class="review-reply">{}</div>{}<div class="review-meta">{}</div>',
            message_text_html(reply),
            reply_markers_html(reply),
            format_html_join(" · ", "{}", ((detail,) for detail in details)),
        )

    @admin.display(description=_("Drafts"))
    def drafts(self, item: ReviewItem) -> str | SafeString:
        links = []
        if item.draft_article is not None:
            links.append(
                format_html(
                    '<li>{}: <a class="review-draft-article" href="{}">{}</a> ({})</li>',
                    _("Article"),
                    reverse("admin:knowledge_article_change", args=[item.draft_article.pk]),
                    item.draft_article.title,
                    item.draft_article.get_status_display(),
                )
            )
        if item.draft_faq_entry is not None:
            links.append(
                format_html(
                    '<li>{}: <a class="review-draft-faq-entry" href="{}">{}</a> ({})</li>',
                    _("FAQ entry"),
                    reverse("admin:knowledge_faqentry_change", args=[item.draft_faq_entry.pk]),
                    item.draft_faq_entry.question,
                    _("published") if item.draft_faq_entry.is_published else _("unpublished"),
                )
            )
        if not links:
            return gettext("None yet.")
        return format_html(
            '<ul class="review-drafts">{}</ul>', format_html_join("", "{}", ((link,) for link in links))
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[ReviewItem]:
        return (
            super()
            .get_queryset(request)
            .select_related("message__feedback", "reviewer", "draft_article", "draft_faq_entry")
        )

    def save_model(self, request: HttpRequest, obj: ReviewItem, form: Any, change: bool) -> None:
        # Saving the page unchanged records no review: the reviewer and time stay whose they were.
        if form.changed_data or not obj.reviewed_at:
            services.review_verdict_record(
                item=obj,
                verdict=form.cleaned_data["verdict"],
                note=form.cleaned_data["note"],
                reviewer=request.user,
            )

    # --- correct and make a draft -----------------------------------------------------------------

    def draft_kinds(self, request: HttpRequest, item: ReviewItem) -> list[str]:
        """The drafts this user may make from the item: a reviewer who may also add that kind of content."""
        if not self.has_change_permission(request, item):
            return []
        return [
            kind for kind, permission in DRAFT_KIND_PERMISSIONS.items() if request.user.has_perm(permission)
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        item = self.get_object(request, unquote(object_id))
        if item is not None:
            kinds = self.draft_kinds(request, item)
            if kinds and "correction_form" not in extra_context:
                extra_context["correction_form"] = CorrectionForm(
                    kinds=kinds,
                    initial={
                        "title": selectors.review_question_text(item=item)[:200],
                        "answer": item.corrected_answer,
                    },
                )
            extra_context["correction_url"] = reverse("admin:review_reviewitem_draft", args=[item.pk])
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<path:object_id>/draft/",
                self.admin_site.admin_view(self.draft_view),
                name="review_reviewitem_draft",
            )
        ]
        return own + super().get_urls()

    def draft_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """POST: the corrected answer becomes a draft article or FAQ entry linked to the item, in one step."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        item = self.get_object(request, unquote(object_id))
        if item is None:
            raise Http404
        kinds = self.draft_kinds(request, item)
        if not kinds:
            raise PermissionDenied
        form = CorrectionForm(request.POST, kinds=kinds)
        if form.is_valid():
            try:
                draft = services.review_draft_create(
                    item=item,
                    kind=form.cleaned_data["kind"],
                    title=form.cleaned_data["title"],
                    answer=form.cleaned_data["answer"],
                    user=request.user,
                )
            except ServiceError as error:
                form.add_error(None, error.detail)
            except ValidationError as error:
                form.add_error(None, "; ".join(error.messages))
            else:
                return self._draft_created(request, item, draft)
        return self._change_page_showing(request, object_id, form)

    def _draft_created(
        self, request: HttpRequest, item: ReviewItem, draft: Article | FaqEntry
    ) -> HttpResponseBase:
        if isinstance(draft, Article):
            noun, url = _("draft article"), reverse("admin:knowledge_article_change", args=[draft.pk])
        else:
            noun, url = _("draft FAQ entry"), reverse("admin:knowledge_faqentry_change", args=[draft.pk])
        self.log_change(request, item, f"Made a {noun} from the correction: {draft}.")
        self.message_user(
            request,
            format_html(
                '{} <a href="{}">{}</a>', gettext("Created the %(noun)s") % {"noun": noun}, url, str(draft)
            ),
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:review_reviewitem_change", args=[item.pk]))

    def _change_page_showing(
        self, request: HttpRequest, object_id: str, form: CorrectionForm
    ) -> HttpResponseBase:
        """The change page again, with the correction form and its errors (what was typed is kept)."""
        page_request = copy.copy(request)
        page_request.method = "GET"
        page_request.POST = QueryDict()
        return self.change_view(page_request, object_id, extra_context={"correction_form": form})
