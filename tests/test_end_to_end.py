"""The real thing: daphne, a Celery worker and beat as separate processes, PostgreSQL, Redis, and the
llama.cpp server with the embedded default's local model; and the embedded default as `make run` starts
it. The model's answers are not judged, only that they arrive, are saved, and keep the hidden
instructions to themselves."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.typing import Origin

from conversations.models import Message
from cs_platform.demo import DEMO_INSTRUCTIONS
from cs_platform.processes import free_port, parent_death_signal, stop_process_group, wait_until_answering
from inference.local_model import MODEL_ALIAS, LocalModelServer
from inference.prompts import DEFAULT_INSTRUCTIONS, KNOWLEDGE_INSTRUCTIONS, LANGUAGE_POLICY_SENTENCES
from tests.conftest import model_answers_set

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


# Every sentence of the hidden instructions a reply here may be given: the demo profile's (the embedded
# default) and the built-in ones (no active profile), with their names and language policies.
INSTRUCTIONS = [
    "Your name is Acme Support.",
    "Your name is Support assistant.",
    DEMO_INSTRUCTIONS,
    DEFAULT_INSTRUCTIONS,
    *LANGUAGE_POLICY_SENTENCES.values(),
    # How the prompt introduces the knowledge base's sources and what it asks of the model.
    *KNOWLEDGE_INSTRUCTIONS,
]
INSTRUCTION_SENTENCES = sorted(
    {sentence for text in INSTRUCTIONS for sentence in re.split(r"(?<=[.!?])\s+", text.strip())}
)


def _assert_no_instructions(reply: str) -> None:
    """A reply must not repeat its hidden instructions (a base model with no chat template does)."""
    leaked = [sentence for sentence in INSTRUCTION_SENTENCES if sentence in reply]
    assert leaked == [], f"the reply repeats its instructions: {reply!r}"
    # The fence around the sources is the prompt's, never the customer's to see.
    assert "<source" not in reply, f"the reply shows the prompt's fence: {reply!r}"


@pytest.fixture(scope="session")
def local_model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModelServer]:
    """llama.cpp's OpenAI-compatible server with the embedded default's local model from PyPI."""
    server = LocalModelServer(log_path=tmp_path_factory.mktemp("local-model") / "llama.log").start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Stack:
    base_url: str
    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path
    env: dict[str, str]

    def start_worker(self) -> None:
        """Start (or, like a process supervisor, restart) the Celery worker."""
        self.processes["worker"] = _start(
            # Production's runtime: the pool and concurrency come from the settings.
            [sys.executable, "-m", "celery", "-A", "cs_platform", "worker", "--loglevel=INFO",
             "--without-gossip", "--without-mingle"],
            self.env,
            self.logs / "worker.log",
        )  # fmt: skip


def _wait_until(predicate: Any, *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# How often the embedded platform is started on fresh ports when the ones chosen were taken meanwhile.
PORT_ATTEMPTS = 3
PORT_TAKEN = re.compile(
    r"Port \d+ on \S+(?:, for the local model \(llama\.cpp\),)? (?:is already in use|was taken)"
)


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that dies with this test run, even a killed one."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=parent_death_signal(),
    )


@pytest.fixture
def production_stack(
    transactional_db: None, local_model_server: LocalModelServer, tmp_path: Path
) -> Iterator[Stack]:
    """daphne + Celery worker + beat on the test database, the tests' Redis database, and the local model."""
    database = settings.DATABASES["default"]
    port = free_port()
    # The tests' own Redis database (TEST_REDIS_URL in `make test`), emptied first: no queued jobs or
    # counters from earlier tests, and nothing shared with another checkout's run.
    redis_url = settings.REDIS_URL
    assert redis_url, "the end-to-end tests need REDIS_URL (make test sets it from TEST_REDIS_URL)"
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": "end-to-end-test-secret",
        "INFERENCE_BASE_URL": local_model_server.base_url,
        "INFERENCE_CONTEXT_TOKENS": str(local_model_server.context_tokens),
        "INFERENCE_VISION": "false",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "REPLY_HEARTBEAT_SECONDS": "1",
        "REPLY_STALLED_AFTER_SECONDS": "5",
        "REPLY_SWEEP_INTERVAL_SECONDS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = {
        "daphne": _start(
            [sys.executable, "-m", "cs_platform.serve_web"],
            {**env, "DAPHNE_BIND": "127.0.0.1", "DAPHNE_PORT": str(port)},
            logs / "daphne.log",
        ),
        "beat": _start(
            [sys.executable, "-m", "celery", "-A", "cs_platform", "beat", "--loglevel=INFO",
             f"--schedule={tmp_path / 'beat-schedule'}"],
            env,
            logs / "beat.log",
        ),
    }  # fmt: skip
    stack = Stack(base_url=f"http://127.0.0.1:{port}", processes=processes, logs=logs, env=env)
    stack.start_worker()
    try:
        wait_until_answering(
            f"{stack.base_url}/healthz", timeout=60, process=processes["daphne"], what="daphne"
        )
        _wait_until(
            lambda: "ready." in (logs / "worker.log").read_text(), seconds=60, what="the Celery worker"
        )
        yield stack
    finally:
        for process in processes.values():
            stop_process_group(process)
        for log in sorted(logs.iterdir()):
            print(f"----- {log.name} -----\n{log.read_text()[-3000:]}")


