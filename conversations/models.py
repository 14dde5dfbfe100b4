"""Conversations, messages, attachments, tickets and feedback."""

from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from cs_platform.pii import pii_mask


def token_hash(token: str) -> str:
    """The stored form of a customer token."""
    return hashlib.sha256(token.encode()).hexdigest()


class Conversation(models.Model):
    class Channel(models.TextChoices):
        WIDGET = "widget", "Web widget"
        API = "api", "API"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        HANDED_OFF = "handed_off", "Handed off to a person"
        CLOSED = "closed", "Closed"

    class Locale(models.TextChoices):
        ZH_HANS = "zh-Hans", "简体中文"
        EN = "en", "English"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # sha256 of the customer's bearer token; the token itself is never stored.
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.WIDGET)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    locale = models.CharField(max_length=8, choices=Locale.choices, default=Locale.EN)
    customer_ip = models.GenericIPAddressField(null=True, blank=True)
    customer_user_agent = models.CharField(max_length=512, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The host site's own id for its signed-in customer, checked against its HMAC when the conversation
    # was opened (DESIGN.md, Business tools); blank for an anonymous one. The only customer id that
    # tools receive: never one the customer or the model typed.
    verified_customer_id = models.CharField(
        max_length=128,
        blank=True,
        db_index=True,
        editable=False,
        help_text="The host site's id for its customer, checked against its HMAC; blank: not verified.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Conversation {str(self.id)[:8]} ({self.get_status_display()})"


class Message(models.Model):
    class Role(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        ASSISTANT = "assistant", "Assistant"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    class Source(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        # Written by the model (grounded in retrieved sources when there were any).
        MODEL = "model", "Model"
        # An instant answer: an FAQ entry's answer, no model called.
        FAQ = "faq", "FAQ entry"
        # The best retrieved passage shown as the answer, with its citation, no model called (a profile
        # whose model is too weak to phrase answers in the conversation's language).
        KNOWLEDGE = "knowledge", "Knowledge base passage"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    text = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE, db_index=True)
    # The browser's id for a customer message, so that a resend after a reconnect is not saved twice.
    client_id = models.UUIDField(null=True, blank=True)
    # For an assistant reply: the customer message it answers.
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # None when the server reported no usage: unknown is not zero.
    completion_tokens_counted = models.BooleanField(
        default=False,
        help_text="No usage reported: completion_tokens counts the streamed chunks.",
    )
    first_token_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    total_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.CUSTOMER)
    citations = models.JSONField(default=list, blank=True)
    # A reply for which the knowledge base had nothing relevant: it offered a person (for the reports).
    is_unanswered = models.BooleanField(default=False)
    # An agent's internal note: never in a customer-facing frame, history or prompt.
    internal = models.BooleanField(default=False)
    # The model stopped at max_tokens (finish_reason "length"): the reply is cut short.
    truncated = models.BooleanField(default=False)
    # Cache or channel-layer calls that failed while it streamed (Redis away); the reply was saved whole.
    relay_failures = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error_detail = models.TextField(blank=True)
    # Generation bookkeeping: which worker claimed the reply, and when it last showed progress.
    generation_started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_unique_per_conversation",
            ),
            models.CheckConstraint(
                condition=Q(status="complete") | Q(role="assistant"),
                name="message_only_replies_have_a_generation_status",
            ),
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="message_status_heartbeat")]

    def __str__(self) -> str:
        # Shown in admin's lists, choices and confirmations: with personal data masked (cs_platform/pii.py).
        return f"{self.get_role_display()}: {pii_mask(self.text[:80])[:60]}"


def attachment_path(instance: Attachment, filename: str) -> str:
    """Content-addressed: the same image is stored once, under its hash."""
    return f"attachments/{instance.sha256[:2]}/{instance.sha256}.jpg"


def attachment_thumbnail_path(instance: Attachment, filename: str) -> str:
    """Thumbnails sit beside their image, under the same hash."""
    return f"attachments/{instance.sha256[:2]}/{instance.sha256}.thumb.jpg"


class Attachment(models.Model):
    class OcrStatus(models.TextChoices):
        # Text-only models get the text OCR reads in an image, read when it is uploaded.
        NOT_READ = "not_read", "Not read yet"
        READ = "read", "Read"
        FAILED = "failed", "OCR failed"

    # A random uuid, so that an attachment's address cannot be guessed.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="attachments")
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="attachments"
    )
    image = models.ImageField(upload_to=attachment_path, width_field="width", height_field="height")
    thumbnail = models.ImageField(upload_to=attachment_thumbnail_path, blank=True)
    content_type = models.CharField(max_length=64, default="image/jpeg")
    size = models.PositiveIntegerField(help_text="Bytes of the normalised image.")
    sha256 = models.CharField(max_length=64, db_index=True)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    original_name = models.CharField(max_length=255, blank=True)
    original_content_type = models.CharField(max_length=64, blank=True)
    original_size = models.PositiveIntegerField(default=0)
    # The upload's size as displayed (after EXIF rotation), before normalisation scaled it.
    original_width = models.PositiveIntegerField(default=0)
    original_height = models.PositiveIntegerField(default=0)
    position = models.PositiveSmallIntegerField(default=0, help_text="Order within its message.")
    ocr_status = models.CharField(max_length=16, choices=OcrStatus.choices, default=OcrStatus.NOT_READ)
    # Set only when OCR succeeded (status "read"); "" then means the image holds no text.
    ocr_text = models.TextField(null=True, blank=True)  # noqa: DJ001 - None (not read) differs from ""
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.original_name or self.id} ({self.width}×{self.height})"


class Ticket(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ASSIGNED = "assigned", "Assigned"
        RESOLVED = "resolved", "Resolved"

    class Trigger(models.TextChoices):
        CUSTOMER_BUTTON = "customer_button", "Customer pressed the button"
        CUSTOMER_PHRASE = "customer_phrase", "Customer asked for a person"
        MODEL_TOOL = "model_tool", "Model called the handoff tool"
        KNOWLEDGE_MISS = "knowledge_miss", "Knowledge base had nothing"
        THUMBS_DOWN = "thumbs_down", "Thumbs-down in a row"
        OTHER = "other", "Other"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="tickets")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    reason = models.TextField(blank=True)
    trigger = models.CharField(max_length=32, choices=Trigger.choices, default=Trigger.OTHER, db_index=True)
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The first public (not internal) message an agent wrote in the conversation after the handoff.
    first_response_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Business-hours seconds (agents' HandoffSettings hours), null until known.
    first_response_seconds = models.PositiveIntegerField(null=True, blank=True)
    resolution_seconds = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation"],
                condition=~Q(status="resolved"),
                name="ticket_one_unresolved_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"Ticket #{self.pk} ({self.get_status_display()})"


class Feedback(models.Model):
    """A customer's thumbs up or down on one assistant reply."""

    class Rating(models.IntegerChoices):
        UP = 1, "Helpful"
        DOWN = -1, "Not helpful"

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="feedback")
    rating = models.SmallIntegerField(choices=Rating.choices)
    comment = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "feedback"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_rating_display()} on message {self.message_id}"


class SatisfactionRating(models.Model):
    """The customer's 1–5 satisfaction (CSAT) with a whole conversation."""

    conversation = models.OneToOneField(Conversation, on_delete=models.CASCADE, related_name="csat")
    score = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(5)])
    comment = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "CSAT rating"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(score__gte=1, score__lte=5), name="csat_score_between_1_and_5")
        ]

    def __str__(self) -> str:
        return f"CSAT {self.score}/5"
