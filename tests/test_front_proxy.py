"""The production web set as it runs: nginx (deploy/nginx, Debian's nginx here, the official image in
docker compose) in front of daphne started by the one production entry point, both real processes, on
the test database and the tests' Redis database."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
import yaml
from django.conf import settings
from websockets.typing import Origin

from access.keys import api_key_create
from conversations.models import Conversation
from cs_platform.processes import free_port, parent_death_signal, stop_process_group, wait_until_answering
from cs_platform.serve_web import daphne_arguments
from gateway.models import ApiRequest
from tests.factories import jpeg_bytes
from tests.scripted_inference import Script, ScriptedInferenceServer

ROOT = Path(__file__).resolve().parent.parent
MEGABYTE = 1024 * 1024
# The address nginx listens on and connects to daphne from, and so the one proxy daphne trusts.
PROXY_ADDRESS = "127.0.0.1"
# Another loopback address: a client that is neither the proxy nor in METRICS_ALLOWED_IPS (127.0.0.1/32).
CLIENT_ADDRESS = "127.0.0.2"
MODEL = "scripted-model"
ASSISTANT = "support-assistant"
# The gateway's body limit at nginx, smaller than the platform's (its default 20 MiB) so that a body
# between the two shows which of them refused it.
PROXY_GATEWAY_MAX_BYTES = 2 * MEGABYTE
PLATFORM_GATEWAY_MAX_BYTES = 20 * MEGABYTE


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _web_command() -> list[str]:
    """docker compose's web command, run with this interpreter: the command line production runs."""
    command: list[str] = _compose()["services"]["web"]["command"]
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def _memory(pid: int) -> dict[str, int]:
    """A process's resident memory now (VmRSS) and at its peak so far (VmHWM), in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            fields[name] = int(value.split()[0]) * 1024
    return fields


@dataclass
class WebSet:
    daphne: subprocess.Popen[bytes]
    nginx: subprocess.Popen[bytes]
    daphne_url: str
    proxy_url: str
    logs: Path

    def client(self, *, address: str = CLIENT_ADDRESS) -> httpx.Client:
        """An HTTP client whose connections come from `address`."""
        return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=120)


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedInferenceServer]:
    with ScriptedInferenceServer(default=Script(model=MODEL)) as server:
        yield server


@pytest.fixture(scope="module")
def web_set(
    django_db_setup: None, scripted: ScriptedInferenceServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebSet]:
    """daphne by the production entry point, with deploy/nginx in front of it listed in TRUSTED_PROXIES.

    One for the module (they take seconds to start and stop); tests that use it take `transactional_db`,
    so that what daphne writes is visible to them and emptied after each.
    """
    tmp_path = tmp_path_factory.mktemp("web-set")
    if shutil.which("nginx") is None or shutil.which("envsubst") is None:
        pytest.fail(
            "nginx and envsubst are needed: scripts/install.sh --test installs them (nginx, gettext-base)."
        )
    database = settings.DATABASES["default"]
    assert settings.REDIS_URL, "these tests need REDIS_URL (make test sets it from TEST_REDIS_URL)"
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    daphne_port, proxy_port = free_port(), free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    daphne_env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "front-proxy-test-secret",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "TRUSTED_PROXIES": f"{PROXY_ADDRESS}/32",
        # The defaults, whatever the caller's environment says: only loopback reads /metrics, no token.
        "METRICS_ALLOWED_IPS": "127.0.0.1/32",
        "METRICS_TOKEN": "",
        "ATTACHMENT_MAX_BYTES": str(10 * MEGABYTE),
        "GATEWAY_MAX_REQUEST_BYTES": str(PLATFORM_GATEWAY_MAX_BYTES),
        "INFERENCE_BASE_URL": scripted.base_url,
        "INFERENCE_MODEL": MODEL,
        "DAPHNE_BIND": "127.0.0.1",
        "DAPHNE_PORT": str(daphne_port),
        "PYTHONUNBUFFERED": "1",
    }
    # nginx's worker processes run as `nobody` when the tests run as root: its prefix must be
    # reachable by them, which pytest's private temporary folders are not.
    prefix = Path(tempfile.mkdtemp(prefix="cs-nginx-"))
    prefix.chmod(0o755)
    nginx_env = {
        **os.environ,
        "NGINX_LISTEN": f"{PROXY_ADDRESS}:{proxy_port}",
        "WEB_UPSTREAM": f"127.0.0.1:{daphne_port}",
        "NGINX_CONF": str(prefix / "nginx.conf"),
        "ATTACHMENT_MAX_BYTES": str(10 * MEGABYTE),
        "GATEWAY_MAX_REQUEST_BYTES": str(PROXY_GATEWAY_MAX_BYTES),
    }
    daphne = subprocess.Popen(
        _web_command(), cwd=ROOT, env=daphne_env, stdout=(logs / "daphne.log").open("ab"),
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=parent_death_signal(),
    )  # fmt: skip
    nginx = subprocess.Popen(
        ["sh", str(ROOT / "deploy/nginx/start.sh"), "-p", f"{prefix}/"], cwd=ROOT, env=nginx_env,
        stdout=(logs / "nginx.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=parent_death_signal(),
    )  # fmt: skip
    web = WebSet(
        daphne=daphne,
        nginx=nginx,
        daphne_url=f"http://127.0.0.1:{daphne_port}",
        proxy_url=f"http://{PROXY_ADDRESS}:{proxy_port}",
        logs=logs,
    )
    try:
        wait_until_answering(f"{web.daphne_url}/healthz", timeout=60, process=daphne, what="daphne")
        wait_until_answering(f"{web.proxy_url}/healthz", timeout=30, process=nginx, what="nginx")
        yield web
    finally:
        stop_process_group(nginx)
        stop_process_group(daphne)
        shutil.rmtree(prefix, ignore_errors=True)
        for log in sorted(logs.iterdir()):
            print(f"----- {log.name} -----\n{log.read_text()[-3000:]}")


def _conversation_create(client: httpx.Client, base_url: str, **headers: str) -> dict[str, Any]:
    response = client.post(f"{base_url}/api/widget/conversations", json={"locale": "en"}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _oversized_multipart(total_bytes: int, boundary: str) -> Iterator[bytes]:
    """A multipart body with one file part of `total_bytes`, streamed: never held in memory whole."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    chunk = b"\xff" * MEGABYTE
    for _ in range(total_bytes // MEGABYTE):
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def test_it_refuses_an_oversized_upload_at_the_proxy_without_daphne_growing(
    web_set: WebSet, transactional_db: None
) -> None:
    with web_set.client() as client:
        # Everything daphne does for a customer first, so that what it holds afterwards is its steady state.
        conversation = _conversation_create(client, web_set.proxy_url)
        uploaded = client.post(
            f"{web_set.proxy_url}/api/widget/conversations/{conversation['id']}/attachments",
            headers={"Authorization": f"Bearer {conversation['token']}"},
            files={"file": ("photo.jpg", jpeg_bytes(), "image/jpeg")},
        )
        assert uploaded.status_code == 201, uploaded.text
        before = _memory(web_set.daphne.pid)

        # The attack from the issue: 300 MB, chunked (no Content-Length to refuse it by), a bogus token.
        unknown_conversation = uuid.uuid4()
        refused = client.post(
            f"{web_set.proxy_url}/api/widget/conversations/{unknown_conversation}/attachments",
            headers={
                "Authorization": "Bearer bogus",
                "Content-Type": "multipart/form-data; boundary=b0undary",
            },
            content=_oversized_multipart(300 * MEGABYTE, "b0undary"),
        )
        after = _memory(web_set.daphne.pid)

    assert refused.status_code == 413
    assert refused.json() == {"code": "too_large", "detail": "The file is larger than the 10 MB limit."}
    assert after["VmHWM"] - before["VmHWM"] < 20 * MEGABYTE, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < 20 * MEGABYTE, (before, after)
    assert web_set.daphne.poll() is None
    # daphne never saw the request (its access log names every request it answered): nginx refused it alone.
    assert str(unknown_conversation) not in (web_set.logs / "daphne.log").read_text()


def test_it_refuses_a_large_body_on_other_paths_at_the_proxy(web_set: WebSet, transactional_db: None) -> None:
    with web_set.client() as client:
        response = client.post(
            f"{web_set.proxy_url}/api/widget/conversations",
            headers={"Content-Type": "application/json"},
            content=b'{"metadata": {"x": "' + b"y" * (2 * MEGABYTE) + b'"}}',
        )

    assert response.status_code == 413
    assert response.json() == {
        "code": "too_large",
        "detail": "The request is larger than this server accepts.",
    }
    assert Conversation.objects.count() == 0


def test_it_serves_the_api_and_an_upload_at_the_limit_through_the_proxy(
    web_set: WebSet, transactional_db: None
) -> None:
    with web_set.client() as client:
        conversation = _conversation_create(client, web_set.proxy_url)
        authorization = {"Authorization": f"Bearer {conversation['token']}"}
        upload_url = f"{web_set.proxy_url}/api/widget/conversations/{conversation['id']}/attachments"
        warm_up = client.post(
            upload_url, headers=authorization, files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")}
        )
        assert warm_up.status_code == 201, warm_up.text
        before = _memory(web_set.daphne.pid)
        # An upload just under the limit passes nginx's cap (ATTACHMENT_MAX_BYTES plus multipart room).
        padded_jpeg = jpeg_bytes(width=640, height=480) + b"\0" * (10 * MEGABYTE - 64 * 1024)
        uploaded = client.post(
            upload_url, headers=authorization, files={"file": ("photo.jpg", padded_jpeg, "image/jpeg")}
        )
        after = _memory(web_set.daphne.pid)
        messages = client.get(
            f"{web_set.proxy_url}/api/widget/conversations/{conversation['id']}/messages",
            headers=authorization,
        )

    assert uploaded.status_code == 201, uploaded.text
    assert (uploaded.json()["content_type"], uploaded.json()["width"], uploaded.json()["height"]) == (
        "image/jpeg",
        640,
        480,
    )
    # About the upload's own size at the peak: Twisted no longer parses the form into memory first
    # (cs_platform/serve_web.py), which cost some 120 MB for these 10 MB.
    assert after["VmHWM"] - before["VmHWM"] < 40 * MEGABYTE, (before, after)
    assert messages.status_code == 200
    assert messages.json() == {"messages": []}


async def test_it_upgrades_the_websocket_through_the_proxy(web_set: WebSet, transactional_db: None) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{web_set.proxy_url}/api/widget/conversations", json={"locale": "en"})
    conversation = response.json()
    url = web_set.proxy_url.replace("http", "ws") + conversation["ws_path"]
    async with websockets.connect(url, origin=Origin(web_set.proxy_url)) as socket:
        await socket.send(json.dumps({"type": "hello", "token": conversation["token"]}))
        ready = json.loads(await socket.recv(decode=True))

    assert ready["type"] == "ready"
    assert ready["conversation"] == conversation["id"]
    assert ready["messages"] == []


def test_it_refuses_metrics_to_a_forged_forwarded_for_sent_straight_to_daphne(
    web_set: WebSet, transactional_db: None
) -> None:
    with web_set.client(address=CLIENT_ADDRESS) as client:
        forged = client.get(f"{web_set.daphne_url}/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    with web_set.client(address="127.0.0.1") as client:
        loopback = client.get(f"{web_set.daphne_url}/metrics")

    # daphne's --proxy-headers would have made the client 127.0.0.1, which METRICS_ALLOWED_IPS admits.
    assert forged.status_code == 403
    assert forged.json()["code"] == "forbidden"
    assert loopback.status_code == 200
    assert "cs_conversations" in loopback.text


def test_it_records_the_peer_and_not_a_forged_forwarded_for_sent_straight_to_daphne(
    web_set: WebSet, transactional_db: None
) -> None:
    with web_set.client() as client:
        conversation = _conversation_create(client, web_set.daphne_url, **{"X-Forwarded-For": "203.0.113.7"})

    assert Conversation.objects.get(id=conversation["id"]).customer_ip == CLIENT_ADDRESS


def test_it_records_the_customers_address_through_the_proxy_and_believes_no_further(
    web_set: WebSet, transactional_db: None
) -> None:
    with web_set.client() as client:
        plain = _conversation_create(client, web_set.proxy_url)
        forged = _conversation_create(
            client, web_set.proxy_url, **{"X-Forwarded-For": "203.0.113.7, 127.0.0.1"}
        )
        metrics = client.get(f"{web_set.proxy_url}/metrics", headers={"X-Forwarded-For": "127.0.0.1"})

    # daphne's peer is nginx (trusted), nginx says the client is 127.0.0.2, and a client's own
    # X-Forwarded-For never reaches daphne.
    assert Conversation.objects.get(id=plain["id"]).customer_ip == CLIENT_ADDRESS
    assert Conversation.objects.get(id=forged["id"]).customer_ip == CLIENT_ADDRESS
    assert metrics.status_code == 403


def test_it_runs_one_web_command_in_the_image_compose_and_the_tests() -> None:
    compose = _compose()
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)

    assert cmd is not None
    assert (
        json.loads(cmd.group(1))
        == compose["services"]["web"]["command"]
        == [
            "python",
            "-m",
            "cs_platform.serve_web",
        ]
    )


def test_it_starts_daphne_where_the_environment_says_and_without_proxy_headers() -> None:
    assert daphne_arguments({}) == ["--bind", "0.0.0.0", "--port", "8000", "cs_platform.asgi:application"]  # noqa: S104
    assert daphne_arguments({"DAPHNE_BIND": "127.0.0.1", "DAPHNE_PORT": "8123"}) == [
        "--bind",
        "127.0.0.1",
        "--port",
        "8123",
        "cs_platform.asgi:application",
    ]
    with pytest.raises(ValueError, match=r"^DAPHNE_PORT must be a TCP port number \(1–65535\), not '80a'\.$"):
        daphne_arguments({"DAPHNE_PORT": "80a"})


def test_it_publishes_only_the_proxy_and_trusts_only_its_address() -> None:
    services = _compose()["services"]
    proxy_address = services["proxy"]["networks"]["default"]["ipv4_address"]

    assert [name for name, service in services.items() if "ports" in service] == ["proxy"]
    assert services["proxy"]["command"] == ["sh", "/etc/cs-platform/nginx/start.sh"]
    assert "./deploy/nginx:/etc/cs-platform/nginx:ro" in services["proxy"]["volumes"]
    assert services["web"]["environment"]["TRUSTED_PROXIES"] == proxy_address
    assert services["proxy"]["environment"]["WEB_UPSTREAM"] == "web:8000"
    assert (
        services["proxy"]["environment"]["ATTACHMENT_MAX_BYTES"]
        == services["web"]["environment"]["ATTACHMENT_MAX_BYTES"]
    )
    assert (
        services["proxy"]["environment"]["GATEWAY_MAX_REQUEST_BYTES"]
        == services["web"]["environment"]["GATEWAY_MAX_REQUEST_BYTES"]
        == "${GATEWAY_MAX_REQUEST_BYTES:-20971520}"
    )


def test_the_proxy_gives_each_request_an_id_the_platform_answers_with(
    web_set: WebSet, transactional_db: None
) -> None:
    with web_set.client() as client:
        first = client.post(f"{web_set.proxy_url}/api/widget/conversations", json={"locale": "en"})
        second = client.post(
            f"{web_set.proxy_url}/api/widget/conversations",
            json={"locale": "en"},
            headers={"X-Request-ID": "chosen-by-the-client"},
        )

    ids = [first.headers.get("X-Request-ID", ""), second.headers.get("X-Request-ID", "")]
    # nginx's $request_id: 32 hex digits, one per request, replacing whatever the client sent.
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids), ids
    assert ids[0] != ids[1]


