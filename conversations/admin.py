"""Admin: supervisors read transcripts, staff see attachments, tickets and feedback."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import Any

import nh3
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, Exists, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join, linebreaks
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

from conversations import retention, services
from conversations.models import Attachment, Conversation, Feedback, Message, SatisfactionRating, Ticket
from conversations.serializers import attachment_url
from cs_platform.markdown_html import MARKDOWN_TAGS, MARKDOWN_URL_SCHEMES
from cs_platform.pii import pii_mask
from cs_platform.roles import user_sees_only_own_tickets

# The model's Markdown is rendered without raw HTML, then sanitised again. `breaks` as in the widget's
# markdown-it: a single newline is a line break, so staff see the lines the customer saw.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True}).enable("table")


def render_markdown(text: str) -> SafeString:
    """Markdown to HTML that cannot run anything: no raw HTML, no scripts, only http(s)/mailto links."""
    html = nh3.clean(
        _markdown.render(text),
        tags=set(MARKDOWN_TAGS),
        attributes={"a": {"href", "title"}},
        url_schemes=set(MARKDOWN_URL_SCHEMES),
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(html)  # noqa: S308 - sanitised by nh3 just above


def plain_text_html(text: str) -> SafeString:
    """Text typed by a person, as the widget shows it: escaped, with its line breaks and paragraphs."""
    return mark_safe(linebreaks(text, autoescape=True))  # noqa: S308 - escaped by linebreaks


def message_text_html(message: Message) -> SafeString:
    """A message's text as the widget shows it: the model's as Markdown, anyone else's as plain text."""
    if not message.text:
        return format_html("<em>{}</em>", "(no text)")
    if message.role == Message.Role.ASSISTANT:
        return render_markdown(message.text)
    return plain_text_html(message.text)


def token_usage(message: Message) -> str | None:
    """Prompt and reply tokens in words; what the server did not report says "unknown" (not zero)."""
    if message.prompt_tokens is None and message.completion_tokens is None:
        return None
    if message.completion_tokens is None:
        reply = "reply unknown"
    elif message.completion_tokens_counted:
        # The server sent no usage: generation counted the streamed chunks, an estimate.
        reply = f"≈{message.completion_tokens} reply tokens (counted from the stream)"
    else:
        reply = f"{message.completion_tokens} reply tokens"
    prompt = "prompt unknown" if message.prompt_tokens is None else f"{message.prompt_tokens} prompt tokens"
    return f"{prompt}, {reply}"


COUNTED_TOKENS_TITLE = "The server reported no usage: counted from the streamed reply, an estimate."

# Why a reply failed, for supervisors (the codes are in conversations/errors.py).
ERROR_LABELS = {
    "inference_unavailable": "the assistant was unavailable",
    "inference_timeout": "the assistant took too long",
    "inference_bad_response": "the assistant's answer could not be read",
    "inference_rejected": "the assistant refused the request",
    "worker_lost": "the reply stopped half-way (worker lost)",
    "inference_error": "something went wrong while answering",
}


def error_label(code: str) -> str:
    return ERROR_LABELS.get(code, code or "no reason recorded")


def ticket_reason_label(reason: str) -> str:
    """A ticket's reason as supervisors read it: the widget's codes in words, typed reasons as they are."""
    if reason == "customer_request":
        return "The customer asked for a person"
    if reason.startswith("reply_error:"):
        return (
            f"The customer asked for a person after a failed reply ({error_label(reason.split(':', 1)[1])})"
        )
    return reason or "–"


# A reply stopped because the model wrote a blocked term (safety/): saved complete, as the replacement
# sentence, with the term in error_detail.
BLOCKED_CODE = "blocked"
# Whether the staff member reading the transcript may see which term stopped a reply: whoever may read
# the blocked terms (supervisors, managers, superusers), not agents. Set for one change page's render.
_shows_blocked_terms: ContextVar[bool] = ContextVar("shows_blocked_terms", default=False)


def user_sees_blocked_terms(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False) and user.has_perm("safety.view_blockedterm"))


