"""The reply lifecycle's own rules: claimed once, finished once, and the text so far kept by appending."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import caches

from conversations import progress, replies, services
from conversations.models import Message
from conversations.progress import ReplyText
from conversations.replies import HeartbeatVerdict, ReplyOutcome
from tests import factories
from tests.conftest import real_reply_generation_enqueue

pytestmark = pytest.mark.django_db

ConversationFactory: Any = factories.ConversationFactory


def queued_reply() -> Message:
    posted = services.message_post(conversation=ConversationFactory(), text="Hi")
    assert posted.reply is not None
    return posted.reply


def test_it_finishes_a_streaming_reply_once() -> None:
    reply = queued_reply()

    finished = replies.reply_finish(
        reply_id=reply.pk,
        outcome=ReplyOutcome.COMPLETE,
        text="Hello!",
        model="qwen",
        prompt_tokens=12,
        completion_tokens=3,
    )
    again = replies.reply_finish(
        reply_id=reply.pk, outcome=ReplyOutcome.FAILED, text="Overwritten", error_code="worker_lost"
    )

    assert finished is not None
    assert again is None
    reply.refresh_from_db()
    assert (reply.text, reply.status, reply.model, reply.error_code) == ("Hello!", "complete", "qwen", "")
    assert (reply.prompt_tokens, reply.completion_tokens, reply.completion_tokens_counted) == (12, 3, False)
    assert (reply.truncated, reply.relay_failures, reply.citations) == (False, 0, [])
    assert reply.completed_at is not None


def test_it_does_not_finish_a_cancelled_reply() -> None:
    reply = queued_reply()
    replies.reply_cancel(conversation=reply.conversation, reply_id=reply.pk)

    outcome = replies.reply_finish(reply_id=reply.pk, outcome=ReplyOutcome.COMPLETE, text="Too late")

    assert outcome is None
    reply.refresh_from_db()
    assert (reply.status, reply.text) == ("cancelled", "")


def test_it_lets_only_one_worker_claim_a_reply() -> None:
    reply = queued_reply()

    claims = [replies.reply_claim(reply_id=reply.pk) for _ in range(3)]

    assert claims == [True, False, False]


def test_it_tells_the_worker_to_continue_cancel_or_abandon_at_a_heartbeat() -> None:
    reply = queued_reply()
    assert replies.reply_claim(reply_id=reply.pk)

    going = replies.reply_heartbeat(reply_id=reply.pk)
    replies.reply_cancel(conversation=reply.conversation, reply_id=reply.pk)
    cancelled = replies.reply_heartbeat(reply_id=reply.pk)
    replies.reply_fail(reply_id=reply.pk, code="worker_lost")
    abandoned = replies.reply_heartbeat(reply_id=reply.pk)

    assert (going, cancelled, abandoned) == (
        HeartbeatVerdict.CONTINUE,
        HeartbeatVerdict.CANCEL,
        HeartbeatVerdict.ABANDON,
    )


def test_it_records_a_heartbeat_of_a_reply_going_on_in_one_query(django_assert_num_queries: Any) -> None:
    reply = queued_reply()
    assert replies.reply_claim(reply_id=reply.pk)

    with django_assert_num_queries(1):
        verdict = replies.reply_heartbeat(reply_id=reply.pk)

    assert verdict == HeartbeatVerdict.CONTINUE


def test_it_queues_nothing_and_logs_when_no_generator_is_registered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(replies, "_generator", None)

    real_reply_generation_enqueue(reply_id=7)

    assert "Reply 7 queued but no reply generator is registered" in caplog.text


def test_it_hands_a_queued_reply_to_the_registered_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    monkeypatch.setattr(replies, "_generator", None)
    replies.reply_generator_register(started.append)

    real_reply_generation_enqueue(reply_id=7)

    assert started == [7]


# --- the text so far --------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "in_memory"])
def progress_store(request: Any, settings: Any) -> str:
    """The text-so-far store over the real Redis cache, and over the embedded default's locmem."""
    if request.param == "in_memory":
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    return str(request.param)


def test_it_appends_each_delta_and_reads_the_text_with_its_last_seq(progress_store: str) -> None:
    chunks: list[str] = []
    for chunk in ["您好", "，", "包裹", " OK"]:
        chunks.append(chunk)
        assert progress.reply_text_append(101, chunks)

    assert progress.reply_text_get(101) == ReplyText(text="您好，包裹 OK", seq=3)
    assert progress.reply_progress_clear([101])
    assert progress.reply_text_get(101) is None


def test_it_writes_the_whole_text_again_when_an_append_was_lost(progress_store: str) -> None:
    assert progress.reply_text_append(102, ["a"])
    # The append of "b" never reached the store (a failed call, a Redis restart).

    assert progress.reply_text_append(102, ["a", "b", "c"])

    assert progress.reply_text_get(102) == ReplyText(text="abc", seq=2)
    progress.reply_progress_clear([102])


def test_it_appends_one_item_per_delta_in_redis() -> None:
    cache = caches["default"]
    key = cache.make_and_validate_key("reply-progress:103")
    client = cache._cache.get_client(key)  # type: ignore[attr-defined]

    progress.reply_text_append(103, ["x" * 1000])
    progress.reply_text_append(103, ["x" * 1000, "y"])

    # The earlier text is not written again: the list grew by the one new chunk.
    assert client.lrange(key, 0, -1) == [b"x" * 1000, b"y"]
    assert 0 < client.ttl(key) <= 600
    progress.reply_progress_clear([103])


async def test_it_appends_and_reads_the_cancel_flag_on_the_loop_as_the_sync_calls_do(
    progress_store: str,
) -> None:
    # The streaming path awaits these on its loop; the consumer reads with the sync calls.
    chunks: list[str] = []
    for chunk in ["您好", "，", " OK"]:
        chunks.append(chunk)
        assert await progress.areply_text_append(104, chunks)
    assert await progress.areply_text_append(104, ["您好", "，", " OK", "!", "?"])  # "!" was lost

    assert await sync_to_async(progress.reply_text_get)(104) == ReplyText(text="您好， OK!?", seq=4)
    assert await progress.areply_cancel_flagged(104) is False
    assert await sync_to_async(progress.reply_cancel_flag_set)(104)
    assert await progress.areply_cancel_flagged(104) is True
    await sync_to_async(progress.reply_progress_clear)([104])
    assert await progress.areply_cancel_flagged(104) is False


async def test_it_says_the_store_failed_when_redis_is_away_on_the_loop(settings: Any) -> None:
    # Nothing listens on port 1: the calls answer at once that they could not, and raise nothing.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }

    assert await progress.areply_text_append(105, ["a"]) is False
    assert await progress.areply_cancel_flagged(105) is None


def test_it_keeps_the_saved_reply_when_queueing_it_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The broker (Redis) is away: the socket that sent the message must not die with it.
    def broker_away(reply_id: int) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(replies, "_generator", None)
    replies.reply_generator_register(broker_away)

    real_reply_generation_enqueue(reply_id=7)

    assert "Reply 7 could not be queued for generation" in caplog.text