def _chat_body(question: str, *, stream: bool = False, padding: int = 0) -> bytes:
    """A chat-completions body for the assistant, made `padding` bytes longer by trailing white space."""
    body = {"model": ASSISTANT, "stream": stream, "messages": [{"role": "user", "content": question}]}
    return json.dumps(body).encode() + b" " * padding


def _wait_for(condition: Any, *, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.05)


def test_it_streams_the_gateways_first_token_through_the_proxy_while_the_model_is_still_generating(
    web_set: WebSet, scripted: ScriptedInferenceServer, transactional_db: None
) -> None:
    scripted.clear()
    gate = threading.Event()
    scripted.enqueue(Script(tokens=["Parcels ", "arrive ", "in ", "two ", "days."], gate=gate, model=MODEL))
    key = api_key_create(name="x").key
    contents: list[str] = []
    try:
        with (
            web_set.client() as client,
            client.stream(
                "POST",
                f"{web_set.proxy_url}/v1/chat/completions",
                headers={
                    "Authorization": f"Bearer {key}",
                    "Content-Type": "application/json",
                    "Accept-Encoding": "gzip",
                },
                content=_chat_body("How long does delivery take?", stream=True),
            ) as response,
        ):
            lines = response.iter_lines()
            for line in lines:
                if not line.startswith("data: {"):
                    continue
                delta = json.loads(line.removeprefix("data: "))["choices"][0]["delta"]
                if delta.get("content"):
                    contents.append(delta["content"])
                    break
            # The model sent one token and is held at the gate: nothing on the way (nginx, a
            # compressor, daphne) held that token back for more.
            [held] = scripted.chat_requests
            assert held.completed is False
            assert contents == ["Parcels "]
            gate.set()
            rest = [line for line in lines if line]
    finally:
        gate.set()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert "content-encoding" not in response.headers
    assert rest[-1] == "data: [DONE]"
    contents += [
        json.loads(line.removeprefix("data: "))["choices"][0]["delta"].get("content") or ""
        for line in rest[:-1]
    ]
    assert "".join(contents) == "Parcels arrive in two days."
    # Marked once its last chunk is written, which the client may read first.
    _wait_for(lambda: held.completed, what="the model's stream to end")