def reply_markers_html(message: Message, *, show_blocked_term: bool | None = None) -> SafeString:
    """What supervisors must not miss about a reply: unanswered, cut short, blocked, or failed and why."""
    markers = []
    if message.error_code == BLOCKED_CODE and message.status != Message.Status.FAILED:
        shown = _shows_blocked_terms.get() if show_blocked_term is None else show_blocked_term
        markers.append(
            format_html(
                '<div class="transcript-marker transcript-blocked" style="margin-top:4px;font-size:12px;'
                'font-weight:bold;color:#c53030">{}{}</div>',
                "⊘ blocked: the model wrote a blocked term; the reply was stopped and the customer was "
                "shown the replacement sentence above",
                format_html(" (term: “{}”)", message.error_detail) if shown and message.error_detail else "",
            )
        )
    if message.is_unanswered:
        markers.append(
            format_html(
                '<div class="transcript-marker transcript-unanswered" style="margin-top:4px;font-size:12px;'
                'font-weight:bold;color:#6b46c1">{}</div>',
                "⚑ unanswered: nothing relevant in the knowledge base, a person was offered",
            )
        )
    if message.truncated:
        markers.append(
            format_html(
                '<div class="transcript-marker transcript-truncated" style="margin-top:4px;font-size:12px;'
                'font-weight:bold;color:#b7791f">{}</div>',
                "⚠ cut short (max tokens)",
            )
        )
    if message.status == Message.Status.FAILED:
        markers.append(
            format_html(
                '<div class="transcript-marker transcript-error" style="margin-top:4px;font-size:12px;'
                'color:#c53030"><strong>Failed: {}</strong> ({}){}</div>',
                error_label(message.error_code),
                message.error_code or "no code",
                format_html(". The customer was told: “{}”", message.error_detail)
                if message.error_detail
                else "",
            )
        )
    return mark_safe("".join(markers))  # noqa: S308 - each marker was built with format_html


# How supervisors read where a reply came from (Message.Source), beside the model's name.
SOURCE_LABELS: dict[str, str] = {
    Message.Source.MODEL: "written by the model",
    Message.Source.FAQ: "FAQ answer (no model)",
    Message.Source.KNOWLEDGE: "quoted from the knowledge base (no model)",
}

# Messages no assistant wrote: who they came from, in the same place as a reply's source.
PERSON_SOURCE_LABELS: dict[str, str] = {
    Message.Role.AGENT: "written by an agent",
    Message.Role.SYSTEM: "automatic notice (no model)",
}

INTERNAL_NOTE_LABEL = "🔒 internal note: only staff see it, never the customer or the model"


def citation_href(url: Any) -> str | None:
    """A citation's link as staff may follow it: a path on this site (/kb/...) or an http(s) address."""
    if not isinstance(url, str):
        return None
    if url.startswith("/") and not url.startswith("//"):
        return url
    if url.startswith(("https://", "http://")):
        return url
    return None


def article_admin_url(article_id: Any) -> str | None:
    """The cited article's admin page, to fix what it says; built from the id, so it costs no query."""
    if not isinstance(article_id, int):
        return None
    try:
        return reverse("admin:knowledge_article_change", args=[article_id])
    except NoReverseMatch:
        return None


def citations_html(citations: Any) -> SafeString:
    """A reply's citations in the order it cites them: each title links to the page the customer saw."""
    if not isinstance(citations, list) or not citations:
        return mark_safe("")
    items = []
    for citation in citations:
        if not isinstance(citation, dict):
            continue
        title = str(citation.get("title") or citation.get("url") or "untitled")
        href = citation_href(citation.get("url"))
        edit = article_admin_url(citation.get("article"))
        items.append(
            format_html(
                "<li>{}{}</li>",
                format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', href, title)
                if href
                else title,
                format_html(
                    ' <a href="{}" style="font-size:11px">(article {})</a>', edit, citation["article"]
                )
                if edit
                else "",
            )
        )
    if not items:
        return mark_safe("")
    return format_html(
        '<div class="transcript-citations" style="margin-top:4px;font-size:12px">'
        '<strong>Sources</strong><ol style="margin:2px 0 0;padding-left:20px">{}</ol></div>',
        mark_safe("".join(items)),  # noqa: S308 - each item was built with format_html
    )


