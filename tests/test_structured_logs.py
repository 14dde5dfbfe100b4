"""Structured logs: JSON lines with a request id that follows a customer's message to the inference server.

Lines are captured with a handler built as settings.LOGGING builds the console's (its formatter and
its filters, the PII filter included), on the root logger, where every logger's records end up.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import AsyncClient, Client
from django.utils.module_loading import import_string

from conversations import consumers, services
from conversations.models import Conversation, Message
from cs_platform.asgi import application
from cs_platform.logs import bound_context
from inference import tasks
from tests import factories
from tests.scripted_inference import Script, ScriptedInferenceServer

ConversationFactory: Any = factories.ConversationFactory

CUSTOMER_IP = "203.0.113.7"
ROOT = Path(__file__).resolve().parents[1]


def configured_handler(stream: io.StringIO, formatter: str) -> logging.Handler:
    """A handler writing to `stream` with LOGGING's `formatter` and the console handler's filters."""
    config: dict[str, Any] = django_settings.LOGGING
    handler = logging.StreamHandler(stream)
    handler.setFormatter(import_string(config["formatters"][formatter]["()"])())
    for name in config["handlers"]["console"]["filters"]:
        handler.addFilter(import_string(config["filters"][name]["()"])())
    return handler


class Captured:
    """What the configured handler wrote: the raw text, and its lines parsed as JSON."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == event]


def _capture(formatter: str) -> Iterator[Captured]:
    stream = io.StringIO()
    handler = configured_handler(stream, formatter)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield Captured(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def json_logs() -> Iterator[Captured]:
    yield from _capture("json")


@pytest.fixture
def plain_logs() -> Iterator[Captured]:
    yield from _capture("plain")


logger = logging.getLogger("tests.structured_logs")


# --- the format ----------------------------------------------------------------------------------------


def test_every_line_is_a_json_object_with_time_level_logger_event_and_fields(json_logs: Captured) -> None:
    with bound_context(request_id="req-1", conversation_id="c-1"):
        logger.info("order.looked_up", extra={"order": "A-1001", "items": 3})
    logging.getLogger("django.request").warning("Not Found: %s", "/nowhere")

    first, second = json_logs.lines()

    assert first["event"] == "order.looked_up"
    assert (first["level"], first["logger"]) == ("info", "tests.structured_logs")
    assert (first["request_id"], first["conversation_id"]) == ("req-1", "c-1")
    assert (first["order"], first["items"]) == ("A-1001", 3)
    # UTC, ISO 8601.
    assert first["timestamp"].endswith("Z")
    assert "T" in first["timestamp"]
    # A third-party logger's line, formatted once, with no context left over from the block above.
    assert (second["event"], second["level"], second["logger"]) == (
        "Not Found: /nowhere",
        "warning",
        "django.request",
    )
    assert "request_id" not in second


def test_a_plain_line_names_the_event_and_its_fields(plain_logs: Captured) -> None:
    with bound_context(request_id="req-plain"):
        logger.info("order.looked_up", extra={"order": "A-1001"})

    [line] = plain_logs.text.splitlines()
    assert "order.looked_up" in line
    assert "request_id=req-plain" in line
    assert "order=A-1001" in line


def test_the_log_format_is_json_without_the_embedded_default() -> None:
    # The tests run with REDIS_URL: the production shape, whose default is one JSON object per line.
    assert not django_settings.EMBEDDED
    assert django_settings.LOG_FORMAT == "json"
    config: dict[str, Any] = django_settings.LOGGING
    assert config["handlers"]["console"]["formatter"] == "json"


def test_a_celery_process_keeps_the_json_lines_of_djangos_logging() -> None:
    """A real process with production settings: Celery's logging set-up (a worker's, beat's) leaves the
    configured handler in place, so Celery's own loggers write masked JSON lines too."""
    script = (
        "import logging, django; django.setup()\n"
        "from cs_platform.celery import app\n"
        "app.log.setup(loglevel='INFO')\n"
        "logging.getLogger('celery.worker').info('ready for %s', 'ops@example.com', extra={'pid': 7})\n"
    )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cs_platform.settings",
        "SECRET_KEY": "logs-test",
        "DATABASE_URL": "sqlite:///:memory:",
        "REDIS_URL": "redis://127.0.0.1:6379/11",
    }
    environment.pop("LOG_FORMAT", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    [ready] = [line for line in lines if line["logger"] == "celery.worker"]
    assert (ready["event"], ready["level"], ready["pid"]) == ("ready for o***@example.com", "info", 7)


# --- personal data ---------------------------------------------------------------------------------------


def test_personal_data_in_fields_context_and_tracebacks_is_masked(json_logs: Captured) -> None:
    with bound_context(request_id="req-pii", note="call 13812345678"):
        logger.info(
            "customer.contact",
            extra={"phone": "13812345678", "contact": {"emails": ["zhang.san@example.com"]}},
        )
        try:
            raise ValueError("no account for zhang.san@example.com")
        except ValueError:
            logger.exception("lookup failed for %s", "13812345678")

    contact, failure = json_logs.lines()

    assert "13812345678" not in json_logs.text
    assert "zhang.san@example.com" not in json_logs.text
    assert contact["phone"] == "138****5678"
    assert contact["note"] == "call 138****5678"
    assert contact["contact"] == {"emails": ["z***@example.com"]}
    assert failure["event"] == "lookup failed for 138****5678"
    assert "ValueError: no account for z***@example.com" in failure["exception"]


# --- HTTP requests -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_sane_request_id_comes_back_and_is_on_every_line_of_its_request(json_logs: Captured) -> None:
    response = Client().get("/no-such-page/", HTTP_X_REQUEST_ID="edge-4f2a.91")

    assert response.status_code == 404
    assert response["X-Request-ID"] == "edge-4f2a.91"
    lines = [line for line in json_logs.lines() if line.get("request_id") == "edge-4f2a.91"]
    events = {line["event"] for line in lines}
    assert "Not Found: /no-such-page/" in events
    [access] = [line for line in lines if line["event"] == "http.request"]
    assert (access["method"], access["path"], access["status_code"]) == ("GET", "/no-such-page/", 404)
    assert access["client_ip"] == "127.0.0.1"
    assert isinstance(access["duration_ms"], float)
    # Unbound once the response is closed: the test's own thread carries no request id any more.
    logger.info("after.the.request")
    assert "request_id" not in json_logs.events("after.the.request")[0]


@pytest.mark.django_db
def test_a_request_id_that_is_not_a_token_is_replaced(json_logs: Captured) -> None:
    response = Client().get("/no-such-page/", HTTP_X_REQUEST_ID='x" injected=1 user@example.com')

    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    assert int(request_id, 16) >= 0
    [access] = json_logs.events("http.request")
    assert access["request_id"] == request_id


@pytest.mark.django_db(transaction=True)
async def test_an_async_request_gets_an_id_too(json_logs: Captured) -> None:
    response = await AsyncClient().get("/no-such-page/", headers={"X-Request-ID": "async-1"})

    assert response["X-Request-ID"] == "async-1"
    [access] = json_logs.events("http.request")
    assert access["request_id"] == "async-1"


# --- a reply, from the websocket to the inference server and back ----------------------------------------


@database_sync_to_async
def conversation_create() -> Conversation:
    return ConversationFactory(customer_ip=CUSTOMER_IP)


@database_sync_to_async
def reply_get(reply_id: int) -> Message:
    return Message.objects.get(pk=reply_id)


def assert_reply_finished_line(line: dict[str, Any], reply: Message, request_id: str) -> None:
    assert line["request_id"] == request_id
    assert (line["conversation_id"], line["reply_id"]) == (str(reply.conversation_id), reply.pk)
    assert (line["client_ip"], line["model"], line["outcome"]) == (CUSTOMER_IP, "scripted-model", "complete")
    assert (line["ttft_ms"], line["total_ms"]) == (reply.first_token_latency_ms, reply.total_latency_ms)
    assert isinstance(line["ttft_ms"], int)
    assert isinstance(line["total_ms"], int)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (
        reply.prompt_tokens,
        reply.completion_tokens,
    )
    assert line["completion_tokens"] == 2
    assert line["error_code"] is None


@pytest.mark.django_db(transaction=True)
async def test_a_message_frames_request_id_reaches_the_inference_server_and_the_reply_line(
    live_replies: ScriptedInferenceServer, json_logs: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    live_replies.enqueue(Script(tokens=["Your parcel", " ships today."]))
    numbers = itertools.count(1)
    monkeypatch.setattr(consumers, "request_id_new", lambda: f"frame-{next(numbers)}")
    conversation = await conversation_create()
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"origin", b"http://localhost")]
    )
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "hello", "token": conversation.token})  # frame-1
    assert (await communicator.receive_json_from(timeout=5))["type"] == "ready"

    await communicator.send_json_to(  # frame-2
        {"type": "message", "client_id": str(uuid.uuid4()), "text": "My phone is 13812345678, where is it?"}
    )
    while (frame := await communicator.receive_json_from(timeout=10))["type"] not in {
        "reply.done",
        "reply.error",
    }:
        pass
    await communicator.disconnect()

    assert frame["type"] == "reply.done"
    reply = await reply_get(frame["reply_id"])
    [request] = live_replies.chat_requests
    assert request.headers["x-request-id"] == "frame-2"
    [finished] = json_logs.events("reply.finished")
    assert_reply_finished_line(finished, reply, "frame-2")
    [first_event] = json_logs.events("inference.first_event")
    assert (first_event["request_id"], first_event["reply_id"]) == ("frame-2", reply.pk)
    # No line carries what the customer or the model wrote.
    assert "13812345678" not in json_logs.text
    assert "where is it" not in json_logs.text
    assert "ships today" not in json_logs.text