async def _open_conversation(base_url: str, locale: str = "en") -> tuple[dict[str, Any], Any]:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{base_url}/api/widget/conversations", json={"locale": locale})
    assert response.status_code == 201, response.text
    conversation = response.json()
    socket = await websockets.connect(
        base_url.replace("http", "ws") + conversation["ws_path"], origin=Origin(base_url)
    )
    await socket.send(json.dumps({"type": "hello", "token": conversation["token"]}))
    ready = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert ready["type"] == "ready"
    assert ready["messages"] == []
    return conversation, socket


async def _frames_until(socket: Any, *types: str, seconds: float) -> list[dict[str, Any]]:
    frames = []
    async with asyncio.timeout(seconds):
        while True:
            frame = json.loads(await socket.recv())
            frames.append(frame)
            if frame["type"] in types:
                return frames


async def test_it_streams_a_real_reply_through_daphne_celery_and_llama_cpp(production_stack: Stack) -> None:
    _, socket = await _open_conversation(production_stack.base_url)
    async with socket:
        client_id = str(uuid.uuid4())
        await socket.send(
            json.dumps(
                {"type": "message", "client_id": client_id, "text": "Hello, how do I return a parcel?"}
            )
        )
        frames = await _frames_until(socket, "reply.done", "reply.error", seconds=120)

    accepted, started, *deltas, done = frames
    assert accepted["type"] == "message.accepted"
    assert accepted["client_id"] == client_id
    assert started == {"type": "reply.started", "reply_id": accepted["reply_id"]}
    assert done["type"] == "reply.done", done
    assert deltas, "the reply streamed no deltas"
    assert all(delta["type"] == "reply.delta" for delta in deltas)
    assert [delta["seq"] for delta in deltas] == list(range(len(deltas)))
    streamed = "".join(delta["text"] for delta in deltas)
    saved = await database_sync_to_async(Message.objects.get)(pk=accepted["reply_id"])
    assert streamed == saved.text == done["message"]["text"]
    assert saved.text.strip()
    assert saved.status == Message.Status.COMPLETE
    assert saved.model == MODEL_ALIAS
    # No profile is active on the test database: the built-in instructions stay hidden.
    _assert_no_instructions(saved.text)
    assert saved.completion_tokens is not None
    assert saved.completion_tokens > 0
    customer_message = await database_sync_to_async(Message.objects.get)(pk=accepted["message"]["id"])
    assert customer_message.text == "Hello, how do I return a parcel?"


async def test_it_tells_the_customer_when_the_worker_is_killed_mid_reply(production_stack: Stack) -> None:
    _, socket = await _open_conversation(production_stack.base_url)
    async with socket:
        await socket.send(
            json.dumps(
                {
                    "type": "message",
                    "client_id": str(uuid.uuid4()),
                    "text": "Write a long, detailed guide to returning parcels, with twenty numbered steps.",
                }
            )
        )
        frames = await _frames_until(socket, "reply.delta", "reply.done", "reply.error", seconds=120)
        assert frames[-1]["type"] == "reply.delta", frames
        reply_id = frames[-1]["reply_id"]
        # Kill the worker's whole process group at once: no chance to save or say anything.
        worker = production_stack.processes["worker"]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        killed_at = time.monotonic()
        # Its supervisor starts a new worker, which runs the sweeper; the dead one's job is not redone.
        production_stack.start_worker()
        frames = await _frames_until(socket, "reply.done", "reply.error", seconds=60)

    error = frames[-1]
    assert error["type"] == "reply.error", error
    assert error["reply_id"] == reply_id
    assert error["code"] == "worker_lost"
    assert "try again" in error["detail"]
    assert time.monotonic() - killed_at < 60
    reply = await database_sync_to_async(Message.objects.get)(pk=reply_id)
    assert reply.status == Message.Status.FAILED
    assert reply.error_code == "worker_lost"
    # What the customer saw before the worker died is kept.
    assert reply.text == error["message"]["text"]