def transcript_html(conversation: Conversation, *, show_blocked_term: bool | None = None) -> SafeString:
    """The conversation as staff read it: who said what, when, with images in place."""
    # One query for the messages with their feedback, one for all their attachments, however long.
    messages = (
        conversation.messages.order_by("created_at", "id")
        .select_related("feedback", "author")
        .prefetch_related("attachments")
    )
    rows = []
    for message in messages:
        images = format_html_join(
            "",
            '<a href="{}" target="_blank" rel="noopener"><img src="{}" alt="{}" '
            'style="max-width:160px;max-height:160px;margin:4px 4px 0 0;border-radius:6px;'
            'border:1px solid #ccc"></a>',
            (
                (
                    attachment_url(attachment),
                    attachment_url(attachment, variant="thumbnail" if attachment.thumbnail else "image"),
                    f"Image {attachment.width}×{attachment.height}",
                )
                for attachment in sorted(message.attachments.all(), key=lambda item: item.position)
            ),
        )
        details = []
        if message.role in PERSON_SOURCE_LABELS:
            details.append(PERSON_SOURCE_LABELS[message.role])
            if message.author is not None:
                details.append(message.author.get_full_name() or message.author.get_username())
        if message.role == Message.Role.ASSISTANT:
            if message.source == Message.Source.KNOWLEDGE and not message.citations:
                # Quote mode had no passage to quote: the reply is its "nothing found" sentence.
                details.append("the nothing-found sentence (no model)")
            elif message.source in SOURCE_LABELS:
                details.append(SOURCE_LABELS[message.source])
            if message.model:
                details.append(message.model)
            usage = token_usage(message)
            if usage is not None:
                details.append(usage)
            if message.first_token_latency_ms is not None:
                details.append(f"first token {message.first_token_latency_ms} ms")
            if message.total_latency_ms is not None:
                details.append(f"total {message.total_latency_ms} ms")
        feedback = getattr(message, "feedback", None) if message.role == Message.Role.ASSISTANT else None
        if feedback is not None:
            comment = f": {feedback.comment}" if feedback.comment else ""
            thumb = "👍" if feedback.rating == Feedback.Rating.UP else "👎"
            details.append(f"{thumb} rated {feedback.get_rating_display().lower()}{comment}")
        # An internal note is set apart as clearly as the widget keeps it away from the customer.
        note = (
            format_html(
                '<div class="transcript-internal-note" style="font-size:12px;font-weight:bold;'
                'color:#975a16">{}</div>',
                INTERNAL_NOTE_LABEL,
            )
            if message.internal
            else ""
        )
        rows.append(
            format_html(
                '<div class="transcript-message transcript-{}" style="margin:0 0 12px;padding:8px 12px;'
                'border-left:4px {} {};background:var(--darkened-bg)">{}'
                '<div style="font-size:11px;color:var(--body-quiet-color)">'
                "<strong>{}</strong> · {} · {}{}</div>"
                '<div class="transcript-text">{}</div>{}{}{}</div>',
                message.role,
                "dashed" if message.internal else "solid",
                {"customer": "#2b6cb0", "assistant": "#2f855a", "agent": "#b7791f"}.get(message.role, "#999"),
                note,
                message.get_role_display(),
                message.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                message.get_status_display(),
                " · " + " · ".join(details) if details else "",
                message_text_html(message),
                citations_html(message.citations) if message.role == Message.Role.ASSISTANT else "",
                reply_markers_html(message, show_blocked_term=show_blocked_term)
                if message.role == Message.Role.ASSISTANT
                else "",
                images,
            )
        )
    if not rows:
        return format_html("<em>{}</em>", "No messages yet.")
    return mark_safe("".join(rows))  # noqa: S308 - every row was built with format_html


def count_of(rows: QuerySet[Any]) -> Coalesce:
    """COUNT(*) of a correlated subquery grouped on its one value column (0 where there is none)."""
    return Coalesce(
        Subquery(rows.order_by().annotate(total=Count("pk")).values("total")[:1]),
        Value(0),
    )


def conversations_visible_to(queryset: QuerySet[Conversation], *, user: Any) -> QuerySet[Conversation]:
    """The conversations `user` may read in admin: an agent only those whose ticket they hold or held.

    "Held" is a ticket still assigned to them (open or resolved) or a message they wrote in the
    conversation: a ticket handed over to a colleague no longer names them, their messages do.
    """
    if not user_sees_only_own_tickets(user):
        return queryset
    return queryset.filter(
        Exists(Ticket.objects.filter(conversation=OuterRef("pk"), assignee=user))
        | Exists(Message.objects.filter(conversation=OuterRef("pk"), author=user))
    )


def rows_visible_to(queryset: QuerySet[Any], *, user: Any, conversation_path: str) -> QuerySet[Any]:
    """Rows of a conversation (messages, tickets...) an agent may read: those of its conversations."""
    if not user_sees_only_own_tickets(user):
        return queryset
    visible = conversations_visible_to(Conversation.objects.all(), user=user)
    return queryset.filter(**{f"{conversation_path}__in": visible.values("pk")})


