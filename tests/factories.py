"""Factories for test data."""

from __future__ import annotations

import io
import secrets
from typing import Any

import factory
from PIL import Image

from conversations.models import Attachment, Conversation, Message
from conversations.services import attachment_create, token_hash
from inference.models import AssistantProfile
from knowledge.models import Article, FaqEntry


class ConversationFactory(factory.django.DjangoModelFactory):
    """A conversation; its customer token is on `.token`."""

    class Meta:
        model = Conversation

    locale = Conversation.Locale.EN
    token = factory.LazyFunction(lambda: secrets.token_urlsafe(32))
    token_hash = factory.LazyAttribute(lambda obj: token_hash(obj.token))

    @classmethod
    def _create(cls, model_class: type[Conversation], *args: Any, **kwargs: Any) -> Conversation:
        token = kwargs.pop("token")
        conversation = super()._create(model_class, *args, **kwargs)
        conversation.token = token
        return conversation


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    role = Message.Role.CUSTOMER
    text = factory.Sequence(lambda n: f"Customer message {n}")
    status = Message.Status.COMPLETE


class AssistantProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AssistantProfile

    name = "Test Assistant"
    system_instructions = "You help customers of the test shop."
    is_active = True
    temperature = 0.2
    max_tokens = 256


class ArticleFactory(factory.django.DjangoModelFactory):
    """A published article, saved directly (not through the services: no version row, no index request)."""

    class Meta:
        model = Article

    slug = factory.Sequence(lambda n: f"article-{n}")
    title = factory.Sequence(lambda n: f"Article {n}")
    body = "The lead paragraph.\n\n## A section\n\nWhat the section says."
    locale = "en"
    status = Article.Status.PUBLISHED


class FaqEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FaqEntry

    question = factory.Sequence(lambda n: f"Question {n}?")
    answer = "An answer."
    locale = "en"
    is_quick_entry = True


def jpeg_bytes(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small valid JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def attachment_for(
    conversation: Conversation, *, width: int = 64, height: int = 48, **kwargs: Any
) -> Attachment:
    """An attachment made through the real upload service."""
    return attachment_create(
        conversation=conversation,
        source=io.BytesIO(jpeg_bytes(width, height, **kwargs)),
        original_name="photo.jpg",
    )