def test_a_reply_queued_for_celery_carries_the_request_id_in_its_task_kwargs(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.REPLY_GENERATION_IN_PROCESS = False
    sent: list[tuple[Any, Any]] = []
    monkeypatch.setattr(tasks.reply_generate, "apply_async", lambda args, kwargs: sent.append((args, kwargs)))

    with bound_context(request_id="frame-7"):
        tasks.reply_generation_start(41)

    assert sent == [((41,), {"request_id": "frame-7"})]


@database_sync_to_async
def reply_queue(conversation: Conversation) -> Message:
    posted = services.message_post(conversation=conversation, text="Where is my parcel?")
    assert posted.reply is not None
    return posted.reply


@pytest.mark.django_db(transaction=True)
async def test_the_celery_task_binds_its_request_id_for_the_generation_and_the_server(
    scripted_inference: ScriptedInferenceServer, json_logs: Captured
) -> None:
    scripted_inference.enqueue(Script(tokens=["On", " its way."]))
    reply = await reply_queue(await conversation_create())

    # As a worker runs it: on the process's reply runtime, a loop in another thread.
    await asyncio.to_thread(tasks.reply_generate, reply.pk, "frame-9")

    reply = await reply_get(reply.pk)
    assert reply.status == Message.Status.COMPLETE
    [request] = scripted_inference.chat_requests
    assert request.headers["x-request-id"] == "frame-9"
    [finished] = json_logs.events("reply.finished")
    assert_reply_finished_line(finished, reply, "frame-9")
