"""Factories for test data."""

from __future__ import annotations

import asyncio
import io
import itertools
import secrets
from datetime import timedelta
from typing import Any

import factory
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import Group, User
from django.utils import timezone
from PIL import Image

from conversations import services
from conversations.models import Attachment, Conversation, Message, Ticket
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


_usernames = itertools.count()


def make_user(
    group: str | None = "Agent", *, first_name: str = "", last_name: str = "", **fields: Any
) -> User:
    """A user with a password, in `group` (None: in no group)."""
    username = fields.pop("username", None) or f"agent{next(_usernames)}"
    user = User.objects.create_user(
        username=username,
        password="a-long-test-password",
        first_name=first_name,
        last_name=last_name,
        **fields,
    )
    if group is not None:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def handed_off(*, reason: str = "Wants a person", minutes_ago: int = 0, **fields: Any) -> Conversation:
    """A conversation with a customer message, handed off to a person `minutes_ago` (its waiting
    ticket is `conversation.tickets.get()`)."""
    conversation: Any = ConversationFactory(**fields)
    MessageFactory(conversation=conversation, text="My parcel never arrived.")
    ticket = services.handoff_request(conversation=conversation, reason=reason)
    if minutes_ago:
        Ticket.objects.filter(pk=ticket.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    conversation.refresh_from_db()
    return conversation


class GroupListener:
    """A channel in a group, as a socket in it would be: what reaches the sockets in that group."""

    def __init__(self, group: str) -> None:
        self.layer = get_channel_layer()
        self.group = group
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(group, self.channel)

    def receive(self) -> dict[str, Any]:
        async def receive_with_timeout() -> dict[str, Any]:
            return await asyncio.wait_for(self.layer.receive(self.channel), timeout=5)

        return async_to_sync(receive_with_timeout)()

    def close(self) -> None:
        async_to_sync(self.layer.group_discard)(self.group, self.channel)