def test_it_refuses_a_gateway_body_over_its_limit_at_the_proxy_in_openais_shape(
    web_set: WebSet, scripted: ScriptedInferenceServer, transactional_db: None
) -> None:
    scripted.clear()
    scripted.enqueue(Script(tokens=["Parcels ", "arrive ", "in ", "two ", "days."], model=MODEL))
    key = api_key_create(name="x").key
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    with web_set.client() as client:
        # Under the platform's 20 MiB but over nginx's 2 MiB: only nginx refuses it.
        refused = client.post(
            f"{web_set.proxy_url}/v1/chat/completions",
            headers=headers,
            content=_chat_body("Refused?", padding=3 * MEGABYTE),
        )
        # Over the 1 MiB the rest of the API is capped at, under the gateway's: it reaches the platform.
        answered = client.post(
            f"{web_set.proxy_url}/v1/chat/completions",
            headers=headers,
            content=_chat_body("How long does delivery take?", padding=MEGABYTE + MEGABYTE // 2),
        )
        _wait_for(lambda: ApiRequest.objects.count() == 1, what="the answered request's record")

    assert refused.status_code == 413
    assert refused.headers["content-type"] == "application/json"
    assert refused.json() == {
        "error": {
            "message": "The request body is over 2097152 bytes.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"] == "Parcels arrive in two days."
    # The platform keeps every request with a good key, a refused one included: one record, the
    # answered one, so the refused body never reached it. Nor the model: one call, the answered one's.
    [record] = ApiRequest.objects.all()
    assert record.status_code == 200
    [sent] = scripted.chat_requests
    assert sent.json["messages"][-1] == {"role": "user", "content": "How long does delivery take?"}


def test_it_refuses_to_start_the_proxy_with_a_gateway_limit_that_is_no_positive_number_of_bytes(
    tmp_path: Path,
) -> None:
    refusals = {}
    for value in ["20m", "0", "-1"]:
        started = subprocess.run(
            ["sh", str(ROOT / "deploy/nginx/start.sh")],
            env={
                **os.environ,
                "GATEWAY_MAX_REQUEST_BYTES": value,
                "NGINX_CONF": str(tmp_path / "nginx.conf"),
            },
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        refusals[value] = (started.returncode, started.stderr)

    assert refusals == {
        value: (
            2,
            f"start.sh: GATEWAY_MAX_REQUEST_BYTES must be a positive number of bytes, not '{value}'.\n",
        )
        for value in ["20m", "0", "-1"]
    }
    # Refused before anything was written.
    assert not (tmp_path / "nginx.conf").exists()


def test_the_proxy_answers_a_gateway_caller_in_openais_shape_while_the_platform_is_down(
    tmp_path: Path,
) -> None:
    if shutil.which("nginx") is None or shutil.which("envsubst") is None:
        pytest.fail("nginx and envsubst are needed: scripts/install.sh --test installs them.")
    prefix = Path(tempfile.mkdtemp(prefix="cs-nginx-"))
    prefix.chmod(0o755)
    proxy_port, nobody_there = free_port(), free_port()
    nginx = subprocess.Popen(
        ["sh", str(ROOT / "deploy/nginx/start.sh"), "-p", f"{prefix}/"],
        cwd=ROOT,
        env={
            **os.environ,
            "NGINX_LISTEN": f"127.0.0.1:{proxy_port}",
            "WEB_UPSTREAM": f"127.0.0.1:{nobody_there}",
            "NGINX_CONF": str(prefix / "nginx.conf"),
        },
        stdout=(tmp_path / "nginx.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=parent_death_signal(),
    )
    try:
        _wait_for(lambda: _answers(f"http://127.0.0.1:{proxy_port}/v1/models"), what="nginx")
        response = httpx.get(f"http://127.0.0.1:{proxy_port}/v1/models", timeout=10)
    finally:
        stop_process_group(nginx)
        shutil.rmtree(prefix, ignore_errors=True)

    assert response.status_code == 502
    assert response.json() == {
        "error": {
            "message": "The platform behind this proxy is not answering; try again shortly.",
            "type": "server_error",
            "param": None,
            "code": "platform_unavailable",
        }
    }


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.TransportError:
        return False
    return True