class OwnConversationsOnlyForAgents(admin.ModelAdmin):
    """A list of conversation rows that an agent (and nothing more) sees only for its own tickets."""

    conversation_path = "conversation"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return rows_visible_to(
            super().get_queryset(request), user=request.user, conversation_path=self.conversation_path
        )


class CreatedByCustomersOnly(admin.ModelAdmin):
    """Rows that only customers create (through the widget): staff read and change them, never add."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


def report_action(
    model_admin: admin.ModelAdmin, request: HttpRequest, changed: int, selected: int, done: str, skipped: str
) -> None:
    """Tell staff what an action changed and what it left alone."""
    options = model_admin.model._meta
    noun = options.verbose_name if changed == 1 else options.verbose_name_plural
    text = f"{changed} {noun} {done}."
    if selected > changed:
        text += f" {selected - changed} left as they were ({skipped})."
    model_admin.message_user(request, text, messages.SUCCESS if changed else messages.WARNING)


def one_line(text: str, *, short: bool = False) -> str:
    """Long text in a list column: one line, cut with an ellipsis (admin.css), all of it on hover.

    Personal data is masked here (cs_platform/pii.py): a list shows many customers' words at once to
    whoever opens it; a conversation's own page shows what its customer wrote, as written.
    """
    masked = pii_mask(text[:2000])
    return format_html(
        '<span class="cs-one-line{}" title="{}">{}</span>',
        " cs-short" if short else "",
        masked,
        masked[:300],
    )


def compact_time(value: datetime | None) -> str:
    """A date and time that fits a list column on one line."""
    if value is None:
        return "–"
    return format_html(
        '<span class="cs-nowrap">{}</span>', timezone.localtime(value).strftime("%Y-%m-%d %H:%M")
    )


def conversation_link(conversation_id: Any) -> str:
    """A link to a conversation's admin page (and its transcript)."""
    return format_html(
        '<a href="{}">{}</a>',
        reverse("admin:conversations_conversation_change", args=[conversation_id]),
        str(conversation_id)[:8],
    )


class HasUnansweredRepliesFilter(admin.SimpleListFilter):
    """Conversations where the knowledge base had nothing for a question: what to write next."""

    title = "unanswered replies"
    parameter_name = "unanswered"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Has unanswered replies"), ("no", "No unanswered replies")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
        unanswered = Exists(Message.objects.filter(conversation=OuterRef("pk"), is_unanswered=True))
        if self.value() == "yes":
            return queryset.filter(unanswered)
        if self.value() == "no":
            return queryset.exclude(unanswered)
        return queryset


