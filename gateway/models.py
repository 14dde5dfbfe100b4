"""What the gateway keeps of each request: who called, for which model, how long it took, what it cost."""

from __future__ import annotations

from django.db import models

from access.models import ApiKey
from conversations.models import Conversation


class ApiRequest(models.Model):
    """One call of /v1/chat/completions (or a refusal of one), kept for operators and for quotas.

    Token counts are the inference server's own (its `usage`); they count against the key's
    tokens-per-minute limit and monthly quota. A key's rows outlive the key (SET_NULL keeps the totals).
    """

    class Mode(models.TextChoices):
        ASSISTANT = "assistant", "Assistant"
        PROXY = "proxy", "Plain proxy"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True, help_text="The model the caller asked for.")
    served_model = models.CharField(max_length=200, blank=True, help_text="The model that answered.")
    mode = models.CharField(max_length=16, choices=Mode.choices, blank=True)
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    # Milliseconds from the request's arrival: to the first token sent, and to the end of the answer.
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # The caller went away before the answer was finished (its stream was closed, the model's too).
    client_disconnected = models.BooleanField(default=False)
    request_id = models.CharField(max_length=64, blank=True)
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="api_requests"
    )

    class Meta:
        verbose_name = "API request"
        ordering = ("-created_at",)
        indexes = [
            # A key's tokens this month (the quota) and its recent requests (admin).
            models.Index(fields=("api_key", "created_at"), name="gateway_request_key_time"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.model or '?'} {self.status_code}"

    @property
    def total_tokens(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)
