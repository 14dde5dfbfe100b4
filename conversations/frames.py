"""Validation of the frames a customer's socket sends (DRF serializers give exact, readable errors)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from conversations.services import MESSAGE_MAX_CHARS


class HelloFrame(serializers.Serializer[Any]):
    token = serializers.CharField(max_length=200)


class MessageFrame(serializers.Serializer[Any]):
    client_id = serializers.UUIDField()
    text = serializers.CharField(
        allow_blank=True, max_length=MESSAGE_MAX_CHARS, trim_whitespace=False, default=""
    )
    attachments = serializers.ListField(child=serializers.UUIDField(), default=list)

    def validate_attachments(self, value: list[Any]) -> list[Any]:
        if len(value) > settings.ATTACHMENT_MAX_PER_MESSAGE:
            raise serializers.ValidationError(
                f"A message can carry at most {settings.ATTACHMENT_MAX_PER_MESSAGE} images."
            )
        return value


class CancelFrame(serializers.Serializer[Any]):
    reply_id = serializers.IntegerField(min_value=1)


class FeedbackFrame(serializers.Serializer[Any]):
    message_id = serializers.IntegerField(min_value=1)
    rating = serializers.ChoiceField(choices=[1, -1])
    comment = serializers.CharField(allow_blank=True, max_length=2000, default="")


class CsatFrame(serializers.Serializer[Any]):
    score = serializers.IntegerField(min_value=1, max_value=5)
    comment = serializers.CharField(allow_blank=True, max_length=2000, default="")


class HandoffFrame(serializers.Serializer[Any]):
    reason = serializers.CharField(allow_blank=True, max_length=2000, default="")


def first_error(errors: Any) -> str:
    """One readable sentence from a serializer's errors: 'field: message'."""
    if isinstance(errors, dict):
        for field_name, messages in errors.items():
            return f"{field_name}: {first_error(messages)}"
    if isinstance(errors, list) and errors:
        return first_error(errors[0])
    return str(errors)