# What the environment of the tests sets and the embedded default must not see (it picks its own).
EMBEDDED_UNSET = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CELERY_BROKER_URL", "INFERENCE_BASE_URL"}


def _embedded_start(env: dict[str, str], log: Path) -> tuple[int, subprocess.Popen[bytes]]:
    """`manage.py run_embedded` on free ports, once it is running or has stopped by itself."""
    port, model_port = free_port(), free_port()
    command = ["manage.py", "run_embedded", "--port", str(port), "--model-port", str(model_port)]
    process = _start([sys.executable, *command], env, log)
    try:
        _wait_until(
            lambda: "Press Ctrl+C to stop." in log.read_text() or process.poll() is not None,
            seconds=240,
            what="the embedded platform",
        )
    except BaseException:
        stop_process_group(process)
        print(log.read_text()[-3000:])
        raise
    return port, process


@pytest.fixture(scope="module")
def embedded_platform(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """`manage.py run_embedded`, as `make run` starts it: SQLite, in-memory layer, its own llama.cpp.

    One for this module's tests: each opens conversations of its own.
    """
    tmp_path = tmp_path_factory.mktemp("embedded")
    env = {key: value for key, value in os.environ.items() if key not in EMBEDDED_UNSET}
    env.update({"VAR_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1"})
    for attempt in range(1, PORT_ATTEMPTS + 1):
        log = tmp_path / f"embedded-{attempt}.log"
        port, process = _embedded_start(env, log)
        if process.poll() is None:
            break
        output = log.read_text()
        print(output[-3000:])
        # A port free when chosen, taken by another process on the machine before the platform
        # listened on it (run_embedded says so and stops): choose others. Any other exit is a failure.
        if not PORT_TAKEN.search(output) or attempt == PORT_ATTEMPTS:
            raise AssertionError(f"the embedded platform stopped ({process.returncode}):\n{output[-3000:]}")
    try:
        yield f"http://127.0.0.1:{port}", process, log
    finally:
        stop_process_group(process)
        print(log.read_text()[-3000:])


async def test_it_runs_the_embedded_default_end_to_end(
    embedded_platform: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base_url, process, log = embedded_platform
    output = log.read_text()
    assert f"Chat:   {base_url}/chat/" in output
    password = re.search(r"user: admin, password: (\S+)\)", output)
    assert password, output

    conversation, socket = await _open_conversation(base_url)
    async with socket:
        await socket.send(
            json.dumps({"type": "message", "client_id": str(uuid.uuid4()), "text": "Hi! Who are you?"})
        )
        frames = await _frames_until(socket, "reply.done", "reply.error", seconds=120)
    done = frames[-1]
    assert done["type"] == "reply.done", done
    streamed = "".join(frame["text"] for frame in frames if frame["type"] == "reply.delta")
    assert streamed == done["message"]["text"]
    assert streamed.strip()

    async with httpx.AsyncClient(base_url=base_url) as http:
        history = await http.get(
            f"/api/widget/conversations/{conversation['id']}/messages",
            headers={"Authorization": f"Bearer {conversation['token']}"},
        )
        assert [(message["role"], message["status"]) for message in history.json()["messages"]] == [
            ("customer", "complete"),
            ("assistant", "complete"),
        ]
        chat_page = await http.get("/chat/")
        assert chat_page.status_code == 200
        # Both messages show in admin: log in as the printed admin and open the conversation.
        login_page = await http.get("/admin/login/")
        csrf = http.cookies["csrftoken"]
        await http.post(
            "/admin/login/?next=/admin/",
            data={"username": "admin", "password": password.group(1), "csrfmiddlewaretoken": csrf},
            headers={"Referer": f"{base_url}/admin/login/"},
        )
        assert login_page.status_code == 200
        page = await http.get(f"/admin/conversations/conversation/{conversation['id']}/change/")
    assert page.status_code == 200
    assert "Hi! Who are you?" in page.text
    assert "transcript-assistant" in page.text
    # The agent console, as printed: a demo agent signs in with the admin's password.
    assert f"Agents: {base_url}/agent/   (user: lin or sam, the admin's password)" in output
    assert f"Roles:  {base_url}/admin/   (supervisor: mei, manager: wang, the admin's password)" in output
    async with httpx.AsyncClient(base_url=base_url) as http:
        session = await http.get("/api/agent/session")
        signed_in = await http.post(
            "/api/agent/session",
            json={"username": "lin", "password": password.group(1)},
            headers={"X-CSRFToken": session.json()["csrf_token"], "Referer": f"{base_url}/agent/"},
        )
        console = await http.get("/agent/")
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["agent"]["name"] == "Lin Wei"
    assert console.status_code == 200
    assert '"page": "console"' in console.text
    # The reports, as printed: the demo manager reads them, today counted live (the embedded default
    # runs no beat, so no day is aggregated), this conversation among them.
    assert f"Reports: {base_url}/reports/   (a supervisor, a manager or the admin)" in output
    async with httpx.AsyncClient(base_url=base_url) as http:
        await http.get("/admin/login/")
        await http.post(
            "/admin/login/?next=/reports/",
            data={
                "username": "wang",
                "password": password.group(1),
                "csrfmiddlewaretoken": http.cookies["csrftoken"],
            },
            headers={"Referer": f"{base_url}/admin/login/"},
        )
        reports = await http.get("/reports/")
    assert reports.status_code == 200, reports.text[:2000]
    assert "0 days from the daily aggregates" in reports.text
    shown = re.search(
        r'data-figure="conversations">\s*<div class="reports-card-title">[^<]*</div>\s*'
        r'<div class="reports-card-value">([0-9,]+)</div>',
        reports.text,
    )
    assert shown is not None
    assert int(shown.group(1).replace(",", "")) >= 1
    assert process.poll() is None


@pytest.mark.parametrize(
    ("locale", "text"),
    [
        ("en", "Hi, my order A12345 hasn't arrived after 10 days"),
        ("zh-Hans", "你好，我的订单 A12345 十天了还没到"),
    ],
)
async def test_it_keeps_the_embedded_defaults_instructions_out_of_its_replies(
    embedded_platform: tuple[str, subprocess.Popen[bytes], Path], locale: str, text: str
) -> None:
    base_url, _, log = embedded_platform
    # The local model itself answers here, in both languages (the demo profile quotes passages).
    model_answers_set(log.parent / "var", ["en", "zh-Hans"])
    conversation, socket = await _open_conversation(base_url, locale)
    async with socket:
        await socket.send(json.dumps({"type": "message", "client_id": str(uuid.uuid4()), "text": text}))
        frames = await _frames_until(socket, "reply.done", "reply.error", seconds=120)
    done = frames[-1]
    assert done["type"] == "reply.done", done

    async with httpx.AsyncClient(base_url=base_url) as http:
        history = await http.get(
            f"/api/widget/conversations/{conversation['id']}/messages",
            headers={"Authorization": f"Bearer {conversation['token']}"},
        )
    customer, reply = history.json()["messages"]
    assert (customer["role"], customer["text"]) == ("customer", text)
    assert (reply["id"], reply["role"]) == (done["message"]["id"], "assistant")
    assert reply["text"] == done["message"]["text"]
    assert reply["text"].strip()
    # The demo profile's instructions (name, rules, language policy) are the model's, not the customer's.
    _assert_no_instructions(reply["text"])


def test_it_answers_the_openai_client_through_the_gateway_with_the_local_model(
    embedded_platform: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base_url, _, log = embedded_platform
    output = log.read_text()
    assert f"API:    {base_url}/v1/   (OpenAI-compatible; a key: " in output
    env = {key: value for key, value in os.environ.items() if key not in EMBEDDED_UNSET}
    env["VAR_DIR"] = str(log.parent / "var")
    # As the printed line says: the operator issues a key on the embedded default's own database.
    created = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "api_key",
            "create",
            "--name",
            "smoke",
            "--quiet",
            "--model",
            "support-assistant",
            "--model",
            MODEL_ALIAS,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    client = openai.OpenAI(
        base_url=f"{base_url}/v1", api_key=created.stdout.strip(), max_retries=0, timeout=120
    )

    models = [model.id for model in client.models.list()]
    assert models == ["support-assistant", MODEL_ALIAS]
    # The plain proxy: the local model itself writes, streamed token by token.
    chunks = list(
        client.chat.completions.create(
            model=models[1],
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.strip()
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    # The assistant: the demo profile quotes the knowledge base, with the section cited.
    answer = client.chat.completions.create(
        model="support-assistant", messages=[{"role": "user", "content": "How do I return an item?"}]
    )
    assert answer.choices[0].message.content
    _assert_no_instructions(answer.choices[0].message.content)
    assert answer.model_extra is not None
    assert isinstance(answer.model_extra["citations"], list)
