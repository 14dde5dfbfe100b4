"""Reply generation against a scripted inference server, listening on the conversation's group.

The generation runs on the test's own event loop (`reply_generate`) or, like a Celery worker, on a loop
of its own in another thread (`inference.tasks.reply_generate`); events go through the real Redis
channel layer and the text-so-far through the real Redis cache.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.utils import timezone
from PIL import Image

from conversations import events, progress, replies, selectors, services
from conversations.models import Attachment, Conversation, Message
from conversations.progress import ReplyText
from cs_platform.asgi import application
from cs_platform.processes import free_port
from inference import generation, tasks
from inference.client import StreamEvent
from inference.generation import reply_generate
from inference.prompts import NOTHING_FOUND_INSTRUCTIONS
from tests import factories
from tests.factories import attachment_for
from tests.scripted_inference import Script, ScriptedInferenceServer

pytestmark = pytest.mark.django_db(transaction=True)

AssistantProfileFactory: Any = factories.AssistantProfileFactory
ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

BARRIER = {"type": "test.barrier"}


class GroupListener:
    """A test channel in a conversation's group, as a customer's socket would be."""

    def __init__(self, channel: str) -> None:
        self.layer = get_channel_layer()
        self.channel = channel

    @classmethod
    async def join(cls, conversation: Conversation) -> GroupListener:
        layer = get_channel_layer()
        assert layer is not None
        channel = await layer.new_channel()
        await layer.group_add(events.conversation_group(conversation.pk), channel)
        return cls(channel)

    async def next(self, wait: float = 10) -> dict[str, Any]:
        assert self.layer is not None
        event: dict[str, Any] = await asyncio.wait_for(self.layer.receive(self.channel), wait)
        return event

    async def until(self, *types: str, wait: float = 10) -> list[dict[str, Any]]:
        received = []
        while True:
            received.append(await self.next(wait))
            if received[-1]["type"] in types:
                return received

    async def rest(self) -> list[dict[str, Any]]:
        """Everything sent to the group so far: a barrier sent now arrives after all of it."""
        assert self.layer is not None
        await self.layer.send(self.channel, BARRIER)
        received = await self.until(BARRIER["type"])
        return received[:-1]


@pytest.fixture
def other_server() -> Iterator[ScriptedInferenceServer]:
    with ScriptedInferenceServer() as server:
        yield server


@database_sync_to_async
def queued_reply(
    *,
    locale: str = "en",
    text: str = "Where is my parcel?",
    conversation: Conversation | None = None,
    attachments: Sequence[Attachment] = (),
) -> Message:
    """A customer message and its reply, queued (the `enqueued_replies` fixture keeps it from running)."""
    conversation = conversation or ConversationFactory(locale=locale)
    posted = services.message_post(
        conversation=conversation, text=text, attachment_ids=[attachment.pk for attachment in attachments]
    )
    assert posted.reply is not None
    return posted.reply


@database_sync_to_async
def reload(reply: Message) -> Message:
    return Message.objects.get(pk=reply.pk)


def deltas_of(received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in received if event["type"] == "reply.delta"]


def assert_numbered(deltas: list[dict[str, Any]], reply_id: int) -> None:
    assert [(delta["type"], delta["reply_id"], delta["seq"]) for delta in deltas] == [
        ("reply.delta", reply_id, seq) for seq in range(len(deltas))
    ]


async def generate(reply: Message, wait: float = 15) -> None:
    await asyncio.wait_for(reply_generate(reply_id=reply.pk), wait)


# --- a reply that streams to the end -----------------------------------------------------------------


async def test_it_streams_and_saves_a_reply_without_the_prompts_fence_a_model_echoed(
    scripted_inference: ScriptedInferenceServer,
):
    # A small model repeats the tag that fenced its sources, split over tokens as a tokenizer splits it.
    scripted_inference.enqueue(Script(tokens=["Yes", " <", "sour", "ces>\n", "within 30 days", "</sources>"]))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    received = await listener.rest()
    saved = await reload(reply)
    deltas, done = received[:-1], received[-1]
    assert_numbered(deltas, reply.pk)
    assert "".join(delta["text"] for delta in deltas) == "Yes within 30 days"
    assert (saved.text, done["message"]["text"]) == ("Yes within 30 days", "Yes within 30 days")


async def test_it_saves_the_exact_tokens_with_usage_model_and_latencies(
    scripted_inference: ScriptedInferenceServer,
):
    tokens = ["您好", "，", "包裹", "明天", "送达", "。", " OK"]
    scripted_inference.enqueue(
        Script(
            tokens=tokens,
            usage={"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
            model="qwen2.5-vl-7b",
        )
    )
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    received = await listener.rest()
    saved = await reload(reply)
    deltas, done = received[:-1], received[-1]
    assert_numbered(deltas, reply.pk)
    assert "".join(delta["text"] for delta in deltas) == "您好，包裹明天送达。 OK"
    assert done == {
        "type": "reply.done",
        "reply_id": reply.pk,
        "message": {
            "id": reply.pk,
            "role": "assistant",
            "text": "您好，包裹明天送达。 OK",
            "status": "complete",
            "attachments": [],
            "source": "model",
            "citations": [],
            "truncated": False,
            "error": None,
            "created_at": saved.created_at.isoformat(),
        },
    }
    assert saved.text == "您好，包裹明天送达。 OK"
    assert saved.status == Message.Status.COMPLETE
    assert (saved.prompt_tokens, saved.completion_tokens) == (42, 7)
    assert saved.model == "qwen2.5-vl-7b"
    assert (saved.error_code, saved.error_detail) == ("", "")
    assert saved.first_token_latency_ms is not None
    assert saved.total_latency_ms is not None
    assert 0 <= saved.first_token_latency_ms <= saved.total_latency_ms
    assert saved.generation_started_at is not None
    assert saved.completed_at is not None
    # The text-so-far for sockets joining mid-reply is gone once the reply is saved.
    assert await sync_to_async(progress.reply_text_get)(reply.pk) is None


async def test_it_reads_the_reply_once_in_the_claims_hop_before_its_request_leaves(
    scripted_inference: ScriptedInferenceServer, settings: Any, monkeypatch: pytest.MonkeyPatch
):
    settings.INFERENCE_VISION = False  # so that the OCR wait runs too
    scripted_inference.enqueue(Script(tokens=["On", " its", " way"]))
    reply = await queued_reply()
    reads: list[int] = []
    hops: list[str] = []
    real_read = selectors.reply_get_for_prompt
    real_call = SyncToAsync.__call__

    def read(*, reply_id: int) -> Message:
        reads.append(reply_id)
        return real_read(reply_id=reply_id)

    async def hop(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(self.func, "__name__", repr(self.func)))
        return await real_call(self, *args, **kwargs)

    monkeypatch.setattr(selectors, "reply_get_for_prompt", read)
    monkeypatch.setattr(SyncToAsync, "__call__", hop)

    await generate(reply)

    assert (await reload(reply)).text == "On its way"
    assert reads == [reply.pk]
    assert hops[: hops.index("_prompt_build_on_own_thread") + 1] == [
        "reply_claim_for_generation",
        "attachments_ocr_pending_list",
        "_prompt_build_on_own_thread",
    ]


async def test_it_counts_prompt_and_completion_tokens_from_the_servers_usage(
    scripted_inference: ScriptedInferenceServer,
):
    scripted_inference.enqueue(Script(tokens=["a", "b", "c"]))
    reply = await queued_reply(text="one two three four")

    await generate(reply)

    saved = await reload(reply)
    [request] = scripted_inference.chat_requests
    # The scripted server counts the words of the prompt it received; the reply stores what it reported.
    expected_prompt_tokens = sum(len(message["content"].split()) for message in request.json["messages"])
    assert (saved.prompt_tokens, saved.completion_tokens) == (expected_prompt_tokens, 3)
    assert saved.model == "scripted-model"


async def test_it_sends_the_first_token_at_once_before_the_next_one_exists(
    settings: Any, scripted_inference: ScriptedInferenceServer
):
    # Later tokens would wait this long to be gathered into one delta; the first does not wait at all.
    settings.INFERENCE_COALESCE_SECONDS = 60
    scripted_inference.enqueue(Script(tokens=["First", " second"], stall_after=1, stall_seconds=30))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)
    generation = asyncio.create_task(reply_generate(reply_id=reply.pk))

    first = await listener.next()

    # The server is still holding back the second token: the delta did not wait for it.
    [request] = scripted_inference.chat_requests
    assert not request.completed
    assert first == {"type": "reply.delta", "reply_id": reply.pk, "seq": 0, "text": "First"}
    outcome = await database_sync_to_async(replies.reply_cancel)(
        conversation=reply.conversation, reply_id=reply.pk
    )
    assert outcome.cancelled_here is False
    await asyncio.wait_for(generation, 10)
    [done] = await listener.rest()
    assert done["type"] == "reply.done"
    assert (done["message"]["text"], done["message"]["status"]) == ("First", "cancelled")
    saved = await reload(reply)
    assert (saved.text, saved.status) == ("First", "cancelled")
    await scripted_inference.wait_for_disconnects_async(1, timeout=5)
    # The request to stop is cleared with the reply saved.
    assert await sync_to_async(progress.reply_cancel_flagged)(reply.pk) is False


async def test_it_coalesces_fast_tokens_into_fewer_numbered_deltas(
    settings: Any, scripted_inference: ScriptedInferenceServer
):
    settings.INFERENCE_COALESCE_SECONDS = 0.25
    tokens = ["First"] + [f" w{index}" for index in range(60)]
    scripted_inference.enqueue(Script(tokens=tokens, token_delay=0.002))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    received = await listener.rest()
    deltas = deltas_of(received)
    assert received[-1]["type"] == "reply.done"
    assert_numbered(deltas, reply.pk)
    assert deltas[0]["text"] == "First"
    assert 2 <= len(deltas) < len(tokens) // 3
    assert "".join(delta["text"] for delta in deltas) == "".join(tokens)
    assert (await reload(reply)).text == "".join(tokens)


async def test_it_keeps_the_text_so_far_in_the_cache_while_streaming(
    scripted_inference: ScriptedInferenceServer,
):
    scripted_inference.enqueue(Script(tokens=["Half", " way", " there"], stall_after=2, stall_seconds=30))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)
    generation = asyncio.create_task(reply_generate(reply_id=reply.pk))

    text = ""
    last_seq = -1
    while text != "Half way":
        delta = await listener.next()
        text += delta["text"]
        last_seq = delta["seq"]
    so_far = await sync_to_async(progress.reply_text_get)(reply.pk)
    await database_sync_to_async(replies.reply_cancel)(conversation=reply.conversation, reply_id=reply.pk)
    await asyncio.wait_for(generation, 10)

    assert so_far == ReplyText(text="Half way", seq=last_seq)
    assert await sync_to_async(progress.reply_text_get)(reply.pk) is None


# --- failures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["en", "zh-Hans"])
async def test_it_reports_a_server_error_as_inference_unavailable_in_the_customers_language(
    locale: str, scripted_inference: ScriptedInferenceServer
):
    scripted_inference.enqueue(Script(status=500, error_message="CUDA out of memory"))
    reply = await queued_reply(locale=locale)
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    [error] = await listener.rest()
    saved = await reload(reply)
    detail = {
        "en": "The assistant is unavailable right now. Please try again in a moment, or ask for a person.",
        "zh-Hans": "智能助手暂时无法使用，请稍后重试，或转接人工客服。",
    }[locale]
    assert error == {
        "type": "reply.error",
        "reply_id": reply.pk,
        "code": "inference_unavailable",
        "detail": detail,
        "message": {
            "id": reply.pk,
            "role": "assistant",
            "text": "",
            "status": "failed",
            "attachments": [],
            "source": "model",
            "citations": [],
            "truncated": False,
            "error": {"code": "inference_unavailable", "detail": detail},
            "created_at": saved.created_at.isoformat(),
        },
    }
    assert (saved.status, saved.text, saved.error_code, saved.error_detail) == (
        "failed",
        "",
        "inference_unavailable",
        detail,
    )
    # The server's own words stay out of what the customer sees.
    assert "CUDA" not in saved.error_detail
    assert saved.completed_at is not None
    assert len(scripted_inference.chat_requests) == 1


async def test_it_fails_over_from_an_unreachable_server_to_the_next(
    settings: Any, scripted_inference: ScriptedInferenceServer
):
    settings.INFERENCE_BASE_URLS = [f"http://127.0.0.1:{free_port()}/v1", scripted_inference.base_url]
    scripted_inference.enqueue(Script(tokens=["From", " the", " second"]))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    received = await listener.rest()
    saved = await reload(reply)
    assert received[-1]["type"] == "reply.done"
    assert (saved.status, saved.text) == ("complete", "From the second")
    assert len(scripted_inference.chat_requests) == 1


async def test_it_fails_over_from_a_server_answering_500_to_the_next(
    settings: Any, scripted_inference: ScriptedInferenceServer, other_server: ScriptedInferenceServer
):
    settings.INFERENCE_BASE_URLS = [other_server.base_url, scripted_inference.base_url]
    other_server.enqueue(Script(status=503, error_message="overloaded"))
    scripted_inference.enqueue(Script(tokens=["Still", " here"]))
    reply = await queued_reply()

    await generate(reply)

    saved = await reload(reply)
    assert (saved.status, saved.text, saved.error_code) == ("complete", "Still here", "")
    assert len(other_server.chat_requests) == 1
    assert len(scripted_inference.chat_requests) == 1
    # Both servers were asked the same thing.
    assert other_server.chat_requests[0].json == scripted_inference.chat_requests[0].json


async def test_it_does_not_fail_over_once_the_first_token_arrived(
    settings: Any, scripted_inference: ScriptedInferenceServer, other_server: ScriptedInferenceServer
):
    settings.INFERENCE_BASE_URLS = [scripted_inference.base_url, other_server.base_url]
    scripted_inference.enqueue(Script(tokens=["Begun", " and", " lost"], disconnect_after=1))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    received = await listener.rest()
    saved = await reload(reply)
    assert [event["type"] for event in received] == ["reply.delta", "reply.error"]
    assert received[-1]["code"] == "inference_unavailable"
    assert received[-1]["message"]["text"] == "Begun"
    assert (saved.status, saved.text, saved.error_code) == ("failed", "Begun", "inference_unavailable")
    # The second server would have repeated the text from the start: it was never asked.
    assert other_server.requests == []


async def test_it_fails_when_no_server_is_reachable(
    settings: Any, scripted_inference: ScriptedInferenceServer
):
    settings.INFERENCE_BASE_URLS = [
        f"http://127.0.0.1:{free_port()}/v1",
        f"http://127.0.0.1:{free_port()}/v1",
    ]
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    [error] = await listener.rest()
    saved = await reload(reply)
    assert error["code"] == "inference_unavailable"
    assert (saved.status, saved.text, saved.error_code) == ("failed", "", "inference_unavailable")


async def test_it_does_not_fail_over_when_the_server_rejects_the_request(
    settings: Any, scripted_inference: ScriptedInferenceServer, other_server: ScriptedInferenceServer
):
    settings.INFERENCE_BASE_URLS = [scripted_inference.base_url, other_server.base_url]
    scripted_inference.enqueue(Script(status=400, error_message="context length exceeded"))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    [error] = await listener.rest()
    saved = await reload(reply)
    detail = "The assistant could not handle this message. Please rephrase it, or ask for a person."
    assert (error["code"], error["detail"]) == ("inference_rejected", detail)
    assert (saved.status, saved.error_code, saved.error_detail) == ("failed", "inference_rejected", detail)
    assert other_server.requests == []


async def test_it_fails_a_malformed_chunk_as_a_bad_response_and_keeps_the_partial_text(
    scripted_inference: ScriptedInferenceServer,
):
    scripted_inference.enqueue(Script(tokens=["Par", "tial", " never"], malformed_after=2))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    received = await listener.rest()
    saved = await reload(reply)
    deltas, error = received[:-1], received[-1]
    assert_numbered(deltas, reply.pk)
    assert "".join(delta["text"] for delta in deltas) == "Partial"
    assert error["type"] == "reply.error"
    assert error["code"] == "inference_bad_response"
    assert error["detail"] == (
        "The assistant sent an answer we could not read. Please try again, or ask for a person."
    )
    assert error["message"]["text"] == "Partial"
    assert (saved.status, saved.text, saved.error_code) == ("failed", "Partial", "inference_bad_response")


async def test_it_times_out_waiting_for_the_first_token_and_closes_the_stream(
    settings: Any, scripted_inference: ScriptedInferenceServer
):
    settings.INFERENCE_FIRST_TOKEN_TIMEOUT = 0.5
    scripted_inference.enqueue(Script(tokens=["Too", " late"], first_token_delay=30))
    reply = await queued_reply(locale="zh-Hans")
    listener = await GroupListener.join(reply.conversation)

    await generate(reply, wait=10)

    [error] = await listener.rest()
    saved = await reload(reply)
    detail = "智能助手响应超时，请重试，或转接人工客服。"
    assert (error["code"], error["detail"]) == ("inference_timeout", detail)
    assert (saved.status, saved.text, saved.error_code) == ("failed", "", "inference_timeout")
    assert saved.first_token_latency_ms is None
    await scripted_inference.wait_for_disconnects_async(1, timeout=5)
    assert not scripted_inference.chat_requests[0].completed


async def test_it_times_out_on_a_stall_between_tokens_keeping_the_partial_text(
    settings: Any, scripted_inference: ScriptedInferenceServer
):
    settings.INFERENCE_TOKEN_TIMEOUT = 0.5
    scripted_inference.enqueue(Script(tokens=["Almost", " there", " now"], stall_after=2, stall_seconds=30))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply, wait=10)

    received = await listener.rest()
    saved = await reload(reply)
    assert "".join(delta["text"] for delta in deltas_of(received)) == "Almost there"
    assert received[-1]["type"] == "reply.error"
    assert received[-1]["code"] == "inference_timeout"
    assert received[-1]["message"]["text"] == "Almost there"
    assert (saved.status, saved.text, saved.error_code) == ("failed", "Almost there", "inference_timeout")
    await scripted_inference.wait_for_disconnects_async(1, timeout=5)
    [request] = scripted_inference.disconnects
    assert not request.completed


async def test_it_times_out_a_reply_that_takes_longer_than_the_total_timeout(
    settings: Any, scripted_inference: ScriptedInferenceServer
):
    settings.INFERENCE_TOTAL_TIMEOUT = 1.5
    tokens = [f"w{index} " for index in range(100)]
    scripted_inference.enqueue(Script(tokens=tokens, token_delay=0.05))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply, wait=10)

    received = await listener.rest()
    saved = await reload(reply)
    streamed = "".join(delta["text"] for delta in deltas_of(received))
    assert received[-1]["code"] == "inference_timeout"
    assert (saved.status, saved.error_code) == ("failed", "inference_timeout")
    assert saved.text == streamed
    # A proper, non-empty prefix: the reply was cut off, not lost and not finished.
    assert 0 < len(saved.text) < len("".join(tokens))
    assert "".join(tokens).startswith(saved.text)
    await scripted_inference.wait_for_disconnects_async(1, timeout=5)


# --- cancel ----------------------------------------------------------------------------------------


async def test_it_stops_at_a_heartbeat_when_the_cancel_is_in_the_database_but_not_the_cache(
    settings: Any, scripted_inference: ScriptedInferenceServer
):
    settings.REPLY_HEARTBEAT_SECONDS = 0.1
    scripted_inference.enqueue(
        Script(tokens=["Going", " on", " and", " on"], stall_after=1, stall_seconds=30)
    )
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)
    generation = asyncio.create_task(reply_generate(reply_id=reply.pk))
    await listener.next()

    # As reply_cancel does, minus the cache flag (as if the cache had lost it).
    await Message.objects.filter(pk=reply.pk).aupdate(cancel_requested_at=timezone.now())
    await asyncio.wait_for(generation, 10)

    [done] = await listener.rest()
    saved = await reload(reply)
    assert done["type"] == "reply.done"
    assert (done["message"]["text"], done["message"]["status"]) == ("Going", "cancelled")
    assert (saved.text, saved.status) == ("Going", "cancelled")
    await scripted_inference.wait_for_disconnects_async(1, timeout=5)


async def test_it_does_not_generate_a_reply_cancelled_before_a_worker_took_it(
    scripted_inference: ScriptedInferenceServer,
):
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)
    await database_sync_to_async(replies.reply_cancel)(conversation=reply.conversation, reply_id=reply.pk)

    await generate(reply)

    # The cancel told every socket itself; the generation sent nothing.
    [done] = await listener.rest()
    assert (done["type"], done["reply_id"], done["message"]["status"]) == (
        "reply.done",
        reply.pk,
        "cancelled",
    )
    saved = await reload(reply)
    assert (saved.status, saved.text, saved.generation_started_at) == ("cancelled", "", None)
    assert scripted_inference.requests == []


# --- redelivery and lost workers ----------------------------------------------------------------------


async def test_it_generates_a_redelivered_job_once(scripted_inference: ScriptedInferenceServer):
    scripted_inference.enqueue(Script(tokens=["Only", " once"]))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    # The Celery task, twice, as after a redelivery: each runs its own event loop, like a worker.
    await asyncio.to_thread(tasks.reply_generate, reply.pk)
    await asyncio.to_thread(tasks.reply_generate, reply.pk)

    received = await listener.rest()
    saved = await reload(reply)
    assert [event["type"] for event in received if event["type"] != "reply.delta"] == ["reply.done"]
    assert (saved.status, saved.text) == ("complete", "Only once")
    assert len(scripted_inference.chat_requests) == 1


async def test_it_generates_once_when_two_deliveries_run_at_the_same_time(
    scripted_inference: ScriptedInferenceServer,
):
    scripted_inference.enqueue(Script(tokens=["Just", " one"], token_delay=0.05))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await asyncio.wait_for(
        asyncio.gather(reply_generate(reply_id=reply.pk), reply_generate(reply_id=reply.pk)), 15
    )

    received = await listener.rest()
    assert [event["type"] for event in received if event["type"] != "reply.delta"] == ["reply.done"]
    assert (await reload(reply)).text == "Just one"
    assert len(scripted_inference.chat_requests) == 1


@database_sync_to_async
def started_reply(*, heartbeat_age: timedelta, locale: str = "en") -> Message:
    """A reply a worker claimed, whose last heartbeat was `heartbeat_age` ago."""
    conversation = ConversationFactory(locale=locale)
    posted = services.message_post(conversation=conversation, text="Hello?")
    assert posted.reply is not None
    assert replies.reply_claim(reply_id=posted.reply.pk)
    then = timezone.now() - heartbeat_age
    Message.objects.filter(pk=posted.reply.pk).update(generation_started_at=then, heartbeat_at=then)
    return Message.objects.select_related("conversation").get(pk=posted.reply.pk)


async def test_it_fails_a_reply_whose_worker_died_keeping_the_text_it_had_streamed(settings: Any):
    settings.REPLY_STALLED_AFTER_SECONDS = 30
    dead = await started_reply(heartbeat_age=timedelta(seconds=31))
    alive = await started_reply(heartbeat_age=timedelta(seconds=5))
    await sync_to_async(progress.reply_text_append)(dead.pk, ["par", "tial"])
    await sync_to_async(progress.reply_text_append)(alive.pk, ["still", " going"])
    dead_listener = await GroupListener.join(dead.conversation)
    alive_listener = await GroupListener.join(alive.conversation)

    failed = await database_sync_to_async(tasks.replies_fail_stalled)()

    saved = await reload(dead)
    detail = "The assistant stopped while answering. Please try again, or ask for a person."
    assert failed == 1
    assert (saved.status, saved.text, saved.error_code, saved.error_detail) == (
        "failed",
        "partial",
        "worker_lost",
        detail,
    )
    assert saved.completed_at is not None
    [error] = await dead_listener.rest()
    assert error == {
        "type": "reply.error",
        "reply_id": dead.pk,
        "code": "worker_lost",
        "detail": detail,
        "message": {
            "id": dead.pk,
            "role": "assistant",
            "text": "partial",
            "status": "failed",
            "attachments": [],
            "source": "model",
            "citations": [],
            "truncated": False,
            "error": {"code": "worker_lost", "detail": detail},
            "created_at": saved.created_at.isoformat(),
        },
    }
    untouched = await reload(alive)
    assert (untouched.status, untouched.text, untouched.error_code, untouched.completed_at) == (
        "streaming",
        "",
        "",
        None,
    )
    assert await alive_listener.rest() == []


async def test_it_fails_a_reply_no_worker_picked_up_in_time(settings: Any):
    settings.REPLY_QUEUE_TIMEOUT_SECONDS = 60
    stuck = await queued_reply(locale="zh-Hans")
    fresh = await queued_reply()
    await Message.objects.filter(pk=stuck.pk).aupdate(created_at=timezone.now() - timedelta(seconds=61))
    listener = await GroupListener.join(stuck.conversation)

    failed = await database_sync_to_async(tasks.replies_fail_stalled)()

    saved = await reload(stuck)
    assert failed == 1
    assert (saved.status, saved.text, saved.error_code, saved.error_detail) == (
        "failed",
        "",
        "inference_unavailable",
        "智能助手暂时无法使用，请稍后重试，或转接人工客服。",
    )
    [error] = await listener.rest()
    assert (error["type"], error["code"]) == ("reply.error", "inference_unavailable")
    assert (await reload(fresh)).status == "streaming"
    # A worker that takes the job late finds nothing to do.
    assert await database_sync_to_async(replies.reply_claim)(reply_id=stuck.pk) is False


async def test_it_stops_without_overwriting_a_reply_the_sweeper_failed_meanwhile(
    settings: Any, scripted_inference: ScriptedInferenceServer
):
    settings.REPLY_HEARTBEAT_SECONDS = 0.1
    tokens = [f"t{index} " for index in range(40)]
    scripted_inference.enqueue(Script(tokens=tokens, token_delay=0.05))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)
    generation = asyncio.create_task(reply_generate(reply_id=reply.pk))
    await listener.next()

    swept = await database_sync_to_async(replies.reply_fail)(reply_id=reply.pk, code="worker_lost")
    await asyncio.wait_for(generation, 10)

    assert swept is not None
    saved = await reload(reply)
    assert (saved.status, saved.error_code, saved.text) == ("failed", "worker_lost", swept.text)
    assert swept.text != "".join(tokens)
    received = await listener.rest()
    # Only the sweeper's reply.error: the abandoned generation sends no reply.done of its own.
    assert [event["type"] for event in received if event["type"] != "reply.delta"] == ["reply.error"]
    await scripted_inference.wait_for_disconnects_async(1, timeout=5)
    assert not scripted_inference.chat_requests[0].completed


async def test_it_keeps_a_reply_alive_through_a_prompt_build_longer_than_the_stall_limit(
    settings: Any, monkeypatch: pytest.MonkeyPatch, scripted_inference: ScriptedInferenceServer
):
    # Defect: heartbeats began only with streaming, so OCR in prompt building (40 s) outlived
    # REPLY_STALLED_AFTER_SECONDS and the sweeper failed a reply that was still working.
    settings.REPLY_HEARTBEAT_SECONDS = 0.1
    # Twenty heartbeats to the limit: on a loaded CI machine one beat may wait a second for the
    # database thread (the sweeper below shares it), which must not be taken for a dead worker.
    settings.REPLY_STALLED_AFTER_SECONDS = 2
    scripted_inference.enqueue(Script(tokens=["Worth", " the", " wait"]))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)
    real_prompt_build = generation.prompt_build

    def slow_prompt_build(*, reply_id: int, **kwargs: Any) -> Any:
        # Slow work (as dense OCR was), three stall limits long, while the sweeper below keeps looking.
        deadline = time.monotonic() + 3 * settings.REPLY_STALLED_AFTER_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return real_prompt_build(reply_id=reply_id, **kwargs)

    monkeypatch.setattr(generation, "prompt_build", slow_prompt_build)
    running = asyncio.create_task(reply_generate(reply_id=reply.pk))
    swept: list[Message] = []
    while not running.done():
        swept += await database_sync_to_async(replies.replies_fail_stalled)()
        await asyncio.sleep(0.1)
    await running

    saved = await reload(reply)
    received = await listener.rest()
    assert swept == []
    assert (saved.status, saved.text, saved.error_code) == ("complete", "Worth the wait", "")
    assert [event["type"] for event in received if event["type"] != "reply.delta"] == ["reply.done"]


async def test_it_saves_a_reply_cut_by_max_tokens_as_truncated(scripted_inference: ScriptedInferenceServer):
    scripted_inference.enqueue(Script(tokens=["The", " policy", " says"], finish_reason="length"))
    reply = await queued_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    saved = await reload(reply)
    done = (await listener.rest())[-1]
    assert (saved.status, saved.text, saved.truncated) == ("complete", "The policy says", True)
    assert done["type"] == "reply.done"
    assert (done["message"]["status"], done["message"]["truncated"]) == ("complete", True)


async def test_it_does_not_mark_a_reply_that_stopped_by_itself_as_truncated(
    scripted_inference: ScriptedInferenceServer,
):
    scripted_inference.enqueue(Script(tokens=["Done", "."], finish_reason="stop"))
    reply = await queued_reply()

    await generate(reply)

    saved = await reload(reply)
    assert (saved.status, saved.truncated) == ("complete", False)


class UsageLessClient:
    """An inference server that streams text and reports no usage at all (some servers do not)."""

    async def stream_chat(self, request: Any) -> Any:
        for text in ["No", " usage", " here"]:
            yield StreamEvent(text=text, model="quiet-model")
        yield StreamEvent(model="quiet-model", finish_reason="stop")


async def test_it_keeps_unknown_token_counts_unknown_when_the_server_reports_no_usage():
    reply = await queued_reply()

    await asyncio.wait_for(reply_generate(reply_id=reply.pk, client=UsageLessClient()), 15)  # type: ignore[arg-type]

    saved = await reload(reply)
    assert (saved.status, saved.text, saved.model) == ("complete", "No usage here", "quiet-model")
    # Unknown is not zero: no prompt count; the completion's is the chunks counted, and marked so.
    assert (saved.prompt_tokens, saved.completion_tokens, saved.completion_tokens_counted) == (None, 3, True)


# --- the request the inference server receives (what a prompt holds is tested in test_prompts.py) -----


@database_sync_to_async
def conversation_with_history(**profile: Any) -> Message:
    AssistantProfileFactory(**profile)
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, text="My order is late")
    MessageFactory(conversation=conversation, role="assistant", text="Sorry! What is the order number?")
    MessageFactory(conversation=conversation, role="system", text="A person will join shortly.")
    MessageFactory(conversation=conversation, role="agent", text="Hi, I am Lee from support.")
    posted = services.message_post(conversation=conversation, text="It is 12345")
    assert posted.reply is not None
    return posted.reply


SYSTEM_PROMPT = (
    "Your name is Ava.\n"
    "You help customers of the test shop.\n"
    "Always answer in the language of the customer's latest message (Simplified Chinese or English).\n\n"
    # No article is published on the test database: the model is told that nothing covers the question.
    f"{NOTHING_FOUND_INSTRUCTIONS}"
)


async def test_it_sends_the_profile_and_the_history_in_order(scripted_inference: ScriptedInferenceServer):
    reply = await conversation_with_history(name="Ava", max_tokens=300, temperature=0.7)

    await generate(reply)

    [request] = scripted_inference.chat_requests
    assert request.headers["accept"] == "text/event-stream"
    assert "authorization" not in request.headers
    assert request.json == {
        "model": "scripted-model",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 300,
        "temperature": 0.7,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "My order is late"},
            # Consecutive turns of one role are joined: strict chat templates need them to alternate.
            {
                "role": "assistant",
                "content": "Sorry! What is the order number?\n\n"
                "[A human agent wrote:] Hi, I am Lee from support.",
            },
            {"role": "user", "content": "It is 12345"},
        ],
    }


async def test_it_uses_the_configured_model_and_api_key(
    settings: Any, scripted_inference: ScriptedInferenceServer
):
    settings.INFERENCE_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
    settings.INFERENCE_API_KEY = "sk-inference"
    reply = await queued_reply()

    await generate(reply)

    # No need to ask the server which model it serves.
    assert [request.path for request in scripted_inference.requests] == ["/v1/chat/completions"]
    [request] = scripted_inference.chat_requests
    assert request.json["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert request.headers["authorization"] == "Bearer sk-inference"


# --- images to the inference server ---------------------------------------------------------------


def image_part(attachment: Attachment) -> dict[str, Any]:
    encoded = base64.b64encode(Path(attachment.image.path).read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{encoded}"}}


def decoded_size(part: dict[str, Any]) -> tuple[int, int]:
    _, encoded = part["image_url"]["url"].split(",", 1)
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        return image.size


def recorded_image_sizes(content: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [decoded_size(part) for part in content if part["type"] == "image_url"]


async def test_it_sends_the_images_to_the_inference_server(
    scripted_inference: ScriptedInferenceServer, settings: Any
) -> None:
    settings.INFERENCE_VISION = True
    scripted_inference.enqueue(Script(tokens=["The ", "box ", "is ", "dented."]))
    conversation = await database_sync_to_async(ConversationFactory)()
    label = await database_sync_to_async(attachment_for)(conversation, width=120, height=80)
    box = await database_sync_to_async(attachment_for)(
        conversation, width=4000, height=3000, colour=(90, 60, 30)
    )
    reply = await queued_reply(
        conversation=conversation, text="My parcel arrived like this", attachments=[label, box]
    )

    await generate(reply)

    [request] = scripted_inference.chat_requests
    assert request.json["stream"] is True
    system, user = request.json["messages"]
    assert system["role"] == "system"
    assert user["role"] == "user"
    assert [part["type"] for part in user["content"]] == ["image_url", "image_url", "text"]
    assert user["content"][2] == {"type": "text", "text": "My parcel arrived like this"}
    assert user["content"][:2] == [image_part(label), image_part(box)]
    assert recorded_image_sizes(user["content"]) == [(120, 80), (1463, 1097)]
    saved = await reload(reply)
    assert (saved.status, saved.text) == (Message.Status.COMPLETE, "The box is dented.")


async def test_it_brings_an_image_sent_over_the_websocket_to_the_model(
    live_replies: ScriptedInferenceServer, settings: Any
) -> None:
    settings.INFERENCE_VISION = True
    live_replies.enqueue(Script(tokens=["A ", "cat."]))
    conversation = await database_sync_to_async(ConversationFactory)()
    attachment = await database_sync_to_async(attachment_for)(conversation, width=300, height=200)
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"origin", b"http://localhost")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "token": conversation.token})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "ready"

    await communicator.send_json_to(
        {
            "type": "message",
            "client_id": str(uuid.uuid4()),
            "text": "What is this?",
            "attachments": [str(attachment.pk)],
        }
    )
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] not in ("reply.done", "reply.error"):
        frames.append(await communicator.receive_json_from(timeout=10))
    await communicator.disconnect()

    assert frames[-1]["type"] == "reply.done"
    assert frames[-1]["message"]["text"] == "A cat."
    [request] = live_replies.chat_requests
    user = request.json["messages"][-1]
    assert user["content"][0] == image_part(attachment)
    assert recorded_image_sizes(user["content"]) == [(300, 200)]
    assert user["content"][1] == {"type": "text", "text": "What is this?"}
