"""The OpenAI-compatible gateway's contract (DESIGN.md "OpenAI-compatible gateway" and "Access", the
README's "The OpenAI-compatible gateway" and "IP rules"), checked from outside: the platform runs as its
own daphne process, keys and IP rules are made with `manage.py` as an operator makes them, and the
calls go through the official `openai` client and plain httpx. Written from the documents only.

The scripted inference server lists one model, `scripted-model`: the README's "plain proxy" name.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest
from django.conf import settings
from PIL import Image

from tests.contract.conftest import Server
from tests.processes import ROOT
from tests.scripted_inference import Script

pytestmark = pytest.mark.django_db(transaction=True)

ASSISTANT = "support-assistant"
# ScriptedInferenceServer's default model, the one it lists at /v1/models.
PROXY = "scripted-model"
QUESTION = "How long does delivery take?"
ERROR_KEYS = {"message", "type", "param", "code"}
USAGE = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}


def manage(server: Server, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`python manage.py ...` with the server's environment, as an operator runs it beside the server."""
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT,
        env=server.environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def key_create(server: Server, *options: str) -> str:
    """A key from `api_key create ... --quiet`, which prints only the key."""
    result = manage(server, "api_key", "create", "--name", "contract client", *options, "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    key = result.stdout.strip()
    # README: "A key reads `csk_<prefix>_<secret>`".
    assert re.fullmatch(r"csk_[^_\s]+_\S+", key), result.stdout
    return key


def key_prefix(key: str) -> str:
    return key.split("_")[1]


def client_for(server: Server, key: str) -> openai.OpenAI:
    """The official client, unchanged; no retries, so that a 429 is seen as it comes."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=20)


def http_for(server: Server, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=20)


def chat(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}], **body}
    )


def openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The `error` object of an answer in OpenAI's error shape, checked for the status and code."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body["error"]) >= ERROR_KEYS, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert isinstance(error["type"], str), body
    assert error["type"], body
    return error


def sse_data(response: httpx.Response) -> list[str]:
    """The `data:` payloads of a server-sent event stream, in order."""
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def chunks_of(payloads: list[str]) -> list[dict[str, Any]]:
    """The JSON chunks before `[DONE]`, which must be the last payload."""
    assert payloads[-1] == "[DONE]", payloads
    return [json.loads(payload) for payload in payloads[:-1]]


def png_data_url(width: int = 64, height: int = 48) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def wait_for_status(request: Any, status: int, *, within: float = 10.0) -> httpx.Response:
    """The answer of `request()`, asked again until it has `status` (an IP rule made by another process
    applies within IP_RULES_CACHE_SECONDS, 5 by default)."""
    deadline = time.monotonic() + within
    while True:
        response: httpx.Response = request()
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.25)


def start_of_a_fresh_minute() -> None:
    """Wait out the last seconds of a minute, so that a per-minute count is not split by its end."""
    second = datetime.now().second
    if second >= 55:
        time.sleep(61 - second)


@pytest.fixture
def both_models_key(server: Server) -> str:
    return key_create(server, "--model", ASSISTANT, "--model", PROXY)


# --- models ----------------------------------------------------------------------------------------


def test_it_lists_the_assistant_for_a_key_with_the_default_models(server: Server) -> None:
    client = client_for(server, key_create(server))

    models = client.models.list()

    assert [model.id for model in models.data] == [ASSISTANT]
    assert [model.object for model in models.data] == ["model"]
    assert client.models.retrieve(ASSISTANT).id == ASSISTANT


def test_it_lists_every_model_a_key_may_call(server: Server, both_models_key: str) -> None:
    client = client_for(server, both_models_key)

    raw = http_for(server, both_models_key).get("/v1/models")

    assert raw.status_code == 200, raw.text
    assert raw.json()["object"] == "list"
    assert sorted(model.id for model in client.models.list().data) == sorted([ASSISTANT, PROXY])
    assert client.models.retrieve(PROXY).id == PROXY


def test_it_says_model_not_found_for_a_model_the_key_may_not_call(server: Server) -> None:
    http = http_for(server, key_create(server))

    retrieved = http.get(f"/v1/models/{PROXY}")
    asked = chat(http, model=PROXY)
    unknown = chat(http, model="gpt-4o")

    openai_error(retrieved, 404, "model_not_found")
    openai_error(asked, 404, "model_not_found")
    openai_error(unknown, 404, "model_not_found")
    assert server.inference.chat_requests == []


def test_it_raises_the_openai_clients_not_found_error_for_an_unknown_model(server: Server) -> None:
    client = client_for(server, key_create(server))

    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": QUESTION}]
        )

    assert raised.value.code == "model_not_found"
    assert server.inference.chat_requests == []


# --- answers ---------------------------------------------------------------------------------------


def test_it_proxies_a_whole_answer_with_the_callers_messages_and_options(
    server: Server, both_models_key: str
) -> None:
    server.inference.enqueue(Script(tokens=["Two", " days."], usage=USAGE))
    client = client_for(server, both_models_key)
    messages: Any = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "The caller is the CRM."},
        {"role": "user", "content": QUESTION},
    ]

    answer = client.chat.completions.create(
        model=PROXY, messages=messages, temperature=0.25, top_p=0.5, seed=7, stop=["\n\n"], user="crm-42"
    )

    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == "Two days."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == USAGE
    assert "citations" not in (answer.model_extra or {})
    [sent] = server.inference.chat_requests
    assert sent.json["messages"] == messages
    assert {name: sent.json.get(name) for name in ("temperature", "top_p", "seed", "stop")} == {
        "temperature": 0.25,
        "top_p": 0.5,
        "seed": 7,
        "stop": ["\n\n"],
    }
    # README: "`max_tokens` 1024 when not given".
    assert sent.json.get("max_tokens", sent.json.get("max_completion_tokens")) == 1024


def test_it_sends_the_proxied_model_no_sampling_option_the_caller_did_not_give(
    server: Server, both_models_key: str
) -> None:
    http = http_for(server, both_models_key)

    response = chat(http, model=PROXY)

    assert response.status_code == 200, response.text
    [sent] = server.inference.chat_requests
    # README: "the caller's messages and sampling options go to the model as they are (`max_tokens` 1024
    # when not given), with no profile": max_tokens is the only option the gateway fills in.
    sampling = {"temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"}
    assert {name: sent.json[name] for name in sampling & set(sent.json)} == {}


def test_it_counts_the_chunks_when_the_model_reports_no_usage(server: Server, both_models_key: str) -> None:
    server.inference.enqueue(Script(tokens=["a"] * 10, usage={}))
    http = http_for(server, both_models_key)

    response = chat(http, model=PROXY)

    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    # "one token each", and the prompt estimated.
    assert usage["completion_tokens"] == 10
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + 10


def test_it_answers_as_the_assistant_with_citations_beside_the_choices(server: Server) -> None:
    server.inference.enqueue(Script(tokens=["Two", " days."]))
    client = client_for(server, key_create(server))

    answer = client.chat.completions.create(model=ASSISTANT, messages=[{"role": "user", "content": QUESTION}])

    assert answer.model == ASSISTANT
    assert answer.choices[0].message.content == "Two days."
    assert answer.choices[0].finish_reason == "stop"
    # The test knowledge base is empty: the field is there, naming no section.
    assert (answer.model_extra or {})["citations"] == []
    assert len(server.inference.chat_requests) == 1
    # The caller's messages follow the assistant's own instructions: the model sees more than them.
    assert server.inference.chat_requests[0].json["messages"][-1]["content"] == QUESTION


def test_it_lets_max_tokens_only_lower_the_assistants_and_keeps_its_temperature(server: Server) -> None:
    http = http_for(server, key_create(server))

    plain = chat(http, model=ASSISTANT)
    lower = chat(http, model=ASSISTANT, max_tokens=7, temperature=1.9)
    higher = chat(http, model=ASSISTANT, max_completion_tokens=100000)

    assert [plain.status_code, lower.status_code, higher.status_code] == [200, 200, 200], higher.text
    profile, lowered, raised = (request.json for request in server.inference.chat_requests)
    assert isinstance(profile["max_tokens"], int), profile
    assert profile["max_tokens"] > 7, profile
    assert lowered["max_tokens"] == 7
    # "the profile sets the temperature": the caller's is not the model's.
    assert lowered["temperature"] == profile["temperature"]
    assert raised["max_tokens"] == profile["max_tokens"]


def test_it_passes_max_completion_tokens_to_the_proxied_model(server: Server, both_models_key: str) -> None:
    http = http_for(server, both_models_key)

    response = chat(http, model=PROXY, max_completion_tokens=33)

    assert response.status_code == 200, response.text
    [sent] = server.inference.chat_requests
    assert sent.json.get("max_tokens", sent.json.get("max_completion_tokens")) == 33


def test_it_streams_the_proxy_answer_as_server_sent_chunks(server: Server, both_models_key: str) -> None:
    server.inference.enqueue(Script(tokens=["Two", " days", "."]))
    http = http_for(server, both_models_key)

    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": PROXY, "stream": True, "messages": [{"role": "user", "content": QUESTION}]},
        headers={"Accept-Encoding": "gzip, br"},
    ) as response:
        assert response.status_code == 200
        headers = response.headers
        chunks = chunks_of(sse_data(response))

    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in headers
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks) == "Two days."
    assert [
        chunk["choices"][0]["finish_reason"] for chunk in chunks if chunk["choices"][0]["finish_reason"]
    ] == ["stop"]
    assert [chunk for chunk in chunks if "citations" in chunk] == []


def test_it_streams_the_assistants_citations_in_the_chunk_with_the_finish_reason(server: Server) -> None:
    server.inference.enqueue(Script(tokens=["Two", " days."]))
    http = http_for(server, key_create(server))

    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": ASSISTANT, "stream": True, "messages": [{"role": "user", "content": QUESTION}]},
    ) as response:
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        chunks = chunks_of(sse_data(response))

    finishing = [chunk for chunk in chunks if chunk["choices"] and chunk["choices"][0]["finish_reason"]]
    assert len(finishing) == 1, chunks
    assert finishing[0]["citations"] == []
    assert [chunk for chunk in chunks if "citations" in chunk] == finishing
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    assert text == "Two days."


def test_it_sends_usage_in_a_last_chunk_without_choices_when_asked(
    server: Server, both_models_key: str
) -> None:
    server.inference.enqueue(Script(tokens=["Two", " days."], usage=USAGE))
    http = http_for(server, both_models_key)

    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": PROXY,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": QUESTION}],
        },
    ) as response:
        assert response.status_code == 200
        chunks = chunks_of(sse_data(response))

    *answer_chunks, last = chunks
    assert [chunk["usage"] for chunk in answer_chunks] == [None] * len(answer_chunks)
    assert last["choices"] == []
    assert {name: last["usage"][name] for name in USAGE} == USAGE


def test_it_streams_to_the_openai_client_with_usage(server: Server, both_models_key: str) -> None:
    server.inference.enqueue(Script(tokens=["Two", " days."], usage=USAGE))
    client = client_for(server, both_models_key)

    stream = client.chat.completions.create(
        model=PROXY,
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == "Two days."
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == USAGE["total_tokens"]


@pytest.mark.parametrize("model", [PROXY, ASSISTANT])
def test_it_closes_the_models_stream_when_the_caller_goes_away(
    server: Server, both_models_key: str, model: str
) -> None:
    server.inference.enqueue(Script(tokens=[f" word{index}" for index in range(100)], token_delay=0.1))
    http = http_for(server, both_models_key)

    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": model, "stream": True, "messages": [{"role": "user", "content": QUESTION}]},
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and "word" in line:
                break
    http.close()

    server.inference.wait_for_disconnects(1, timeout=5)
    [sent] = server.inference.chat_requests
    assert sent.completed is False
    assert sent.disconnected_at is not None


def collect_text(stream: Any, seen: list[str]) -> None:
    """Read an `openai` stream to its end, keeping each content delta in `seen` as it comes."""
    for chunk in stream:
        if chunk.choices:
            seen.append(chunk.choices[0].delta.content or "")


def test_it_ends_a_stream_that_fails_midway_with_an_error_event(server: Server, both_models_key: str) -> None:
    server.inference.enqueue(
        Script(tokens=["Two", " days", "."], disconnect_after=1),
        Script(tokens=["Two", " days", "."], disconnect_after=1),
    )
    http = http_for(server, both_models_key)
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": PROXY, "stream": True, "messages": [{"role": "user", "content": QUESTION}]},
    ) as response:
        assert response.status_code == 200
        payloads = sse_data(response)
    client = client_for(server, both_models_key)
    stream = client.chat.completions.create(
        model=PROXY, messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    seen: list[str] = []

    with pytest.raises(openai.APIError):
        collect_text(stream, seen)

    *chunks, last = [json.loads(payload) for payload in payloads]
    assert set(last["error"]) >= ERROR_KEYS, last
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks) == "Two"
    assert "".join(seen) == "Two"


def test_it_says_inference_bad_response_when_the_model_answers_garbage(
    server: Server, both_models_key: str
) -> None:
    server.inference.enqueue(Script(raw_body=b"data: {not json\n\n"))
    http = http_for(server, both_models_key)

    response = chat(http, model=PROXY)

    openai_error(response, 502, "inference_bad_response")


# --- images ----------------------------------------------------------------------------------------


def test_it_sends_a_data_url_image_to_the_model_as_a_normalised_jpeg(
    server: Server, both_models_key: str
) -> None:
    client = client_for(server, both_models_key)
    content: Any = [
        {"type": "text", "text": "What is in this photo?"},
        {"type": "image_url", "image_url": {"url": png_data_url(64, 48)}},
    ]

    answer = client.chat.completions.create(model=PROXY, messages=[{"role": "user", "content": content}])

    assert answer.choices[0].message.content == "Hello world"
    [sent] = server.inference.chat_requests
    parts = sent.json["messages"][-1]["content"]
    [image_part] = [part for part in parts if part["type"] == "image_url"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,"), url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert (image.format, image.size) == ("JPEG", (64, 48))
    assert [part for part in parts if part["type"] == "text"] == [
        {"type": "text", "text": "What is in this photo?"}
    ]


def test_it_refuses_an_http_image_url_for_a_key_that_does_not_fetch_them(
    server: Server, both_models_key: str
) -> None:
    http = http_for(server, both_models_key)
    content = [
        {"type": "text", "text": "What is in this photo?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/label.png"}},
    ]

    response = http.post(
        "/v1/chat/completions", json={"model": PROXY, "messages": [{"role": "user", "content": content}]}
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) >= ERROR_KEYS
    assert error["type"] == "invalid_request_error"
    assert str(error["param"]).startswith("messages"), error
    assert server.inference.chat_requests == []


def test_it_never_fetches_an_image_url_on_an_internal_address(server: Server) -> None:
    key = key_create(server, "--model", PROXY, "--fetch-image-urls")
    http = http_for(server, key)
    # The platform's own address: loopback, never public.
    content = [{"type": "image_url", "image_url": {"url": f"{server.url}/static/nothing.png"}}]

    response = http.post(
        "/v1/chat/completions", json={"model": PROXY, "messages": [{"role": "user", "content": content}]}
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert server.inference.chat_requests == []


def test_it_refuses_an_image_outside_a_user_message(server: Server, both_models_key: str) -> None:
    http = http_for(server, both_models_key)
    image = {"type": "image_url", "image_url": {"url": png_data_url()}}
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": [{"type": "text", "text": "Here:"}, image]},
        {"role": "user", "content": "And?"},
    ]

    response = http.post("/v1/chat/completions", json={"model": PROXY, "messages": messages})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) >= ERROR_KEYS
    assert error["type"] == "invalid_request_error"
    assert str(error["param"]).startswith("messages"), error
    assert server.inference.chat_requests == []


# --- keys ------------------------------------------------------------------------------------------


def test_it_refuses_missing_unknown_revoked_and_expired_keys_each_with_its_sentence(server: Server) -> None:
    revoked = key_create(server)
    assert chat(http_for(server, revoked), model=ASSISTANT).status_code == 200
    revoke = manage(server, "api_key", "revoke", key_prefix(revoked))
    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    # `api_key create` refuses an expiry already past, so the key is made to expire in a moment.
    expires_at = datetime.now(ZoneInfo(settings.TIME_ZONE)).replace(microsecond=0) + timedelta(seconds=5)
    expired = key_create(server, "--expires", expires_at.isoformat())
    unknown = "csk_nosuchkey_" + "x" * 32
    requests_before = len(server.inference.chat_requests)
    time.sleep(max(0.0, (expires_at - datetime.now(ZoneInfo(settings.TIME_ZONE))).total_seconds() + 0.5))

    messages: dict[str, str] = {}
    for name, key in [
        ("missing", None),
        ("unknown", unknown),
        ("revoked", revoked),
        ("expired", expired),
    ]:
        http = http_for(server, key)
        models = http.get("/v1/models")
        answer = chat(http, model=ASSISTANT)
        openai_error(models, 401, "invalid_api_key")
        messages[name] = openai_error(answer, 401, "invalid_api_key")["message"]

    # "a sentence saying which".
    assert "revoked" in messages["revoked"].lower(), messages
    assert "expired" in messages["expired"].lower(), messages
    assert len({messages["missing"], messages["unknown"], messages["revoked"], messages["expired"]}) == 4, (
        messages
    )
    assert len(server.inference.chat_requests) == requests_before


def test_it_revokes_a_key_named_by_its_prefix_csk_prefix_or_whole(server: Server) -> None:
    keys = [key_create(server) for _ in range(3)]
    names = [key_prefix(keys[0]), f"csk_{key_prefix(keys[1])}", keys[2]]

    results = [manage(server, "api_key", "revoke", name) for name in names]

    assert [result.returncode for result in results] == [0, 0, 0], [result.stderr for result in results]
    for key in keys:
        openai_error(http_for(server, key).get("/v1/models"), 401, "invalid_api_key")


def test_it_raises_the_openai_clients_authentication_error_for_a_wrong_key(server: Server) -> None:
    key = key_create(server)
    client = client_for(server, key[:-2] + ("aa" if not key.endswith("aa") else "bb"))

    with pytest.raises(openai.AuthenticationError) as raised:
        client.models.list()

    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"


def test_it_keeps_a_key_working_through_the_end_of_its_expiry_day(server: Server) -> None:
    today: date = datetime.now(ZoneInfo(settings.TIME_ZONE)).date()
    http = http_for(server, key_create(server, "--expires", today.isoformat()))

    assert http.get("/v1/models").status_code == 200


# --- limits ----------------------------------------------------------------------------------------


def test_it_refuses_requests_past_the_keys_requests_per_minute_with_retry_after(server: Server) -> None:
    key = key_create(server, "--model", PROXY, "--requests-per-minute", "2")
    other = http_for(server, key_create(server, "--model", PROXY, "--requests-per-minute", "2"))
    http = http_for(server, key)
    start_of_a_fresh_minute()

    answers = [chat(http, model=PROXY) for _ in range(3)]

    assert [answer.status_code for answer in answers[:2]] == [200, 200], [answer.text for answer in answers]
    openai_error(answers[2], 429, "rate_limit_exceeded")
    retry_after = answers[2].headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= 60, retry_after
    assert len(server.inference.chat_requests) == 2
    # "each key has its own rate limit": another key is not held back by this one's minute.
    assert chat(other, model=PROXY).status_code == 200


def test_it_raises_the_openai_clients_rate_limit_error_past_the_limit(server: Server) -> None:
    client = client_for(server, key_create(server, "--model", PROXY, "--requests-per-minute", "1"))
    start_of_a_fresh_minute()
    client.chat.completions.create(model=PROXY, messages=[{"role": "user", "content": QUESTION}])

    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model=PROXY, messages=[{"role": "user", "content": QUESTION}])

    assert raised.value.code == "rate_limit_exceeded"
    assert "retry-after" in raised.value.response.headers


def test_it_refuses_a_request_that_finds_the_keys_tokens_per_minute_used_up(server: Server) -> None:
    server.inference.enqueue(
        Script(
            tokens=["Two", " days."], usage={"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
        )
    )
    http = http_for(server, key_create(server, "--model", PROXY, "--tokens-per-minute", "10"))
    start_of_a_fresh_minute()

    first = chat(http, model=PROXY)
    second = chat(http, model=PROXY)

    assert first.status_code == 200, first.text
    openai_error(second, 429, "rate_limit_exceeded")
    assert second.headers["retry-after"].isdigit(), second.headers
    assert len(server.inference.chat_requests) == 1


def test_it_refuses_with_insufficient_quota_once_the_months_tokens_are_used(server: Server) -> None:
    # The first answer uses the whole month (10 tokens): the next request finds the quota reached.
    server.inference.enqueue(
        Script(
            tokens=["Two", " days."], usage={"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
        )
    )
    http = http_for(server, key_create(server, "--model", PROXY, "--monthly-tokens", "10"))

    first = chat(http, model=PROXY)
    second = chat(http, model=PROXY)

    assert first.status_code == 200, first.text
    assert first.json()["usage"]["total_tokens"] == 10
    openai_error(second, 429, "insufficient_quota")
    assert len(server.inference.chat_requests) == 1


def test_it_answers_while_the_month_has_tokens_left(server: Server) -> None:
    server.inference.enqueue(
        Script(
            tokens=["Two", " days."], usage={"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
        )
    )
    http = http_for(server, key_create(server, "--model", PROXY, "--monthly-tokens", "10"))

    first = chat(http, model=PROXY)
    second = chat(http, model=PROXY)

    assert [first.status_code, second.status_code] == [200, 200], second.text
    assert len(server.inference.chat_requests) == 2


# --- bad requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]}, "tools"),
        # README: tools "are refused with a 400 naming them"; OpenAI's own API refuses an empty list too.
        ({"tools": []}, "tools"),
        ({"functions": [{"name": "lookup", "parameters": {}}]}, "functions"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
    ],
    ids=["n=2", "tools", "tools=[]", "functions", "audio", "temperature", "max_tokens", "stream"],
)
def test_it_refuses_a_bad_parameter_naming_it(
    server: Server, both_models_key: str, extra: dict[str, Any], param: str
) -> None:
    http = http_for(server, both_models_key)

    response = chat(http, model=PROXY, **extra)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) >= ERROR_KEYS
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert server.inference.chat_requests == []


@pytest.mark.parametrize(
    "body",
    [
        {"model": PROXY},
        {"model": PROXY, "messages": []},
        {"model": PROXY, "messages": [{"role": "tool", "content": "42", "tool_call_id": "x"}]},
        {"model": PROXY, "messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": QUESTION}]},
    ],
    ids=["no messages", "empty messages", "tool role", "no content", "no model"],
)
def test_it_refuses_bad_messages_or_a_missing_model_naming_the_parameter(
    server: Server, both_models_key: str, body: dict[str, Any]
) -> None:
    http = http_for(server, both_models_key)

    response = http.post("/v1/chat/completions", json=body)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) >= ERROR_KEYS
    assert error["type"] == "invalid_request_error"
    expected = "model" if "model" not in body else "messages"
    assert str(error["param"]).startswith(expected), error
    assert server.inference.chat_requests == []


def test_it_refuses_tools_through_the_openai_client(server: Server, both_models_key: str) -> None:
    client = client_for(server, both_models_key)

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=ASSISTANT,
            messages=[{"role": "user", "content": QUESTION}],
            tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        )

    assert raised.value.param == "tools"
    assert "tools" in raised.value.message
    assert server.inference.chat_requests == []


def test_it_refuses_a_body_that_is_not_json(server: Server, both_models_key: str) -> None:
    http = http_for(server, both_models_key)

    response = http.post(
        "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert server.inference.chat_requests == []


# --- IP rules --------------------------------------------------------------------------------------


@pytest.fixture
def api_denied_to_loopback(server: Server) -> None:
    added = manage(
        server, "ip_rule", "add", "--scope", "api", "--cidr", "127.0.0.1", "--deny", "--note", "contract"
    )
    assert added.returncode == 0, added.stdout + added.stderr


def test_it_refuses_the_gateway_to_an_address_an_api_deny_rule_names(server: Server) -> None:
    key = key_create(server)
    http = http_for(server, key)
    assert http.get("/v1/models").status_code == 200
    added = manage(
        server, "ip_rule", "add", "--scope", "api", "--cidr", "127.0.0.1", "--deny", "--note", "contract"
    )
    assert added.returncode == 0, added.stdout + added.stderr

    models = wait_for_status(lambda: http.get("/v1/models"), 403)
    answer = chat(http, model=ASSISTANT)

    for response in (models, answer):
        assert response.status_code == 403, response.text
        body = response.json()
        # Both shapes: the contract's {"code", "detail"} and OpenAI's error object.
        assert body["code"] == "ip_not_allowed", body
        assert isinstance(body["detail"], str), body
        assert body["detail"], body
        assert set(body["error"]) >= ERROR_KEYS, body
        assert body["error"]["code"] == "ip_not_allowed", body
    assert server.inference.chat_requests == []
    with pytest.raises(openai.PermissionDeniedError):
        client_for(server, key).models.list()
    # The rule is the api scope's alone: the widget's API still answers.
    assert httpx.get(f"{server.url}/api/widget/faq", timeout=10).status_code == 200


def test_it_opens_the_gateway_again_when_the_deny_rule_is_removed(
    server: Server, api_denied_to_loopback: None
) -> None:
    http = http_for(server, key_create(server))
    assert wait_for_status(lambda: http.get("/v1/models"), 403).status_code == 403
    listed = manage(server, "ip_rule", "list", "--scope", "api")
    assert listed.returncode == 0, listed.stderr
    [rule_id] = [line.split()[0] for line in listed.stdout.splitlines() if "127.0.0.1" in line]

    removed = manage(server, "ip_rule", "remove", rule_id)

    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert wait_for_status(lambda: http.get("/v1/models"), 200).status_code == 200
