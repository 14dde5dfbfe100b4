"""Validation of the frames a customer's socket sends (DRF serializers give exact, readable errors)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from conversations.errors import ServiceError
from conversations.services import message_max_chars


class StrictCharField(serializers.CharField):
    """A JSON string, nothing else: DRF's CharField would turn a number into its digits."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON whole number, as REST takes it: not 3.0, "3" or true, which DRF's IntegerField accepts."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


# Past these the frame is refused at once (a frame of a million characters or attachment ids is not
# worth reading); up to them, services.message_post refuses with message_too_long and
# too_many_attachments, the codes the contract documents.
HARD_CAP_FACTOR = 4


def _message_too_long() -> ServiceError:
    return ServiceError("message_too_long", f"A message can be at most {message_max_chars()} characters.")


class MessageText(StrictCharField):
    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, str) and len(data) > HARD_CAP_FACTOR * message_max_chars():
            raise _message_too_long()
        return super().to_internal_value(data)


class AttachmentIds(serializers.ListField):
    def to_internal_value(self, data: Any) -> list[Any]:
        limit = settings.ATTACHMENT_MAX_PER_MESSAGE
        if isinstance(data, list) and len(data) > HARD_CAP_FACTOR * limit:
            raise ServiceError("too_many_attachments", f"A message can carry at most {limit} images.")
        return super().to_internal_value(data)


class HelloFrame(serializers.Serializer[Any]):
    token = StrictCharField(max_length=200)


class MessageFrame(serializers.Serializer[Any]):
    client_id = serializers.UUIDField()
    text = MessageText(allow_blank=True, trim_whitespace=False, default="")
    attachments = AttachmentIds(child=serializers.UUIDField(), default=list)


class CancelFrame(serializers.Serializer[Any]):
    reply_id = serializers.IntegerField(min_value=1)


class FeedbackFrame(serializers.Serializer[Any]):
    message_id = serializers.IntegerField(min_value=1)
    rating = serializers.ChoiceField(choices=[1, -1])
    comment = StrictCharField(allow_blank=True, max_length=2000, default="")


class CsatFrame(serializers.Serializer[Any]):
    score = StrictIntegerField(min_value=1, max_value=5)
    comment = StrictCharField(allow_blank=True, max_length=2000, default="")


class HandoffFrame(serializers.Serializer[Any]):
    reason = StrictCharField(allow_blank=True, max_length=2000, default="")


def first_error(errors: Any) -> str:
    """One readable sentence from a serializer's errors: 'field: message'."""
    if isinstance(errors, dict):
        for field_name, messages in errors.items():
            return f"{field_name}: {first_error(messages)}"
    if isinstance(errors, list) and errors:
        return first_error(errors[0])
    return str(errors)