class CsatScoreFilter(admin.SimpleListFilter):
    """Conversations by the customer's 1–5 score, or not rated at all (what a score filter cannot show)."""

    title = "CSAT"
    parameter_name = "csat"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(str(score), f"{score}/5") for score in range(1, 6)] + [("none", "Not rated")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
        value = self.value()
        if value == "none":
            return queryset.filter(csat__isnull=True)
        if value in {str(score) for score in range(1, 6)}:
            return queryset.filter(csat__score=int(value))
        return queryset


class YesNoFilter(admin.SimpleListFilter):
    """A yes/no filter on whether a related row exists (one EXISTS, no join that repeats rows)."""

    yes_label = "Yes"
    no_label = "No"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", self.yes_label), ("no", self.no_label)]

    def exists(self) -> Exists:
        raise NotImplementedError

    def queryset(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
        if self.value() == "yes":
            return queryset.filter(self.exists())
        if self.value() == "no":
            return queryset.exclude(self.exists())
        return queryset


class ThumbsDownFilter(YesNoFilter):
    """Conversations where the customer said a reply did not help: where to look first."""

    title = "thumbs-down"
    parameter_name = "thumbs_down"
    yes_label = "Has a thumbs-down"
    no_label = "No thumbs-down"

    def exists(self) -> Exists:
        return Exists(
            Feedback.objects.filter(message__conversation=OuterRef("pk"), rating=Feedback.Rating.DOWN)
        )


class HandedOffFilter(YesNoFilter):
    """Conversations handed to a person at some point (a ticket, open or resolved), not only now."""

    title = "handed off"
    parameter_name = "handed_off"
    yes_label = "Handed off (has a ticket)"
    no_label = "Never handed off"

    def exists(self) -> Exists:
        return Exists(Ticket.objects.filter(conversation=OuterRef("pk")))


class ReplyModelFilter(admin.SimpleListFilter):
    """Conversations with a reply written by this model: compare models, or find a bad deployment's."""

    title = "model"
    parameter_name = "model"
    # The choices are the distinct names in the messages: one query, capped so a list stays a list.
    max_choices = 50

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        names = (
            Message.objects.filter(role=Message.Role.ASSISTANT)
            .exclude(model="")
            .order_by("model")
            .values_list("model", flat=True)
            .distinct()[: self.max_choices]
        )
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
        if not self.value():
            return queryset
        return queryset.filter(
            Exists(Message.objects.filter(conversation=OuterRef("pk"), model=self.value()))
        )


def duration_label(seconds: int | None) -> str:
    """Business-hours seconds as staff read them; unknown (not yet, or no hours) is a dash, not zero."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class TicketInline(admin.TabularInline):
    """A conversation's tickets; their status changes only through the actions (the services)."""

    model = Ticket
    extra = 0
    # The reason is the widget's code ("customer_request") or the customer's words: shown, not edited.
    fields = (
        "status",
        "trigger",
        "reason_label",
        "assignee",
        "created_at",
        "claimed_at",
        "first_response",
        "resolution",
        "resolved_at",
    )
    readonly_fields = (
        "status",
        "trigger",
        "reason_label",
        "created_at",
        "claimed_at",
        "first_response",
        "resolution",
        "resolved_at",
    )
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Ticket]:
        return super().get_queryset(request).select_related("assignee")

    @admin.display(description="Reason")
    def reason_label(self, ticket: Ticket) -> str:
        return ticket_reason_label(ticket.reason)

    @admin.display(description="First response (business hours)")
    def first_response(self, ticket: Ticket) -> str:
        return duration_label(ticket.first_response_seconds)

    @admin.display(description="Resolution (business hours)")
    def resolution(self, ticket: Ticket) -> str:
        return duration_label(ticket.resolution_seconds)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A ticket is opened by a handoff, which also hands the conversation to a person.
        return False


# The "erase" action's confirmation page, as admin's own delete_selected asks: what goes, then Yes.
ERASE_CONFIRMATION_TEMPLATE = """{% extends "admin/base_site.html" %}
{% block bodyclass %}{{ block.super }} app-conversations model-conversation delete-confirmation{% endblock %}
{% block breadcrumbs %}<div class="breadcrumbs"><a href="{% url 'admin:index' %}">Home</a>
&rsaquo; <a href="{% url 'admin:conversations_conversation_changelist' %}">Conversations</a>
&rsaquo; Erase the customer's data</div>{% endblock %}
{% block content %}
<p>Erase these {{ conversations|length }} conversation(s) for good, with their messages, images
(and the image files), ratings, tickets and review items? This cannot be undone. Who erased them
and when is recorded, without their content.</p>
<ul class="erase-conversations">{% for conversation in conversations %}
<li>Conversation {{ conversation.pk|stringformat:"s"|slice:":8" }} ({{ conversation.get_status_display }}),
started {{ conversation.created_at|date:"Y-m-d H:i" }}: {{ conversation.message_total }} message(s),
{{ conversation.image_total }} image(s)</li>{% endfor %}</ul>
<form method="post">{% csrf_token %}
<div>{% for conversation in conversations %}
<input type="hidden" name="{{ action_checkbox_name }}" value="{{ conversation.pk }}">{% endfor %}
<input type="hidden" name="action" value="{{ action_name }}">
<input type="hidden" name="post" value="yes">
<input type="submit" value="Yes, erase them">
<a href="{% url 'admin:conversations_conversation_changelist' %}" class="button cancel-link">
No, take me back</a>
</div></form>
{% endblock %}
"""


@admin.register(Conversation)
class ConversationAdmin(CreatedByCustomersOnly):
    # Channel and customer IP are filters and search fields, and on the change page: the list fits 1280 px.
    list_display = (
        "short_id",
        "status",
        "locale",
        "message_count",
        "csat_score",
        "thumbs_down_count",
        "ticket_count",
        "started",
        "last_activity",
    )
    # Channel is the Conversation.channel field: "widget" (the web widget) or "api" (the REST API).
    list_filter = (
        "status",
        CsatScoreFilter,
        ThumbsDownFilter,
        HandedOffFilter,
        HasUnansweredRepliesFilter,
        "created_at",
        "channel",
        "locale",
        ReplyModelFilter,
    )
    # Searching message text joins the messages: admin drops the repeated rows (an EXISTS), so a
    # conversation with three matching messages is listed once.
    # `metadata` searches the JSON the embedding page set (a customer id it passed, say) as text: how
    # staff find one customer's conversations to export or erase them; `verified_customer_id` is the id
    # the host site vouched for with its HMAC (DESIGN.md, Business tools).
    search_fields = (
        "id",
        "messages__text",
        "customer_ip",
        "customer_user_agent",
        "metadata",
        "verified_customer_id",
    )
    date_hierarchy = "created_at"
    # Status changes through the actions below: each is a service that keeps tickets and status in step.
    readonly_fields = (
        "id",
        "status",
        "channel",
        "locale",
        "customer_ip",
        "customer_user_agent",
        "metadata",
        "verified_customer_id",
        "created_at",
        "updated_at",
        "last_message_at",
        "satisfaction",
        "transcript",
    )
    fields = (
        "id",
        "status",
        "channel",
        "locale",
        "customer_ip",
        "customer_user_agent",
        "metadata",
        "verified_customer_id",
        "created_at",
        "last_message_at",
        "satisfaction",
        "transcript",
    )
    inlines = [TicketInline]
    actions = ["close_conversations", "reopen_conversations", "export_customer_data", "erase_customer_data"]

    @admin.action(
        description="Close the selected conversations (and resolve their tickets)", permissions=["change"]
    )
    def close_conversations(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        changed = sum(services.conversation_close(conversation=conversation) for conversation in queryset)
        report_action(self, request, changed, queryset.count(), "closed", "already closed")

    @admin.action(
        description="Reopen the selected conversations (the assistant answers again)", permissions=["change"]
    )
    def reopen_conversations(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        changed = sum(services.conversation_reopen(conversation=conversation) for conversation in queryset)
        report_action(self, request, changed, queryset.count(), "reopened", "not closed")

    # A customer's data on request: only who may delete conversations (superusers; no role group holds
    # conversations.delete_conversation, cs_platform/roles.py) exports or erases it.
    @admin.action(description="Export the customer's data (ZIP)", permissions=["delete"])
    def export_customer_data(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> HttpResponse:
        conversations = (
            Conversation.objects.filter(pk__in=queryset.values("pk"))
            .order_by("created_at")
            .select_related("csat")
            .prefetch_related("attachments")
        )
        archive = retention.conversations_export_zip(conversations=conversations)
        ids = [str(pk) for pk in conversations.values_list("pk", flat=True)]
        retention.logger.info(
            "User %s exported %s conversations on the customer's request: %s",
            request.user.pk,
            len(ids),
            ", ".join(ids),
        )
        response = HttpResponse(archive, content_type="application/zip")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="customer-data-{stamp}.zip"'
        return response

    @admin.action(description="Erase the customer's data (after confirming)", permissions=["delete"])
    def erase_customer_data(
        self, request: HttpRequest, queryset: QuerySet[Conversation]
    ) -> TemplateResponse | None:
        # The selected rows, without the list's annotations: ids and what staff need to recognise them.
        selected = list(
            Conversation.objects.filter(pk__in=queryset.values("pk"))
            .order_by("created_at")
            .annotate(
                message_total=Count("messages", distinct=True),
                image_total=Count("attachments", distinct=True),
            )
        )
        if request.POST.get("post") == "yes":
            result = retention.conversations_erase(
                conversation_ids=[conversation.pk for conversation in selected], user=request.user
            )
            self.message_user(
                request,
                f"Erased {result.conversations} conversation(s) with their messages, ratings, tickets "
                f"and {result.files} image file(s).",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Erase the customer's data?",
            "opts": self.model._meta,
            "conversations": selected,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action_name": "erase_customer_data",
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, engines["django"].from_string(ERASE_CONFIRMATION_TEMPLATE), context)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        # Every list column is an annotation or a joined row: the list costs the same queries at 10 rows
        # as at 100. Counts over other tables are subqueries, so that they do not multiply each other.
        queryset = (
            super()
            .get_queryset(request)
            .annotate(
                message_total=Count("messages"),
                thumbs_down_total=count_of(
                    Feedback.objects.filter(
                        message__conversation=OuterRef("pk"), rating=Feedback.Rating.DOWN
                    ).values("message__conversation")
                ),
                ticket_total=count_of(
                    Ticket.objects.filter(conversation=OuterRef("pk")).values("conversation")
                ),
            )
            .select_related("csat")
        )
        return conversations_visible_to(queryset, user=request.user)

    @admin.display(description="👎", ordering="thumbs_down_total")
    def thumbs_down_count(self, conversation: Any) -> int:
        return int(conversation.thumbs_down_total)

    @admin.display(description="Tickets", ordering="ticket_total")
    def ticket_count(self, conversation: Any) -> int:
        return int(conversation.ticket_total)

    @admin.display(description="Conversation", ordering="created_at")
    def short_id(self, conversation: Conversation) -> str:
        return str(conversation.pk)[:8]

    @admin.display(description="Messages", ordering="message_total")
    def message_count(self, conversation: Any) -> int:
        return int(conversation.message_total)

    @admin.display(description="CSAT", ordering="csat__score")
    def csat_score(self, conversation: Conversation) -> str:
        rating = getattr(conversation, "csat", None)
        return f"{rating.score}/5" if rating else "–"

    @admin.display(description="Customer satisfaction (CSAT)")
    def satisfaction(self, conversation: Conversation) -> str:
        rating = getattr(conversation, "csat", None)
        if rating is None:
            return "Not rated"
        if not rating.comment:
            return f"{rating.score}/5, no comment"
        return format_html("{}/5: “{}”", rating.score, rating.comment)

    @admin.display(description="Started", ordering="created_at")
    def started(self, conversation: Conversation) -> str:
        return compact_time(conversation.created_at)

    @admin.display(description="Last message", ordering="last_message_at")
    def last_activity(self, conversation: Conversation) -> str:
        return compact_time(conversation.last_message_at)

    @admin.display(description="Transcript")
    def transcript(self, conversation: Conversation) -> SafeString:
        return transcript_html(conversation)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The transcript (a read-only field, given no request) names a blocked reply's term only to
        # those who may read the terms; rendered here, while the reader is known.
        token = _shows_blocked_terms.set(user_sees_blocked_terms(request.user))
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            render = getattr(response, "render", None)
            if callable(render):
                render()
            return response
        finally:
            _shows_blocked_terms.reset(token)


@admin.register(Message)
class MessageAdmin(OwnConversationsOnlyForAgents, CreatedByCustomersOnly):
    # Latencies are on the change page and in the transcript: the list fits 1280 px.
    list_display = (
        "id",
        "in_conversation",
        "role",
        "short_text",
        "status",
        "model_name",
        "prompt_token_count",
        "reply_token_count",
        "sent",
    )
    list_filter = ("role", "source", "is_unanswered", "status", "error_code", "created_at")
    search_fields = ("text", "conversation__id", "client_id")
    list_select_related = ("conversation",)
    readonly_fields = [field.name for field in Message._meta.fields]
    date_hierarchy = "created_at"

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = super().get_fields(request, obj)
        # A blocked reply's error_detail is the term that stopped it: for those who may read the terms.
        if obj is not None and obj.error_code == BLOCKED_CODE and not user_sees_blocked_terms(request.user):
            return [field for field in fields if field != "error_detail"]
        return fields

    # Not named "conversation": a list column named like a field shows the field, not the method.
    @admin.display(description="Conversation", ordering="conversation")
    def in_conversation(self, message: Message) -> str:
        return conversation_link(message.conversation_id)

    @admin.display(description="Text")
    def short_text(self, message: Message) -> str:
        return one_line(message.text)

    @admin.display(description="Model", ordering="model")
    def model_name(self, message: Message) -> str:
        return one_line(message.model, short=True) if message.model else "–"

    @admin.display(description="Prompt tokens", ordering="prompt_tokens")
    def prompt_token_count(self, message: Message) -> str:
        return "—" if message.prompt_tokens is None else str(message.prompt_tokens)

    @admin.display(description="Reply tokens", ordering="completion_tokens")
    def reply_token_count(self, message: Message) -> str:
        if message.completion_tokens is None:
            return "—"
        if message.completion_tokens_counted:
            return format_html('<span title="{}">≈{}</span>', COUNTED_TOKENS_TITLE, message.completion_tokens)
        return str(message.completion_tokens)

    @admin.display(description="Sent", ordering="created_at")
    def sent(self, message: Message) -> str:
        return compact_time(message.created_at)


@admin.register(Attachment)
class AttachmentAdmin(OwnConversationsOnlyForAgents, CreatedByCustomersOnly):
    list_display = (
        "thumbnail_preview",
        "id",
        "conversation",
        "dimensions",
        "size_kb",
        "original_name",
        "created_at",
    )
    list_filter = ("content_type", "created_at")
    search_fields = ("id", "sha256", "original_name", "conversation__id")
    readonly_fields = (
        "thumbnail_preview",
        "id",
        "conversation",
        "message",
        "content_type",
        "size",
        "sha256",
        "width",
        "height",
        "original_name",
        "original_content_type",
        "original_size",
        "ocr_text",
        "created_at",
    )
    exclude = ("image", "thumbnail")
    list_select_related = ("conversation",)
    # The thumbnail column already links to the full image: an anchor inside the change link is invalid HTML.
    list_display_links = ("id",)

    @admin.display(description="Image")
    def thumbnail_preview(self, attachment: Attachment) -> str:
        variant = "thumbnail" if attachment.thumbnail else "image"
        return format_html(
            '<a href="{}" target="_blank" rel="noopener"><img src="{}" alt="" style="max-height:64px;'
            'max-width:96px;border-radius:4px"></a>',
            attachment_url(attachment),
            attachment_url(attachment, variant=variant),
        )

    @admin.display(description="Size (px)")
    def dimensions(self, attachment: Attachment) -> str:
        return f"{attachment.width}×{attachment.height}"

    @admin.display(description="Size", ordering="size")
    def size_kb(self, attachment: Attachment) -> str:
        if attachment.size < 1024:
            return f"{attachment.size} bytes"  # not "0 KB"
        return f"{attachment.size / 1024:.0f} KB"


@admin.register(Ticket)
class TicketAdmin(OwnConversationsOnlyForAgents):
    list_display = ("id", "in_conversation", "status", "assignee", "short_reason", "opened", "resolved")
    list_filter = ("status", "assignee", "created_at")
    search_fields = ("reason", "conversation__id")
    list_select_related = ("conversation", "assignee")
    # A ticket is opened by a handoff and resolved by the action (the service), which also hands the
    # conversation back to the assistant: its status, dates and conversation are not edited by hand.
    fields = ("conversation", "status", "reason", "assignee", "created_at", "resolved_at")
    readonly_fields = ("conversation", "status", "created_at", "resolved_at")
    actions = ["resolve_tickets"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(
        description="Resolve the selected tickets (the assistant answers again)", permissions=["change"]
    )
    def resolve_tickets(self, request: HttpRequest, queryset: QuerySet[Ticket]) -> None:
        changed = sum(services.ticket_resolve(ticket=ticket) for ticket in queryset)
        report_action(self, request, changed, queryset.count(), "resolved", "already resolved")

    @admin.display(description="Conversation", ordering="conversation")
    def in_conversation(self, ticket: Ticket) -> str:
        return conversation_link(ticket.conversation_id)

    @admin.display(description="Reason")
    def short_reason(self, ticket: Ticket) -> str:
        return one_line(ticket_reason_label(ticket.reason))

    @admin.display(description="Opened", ordering="created_at")
    def opened(self, ticket: Ticket) -> str:
        return compact_time(ticket.created_at)

    @admin.display(description="Resolved", ordering="resolved_at")
    def resolved(self, ticket: Ticket) -> str:
        return compact_time(ticket.resolved_at)


@admin.register(Feedback)
class FeedbackAdmin(OwnConversationsOnlyForAgents, CreatedByCustomersOnly):
    conversation_path = "message__conversation"
    list_display = ("id", "rating", "short_comment", "reply_text", "in_conversation", "rated")
    list_filter = ("rating", "created_at")
    search_fields = ("comment", "message__text")
    list_select_related = ("message", "message__conversation")
    readonly_fields = ("message", "rating", "comment", "created_at", "updated_at")

    @admin.display(description="Comment")
    def short_comment(self, feedback: Feedback) -> str:
        return one_line(feedback.comment) if feedback.comment else "–"

    @admin.display(description="Reply")
    def reply_text(self, feedback: Feedback) -> str:
        return one_line(feedback.message.text)

    @admin.display(description="Conversation")
    def in_conversation(self, feedback: Feedback) -> str:
        return conversation_link(feedback.message.conversation_id)

    @admin.display(description="Rated", ordering="created_at")
    def rated(self, feedback: Feedback) -> str:
        return compact_time(feedback.created_at)


@admin.register(SatisfactionRating)
class SatisfactionRatingAdmin(OwnConversationsOnlyForAgents, CreatedByCustomersOnly):
    list_display = ("id", "score", "short_comment", "conversation", "created_at")
    list_filter = ("score", "created_at")
    search_fields = ("comment", "conversation__id")
    list_select_related = ("conversation",)
    readonly_fields = ("conversation", "score", "comment", "created_at", "updated_at")

    @admin.display(description="Comment")
    def short_comment(self, rating: SatisfactionRating) -> str:
        return one_line(rating.comment) if rating.comment else "–"
