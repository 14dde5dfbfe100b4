"""The OpenAI-compatible gateway through the official `openai` client, against real daphne processes
(python -m cs_platform.serve_web, as production runs it) sharing the test database and Redis, with the
scripted inference server behind them."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from django.conf import settings
from django.utils import timezone
from PIL import Image

from access.keys import api_key_create
from access.models import ApiKey
from conversations.models import Conversation, Message
from cs_platform.processes import free_port, stop_process_group
from gateway.models import ApiRequest
from safety.models import BlockedTerm
from tests.http_servers import base_url, serving
from tests.processes import daphne_start, database_url
from tests.scripted_inference import Script, ScriptedInferenceServer

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "scripted-model"
ASSISTANT = "support-assistant"


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedInferenceServer]:
    with ScriptedInferenceServer(default=Script(model=MODEL)) as server:
        yield server


@pytest.fixture(scope="module")
def gateways(
    django_db_setup: None, scripted: ScriptedInferenceServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """Two web processes on one database and one Redis: the base URLs of their /v1/."""
    assert settings.REDIS_URL, "the gateway tests need REDIS_URL (make test sets it from TEST_REDIS_URL)"
    logs_dir = tmp_path_factory.mktemp("gateway")
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "gateway-test-secret",
        "INFERENCE_BASE_URL": scripted.base_url,
        "INFERENCE_MODEL": MODEL,
        "INFERENCE_VISION": "true",
        "MEDIA_ROOT": str(logs_dir / "media"),
        "SAFETY_CACHE_SECONDS": "0",
        # The picture server below: 127.0.0.1 is let through, every other internal address still refused.
        "GATEWAY_IMAGE_URL_ALLOWED_NETWORKS": "127.0.0.1/32",
        "PYTHONUNBUFFERED": "1",
    }
    processes: list[subprocess.Popen[bytes]] = []
    logs = [logs_dir / "daphne-1.log", logs_dir / "daphne-2.log"]
    urls: list[str] = []
    try:
        for log in logs:
            port = free_port()
            processes.append(daphne_start(port=port, environment=environment, log=log))
            urls.append(f"http://127.0.0.1:{port}/v1")
        yield urls
    finally:
        for process in processes:
            stop_process_group(process)
        for log in logs:
            if log.exists():
                print(log.name, log.read_text()[-6000:])


@pytest.fixture(autouse=True)
def _fresh_script(scripted: ScriptedInferenceServer) -> None:
    scripted.clear()
    scripted.default = Script(model=MODEL)


def client_for(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)


def key_with(**fields: Any) -> str:
    return api_key_create(name="CRM", **fields).key


def png_data_url(width: int = 40, height: int = 30) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def only_request(scripted: ScriptedInferenceServer) -> dict[str, Any]:
    [recorded] = scripted.chat_requests
    assert isinstance(recorded.json, dict)
    return recorded.json


def wait_for(condition: Any, *, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.05)


def test_it_lists_the_assistant_and_the_raw_model_only_where_the_key_allows_it(gateways: list[str]) -> None:
    assistant_only = client_for(gateways[0], key_with())
    both = client_for(gateways[0], key_with(allowed_models=[ASSISTANT, MODEL]))

    assert [model.id for model in assistant_only.models.list()] == [ASSISTANT]
    assert [model.id for model in both.models.list()] == [ASSISTANT, MODEL]
    assert both.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as refused:
        assistant_only.models.retrieve(MODEL)
    assert refused.value.code == "model_not_found"


def test_it_answers_as_the_assistant_whole_with_its_usage_and_keeps_a_record(
    gateways: list[str], scripted: ScriptedInferenceServer
) -> None:
    scripted.default = Script(tokens=["Parcels ", "arrive ", "in ", "two ", "days."], model=MODEL)
    client = client_for(gateways[0], key_with())

    completion = client.chat.completions.create(
        model=ASSISTANT, messages=[{"role": "user", "content": "How long does delivery take?"}]
    )

    assert completion.model == ASSISTANT
    assert completion.choices[0].message.content == "Parcels arrive in two days."
    assert completion.choices[0].finish_reason == "stop"
    sent = only_request(scripted)
    # The assistant's own system message (the profile), then the caller's turn; never the caller's model.
    assert [message["role"] for message in sent["messages"]] == ["system", "user"]
    assert "Your name is Support assistant." in sent["messages"][0]["content"]
    assert sent["messages"][1] == {"role": "user", "content": "How long does delivery take?"}
    assert sent["model"] == MODEL
    assert completion.usage is not None
    prompt_words = sum(len(message["content"].split()) for message in sent["messages"])
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt_words, 5)
    assert completion.usage.total_tokens == prompt_words + 5
    assert completion.model_extra is not None
    assert completion.model_extra["citations"] == []

    record = ApiRequest.objects.get()
    assert (record.model, record.served_model, record.mode, record.stream, record.status_code) == (
        ASSISTANT,
        MODEL,
        "assistant",
        False,
        200,
    )
    assert (record.prompt_tokens, record.completion_tokens, record.error_code) == (prompt_words, 5, "")
    assert record.client_ip == "127.0.0.1"
    assert record.first_token_ms is not None
    assert record.duration_ms is not None
    assert record.first_token_ms <= record.duration_ms
    assert record.api_key is not None
    assert record.api_key.name == "CRM"
    # The key keeps no conversations unless told to.
    assert record.conversation is None
    assert not Conversation.objects.exists()


def test_it_streams_token_by_token_with_usage_in_the_final_chunk(
    gateways: list[str], scripted: ScriptedInferenceServer
) -> None:
    tokens = ["One", " two", " three", " four"]
    scripted.default = Script(tokens=tokens, token_delay=0.05, model=MODEL)
    client = client_for(gateways[0], key_with())

    chunks = list(
        client.chat.completions.create(
            model=ASSISTANT,
            messages=[{"role": "user", "content": "Count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    texts = [
        chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content
    ]
    assert "".join(texts) == "One two three four"
    assert len(texts) == 4
    finishing = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishing[-1] == "stop"
    assert set(finishing[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert ApiRequest.objects.get().stream is True


def test_it_sends_the_stream_unbuffered_as_server_sent_events(gateways: list[str]) -> None:
    key = key_with()
    with httpx.stream(
        "POST",
        f"{gateways[0]}/chat/completions",
        headers={"Authorization": f"Bearer {key}", "Accept-Encoding": "gzip"},
        json={"model": ASSISTANT, "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert lines[-1] == "data: [DONE]"


def test_it_proxies_the_raw_model_with_the_callers_own_messages_and_options(
    gateways: list[str], scripted: ScriptedInferenceServer
) -> None:
    scripted.default = Script(tokens=["raw"], model=MODEL)
    client = client_for(gateways[0], key_with(allowed_models=[MODEL]))
    messages: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say raw"},
    ]

    completion = client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0.1, top_p=0.5, stop=["\n"], max_tokens=7, seed=3
    )

    assert completion.choices[0].message.content == "raw"
    sent = only_request(scripted)
    assert sent["messages"] == messages
    assert (sent["temperature"], sent["top_p"], sent["stop"], sent["max_tokens"], sent["seed"]) == (
        0.1,
        0.5,
        ["\n"],
        7,
        3,
    )
    assert completion.model_extra is not None
    assert "citations" not in completion.model_extra
    assert ApiRequest.objects.get().mode == "proxy"
    # A key allowed only the raw model may not ask for the assistant.
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model=ASSISTANT, messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.code == "model_not_found"


def test_it_sends_the_model_an_image_from_a_data_url_normalised(
    gateways: list[str], scripted: ScriptedInferenceServer
) -> None:
    client = client_for(gateways[0], key_with(keeps_conversations=True))

    client.chat.completions.create(
        model=ASSISTANT,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is on this label?"},
                    {"type": "image_url", "image_url": {"url": png_data_url()}},
                ],
            }
        ],
    )

    user_turn = only_request(scripted)["messages"][-1]
    assert user_turn["content"][0] == {"type": "text", "text": "What is on this label?"}
    image_url = user_turn["content"][1]["image_url"]["url"]
    assert image_url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(image_url.split(",", 1)[1])))
    assert (image.format, image.size) == ("JPEG", (40, 30))
    # Kept: the customer's message carries the image as an attachment, as a widget upload would.
    conversation = Conversation.objects.get()
    assert conversation.channel == "api"
    customer = conversation.messages.get(role=Message.Role.CUSTOMER)
    assert customer.text == "What is on this label?"
    assert [(a.width, a.height) for a in customer.attachments.all()] == [(40, 30)]


def test_it_refuses_unknown_revoked_and_expired_keys_with_invalid_api_key(gateways: list[str]) -> None:
    revoked = api_key_create(name="old CRM")
    ApiKey.objects.filter(pk=revoked.api_key.pk).update(revoked_at=timezone.now())
    expired = api_key_create(name="trial", expires_at=timezone.now() + timedelta(seconds=1))
    ApiKey.objects.filter(pk=expired.api_key.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    unknown = "csk_aaaaaaaaaa_" + "b" * 40

    for key, message in (
        (unknown, "Incorrect API key provided."),
        (revoked.key, "This API key has been revoked."),
        (expired.key, "This API key expired on"),
        ("not-a-key", "Incorrect API key provided."),
    ):
        with pytest.raises(openai.AuthenticationError) as refused:
            client_for(gateways[0], key).chat.completions.create(
                model=ASSISTANT, messages=[{"role": "user", "content": "Hi"}]
            )
        assert refused.value.status_code == 401
        assert refused.value.code == "invalid_api_key"
        assert message in refused.value.message
    # Refused before anything was asked of the model, and nothing kept for keys that open nothing.
    assert not ApiRequest.objects.exists()


def test_it_refuses_a_key_over_its_monthly_quota_with_insufficient_quota(
    gateways: list[str], scripted: ScriptedInferenceServer
) -> None:
    issued = api_key_create(name="CRM", monthly_tokens=1000)
    ApiRequest.objects.create(
        api_key=issued.api_key, status_code=200, prompt_tokens=900, completion_tokens=100
    )
    client = client_for(gateways[0], issued.key)

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=ASSISTANT, messages=[{"role": "user", "content": "Hi"}])

    assert refused.value.code == "insufficient_quota"
    assert "monthly quota of 1000 tokens" in refused.value.message
    assert scripted.chat_requests == []
    refusal = ApiRequest.objects.exclude(prompt_tokens=900).get()
    assert (refusal.status_code, refusal.error_code) == (429, "insufficient_quota")


def test_it_holds_a_keys_requests_per_minute_across_two_processes(gateways: list[str]) -> None:
    key = key_with(requests_per_minute=2)
    first, second = (client_for(url, key) for url in gateways)
    # Not at the end of a minute: the three requests must fall in one window.
    while time.time() % 60 > 50:
        time.sleep(1)

    first.chat.completions.create(model=ASSISTANT, messages=[{"role": "user", "content": "one"}])
    second.chat.completions.create(model=ASSISTANT, messages=[{"role": "user", "content": "two"}])
    with pytest.raises(openai.RateLimitError) as refused:
        first.chat.completions.create(model=ASSISTANT, messages=[{"role": "user", "content": "three"}])

    assert refused.value.code == "rate_limit_exceeded"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert list(ApiRequest.objects.order_by("created_at").values_list("status_code", flat=True)) == [
        200,
        200,
        429,
    ]


def test_it_holds_a_keys_tokens_per_minute(gateways: list[str], scripted: ScriptedInferenceServer) -> None:
    scripted.default = Script(tokens=["a"] * 30, model=MODEL)
    key = key_with(tokens_per_minute=20)
    while time.time() % 60 > 50:
        time.sleep(1)

    client_for(gateways[0], key).chat.completions.create(
        model=ASSISTANT, messages=[{"role": "user", "content": "Hi"}]
    )
    with pytest.raises(openai.RateLimitError) as refused:
        client_for(gateways[1], key).chat.completions.create(
            model=ASSISTANT, messages=[{"role": "user", "content": "Hi"}]
        )

    assert refused.value.code == "rate_limit_exceeded"
    assert "20 tokens per minute" in refused.value.message


def test_a_caller_that_goes_away_stops_the_models_stream(
    gateways: list[str], scripted: ScriptedInferenceServer
) -> None:
    scripted.default = Script(tokens=[f"w{n} " for n in range(200)], token_delay=0.05, model=MODEL)
    client = client_for(gateways[0], key_with())

    stream = client.chat.completions.create(
        model=ASSISTANT, messages=[{"role": "user", "content": "Talk"}], stream=True
    )
    received = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
        if received == 3:
            break
    stream.close()

    scripted.wait_for_disconnects(1, timeout=15)
    [recorded] = scripted.chat_requests
    assert not recorded.completed
    wait_for(lambda: ApiRequest.objects.exists(), what="the abandoned request's record")
    record = ApiRequest.objects.get()
    assert record.client_disconnected is True
    assert record.completion_tokens is not None
    assert 3 <= record.completion_tokens < 200


def test_it_keeps_the_conversation_for_a_key_that_keeps_them(
    gateways: list[str], scripted: ScriptedInferenceServer
) -> None:
    scripted.default = Script(tokens=["Yes, ", "within ", "30 days."], model=MODEL)
    client = client_for(gateways[0], key_with(keeps_conversations=True))

    client.chat.completions.create(
        model=ASSISTANT,
        messages=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi, how can I help?"},
            {"role": "user", "content": "Can I return a kettle?"},
        ],
        user="crm-customer-42",
    )

    conversation = Conversation.objects.get()
    assert (conversation.channel, conversation.status, conversation.locale) == ("api", "closed", "en")
    assert conversation.metadata["user"] == "crm-customer-42"
    assert list(conversation.messages.order_by("created_at", "pk").values_list("role", "text", "status")) == [
        ("customer", "Hello", "complete"),
        ("assistant", "Hi, how can I help?", "complete"),
        ("customer", "Can I return a kettle?", "complete"),
        ("assistant", "Yes, within 30 days.", "complete"),
    ]
    reply = conversation.messages.order_by("created_at", "pk").last()
    assert reply is not None
    assert (reply.model, reply.completion_tokens) == (MODEL, 3)
    assert ApiRequest.objects.get().conversation == conversation


def test_a_blocked_term_never_reaches_the_caller_even_split_across_chunks(
    gateways: list[str], scripted: ScriptedInferenceServer
) -> None:
    BlockedTerm.objects.create(term="competitorco")
    scripted.default = Script(
        tokens=["Try ", "compet", "itor", "co ", "instead."], token_delay=0.02, model=MODEL
    )
    client = client_for(gateways[0], key_with())

    chunks = list(
        client.chat.completions.create(
            model=ASSISTANT, messages=[{"role": "user", "content": "Who else sells kettles?"}], stream=True
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "compet" not in text.lower()
    assert text.startswith("Try ")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
    assert ApiRequest.objects.get().error_code == "blocked"


def test_it_answers_503_in_openais_shape_when_the_model_is_down(
    gateways: list[str], scripted: ScriptedInferenceServer
) -> None:
    scripted.default = Script(status=503, model=MODEL)
    client = client_for(gateways[0], key_with())

    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(
                model=ASSISTANT, messages=[{"role": "user", "content": "Hi"}], stream=stream
            )
        assert failed.value.status_code == 503
        assert failed.value.code == "inference_unavailable"
    assert (
        list(ApiRequest.objects.values_list("status_code", "error_code"))
        == [(503, "inference_unavailable")] * 2
    )


def test_it_refuses_bad_requests_with_the_parameter_named(gateways: list[str]) -> None:
    client = client_for(gateways[0], key_with())

    for arguments, param in (
        ({"model": ASSISTANT, "messages": []}, "messages"),
        ({"model": ASSISTANT, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        (
            {"model": ASSISTANT, "messages": [{"role": "user", "content": "x"}], "temperature": 5},
            "temperature",
        ),
        ({"model": ASSISTANT, "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            {
                "model": ASSISTANT,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Look"},
                            {"type": "image_url", "image_url": {"url": "ftp://x/y"}},
                        ],
                    },
                ],
            },
            "messages[1].content[1]",
        ),
        ({"model": ASSISTANT, "messages": [{"role": "user", "content": "x"}], "tools": []}, "tools"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**arguments)
        assert refused.value.param == param, arguments
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


def test_a_caller_that_gives_up_on_a_whole_answer_stops_the_models_stream_too(
    gateways: list[str], scripted: ScriptedInferenceServer
) -> None:
    scripted.default = Script(tokens=[f"w{n} " for n in range(200)], token_delay=0.05, model=MODEL)
    client = openai.OpenAI(base_url=gateways[0], api_key=key_with(), max_retries=0, timeout=1.5)

    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=ASSISTANT, messages=[{"role": "user", "content": "Talk"}])

    scripted.wait_for_disconnects(1, timeout=15)
    assert not scripted.chat_requests[0].completed
    wait_for(lambda: ApiRequest.objects.exists(), what="the abandoned request's record")
    assert ApiRequest.objects.get().client_disconnected is True


@pytest.fixture
def picture_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving /label.png (a PNG) and /page.html (not an image)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    picture = buffer.getvalue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, kind = (
                (picture, "image/png") if self.path == "/label.png" else (b"<html></html>", "text/html")
            )
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Handler) as server:
        yield base_url(server)


def image_message(url: str) -> list[Any]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Read it"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def test_it_fetches_an_image_url_only_for_a_key_allowed_to_and_never_from_an_internal_address(
    gateways: list[str], scripted: ScriptedInferenceServer, picture_server: str
) -> None:
    fetching = client_for(gateways[0], key_with(fetches_image_urls=True))
    plain = client_for(gateways[0], key_with())

    fetching.chat.completions.create(model=ASSISTANT, messages=image_message(f"{picture_server}/label.png"))

    image_url = only_request(scripted)["messages"][-1]["content"][1]["image_url"]["url"]
    assert image_url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(image_url.split(",", 1)[1])))
    assert image.size == (64, 48)
    for client, url, code in (
        (plain, f"{picture_server}/label.png", "image_url_not_allowed"),
        (fetching, f"{picture_server}/page.html", "image_fetch_failed"),
        (fetching, f"http://127.0.0.2:{picture_server.rsplit(':', 1)[1]}/label.png", "image_url_not_allowed"),
        (fetching, "http://169.254.169.254/latest/meta-data/", "image_url_not_allowed"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=ASSISTANT, messages=image_message(url))
        assert refused.value.code == code, url
    # Only the first reached the model.
    assert len(scripted.chat_requests) == 1


def test_it_holds_no_database_connection_while_streams_are_in_flight(
    django_db_setup: None, scripted: ScriptedInferenceServer, tmp_path: Path
) -> None:
    """Five streams held open at once by a web process with a pool of two connections: each gave its
    connection back before the model answered, so a sixth request still gets one at once."""
    gate = threading.Event()
    scripted.default = Script(tokens=["held", " open"], gate=gate, model=MODEL)
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "gateway-test-secret",
        "INFERENCE_BASE_URL": scripted.base_url,
        "INFERENCE_MODEL": MODEL,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "DATABASE_POOL_MAX_SIZE": "2",
        "DATABASE_POOL_TIMEOUT": "3",
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    process = daphne_start(port=port, environment=environment, log=tmp_path / "daphne.log")
    url = f"http://127.0.0.1:{port}/v1"
    key = key_with()
    streams: list[Any] = []
    try:
        for _ in range(5):
            stream = client_for(url, key).chat.completions.create(
                model=ASSISTANT, messages=[{"role": "user", "content": "Hold"}], stream=True
            )
            streams.append(stream)
        wait_for(lambda: len(scripted.chat_requests) == 5, what="five streams at the model")
        assert [model.id for model in client_for(url, key).models.list()] == [ASSISTANT]
        gate.set()
        texts = [
            "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
            for stream in streams
        ]
    finally:
        gate.set()
        stop_process_group(process)
        print((tmp_path / "daphne.log").read_text()[-4000:])
    assert texts == ["held open"] * 5
    wait_for(lambda: ApiRequest.objects.filter(status_code=200).count() == 5, what="five records")
