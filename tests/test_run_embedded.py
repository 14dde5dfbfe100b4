"""`manage.py run_embedded`, the process `make run` starts: it stops its children however it is
stopped, and a port it cannot have, a VAR_DIR another platform holds, or a child that dies, ends it
with a sentence and a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Origin

from cs_platform.processes import (
    PortTakenByAnother,
    free_port,
    parent_death_signal,
    port_in_use,
    stop_process_group,
    wait_until_answering,
)
from inference.local_model import MODEL_FILE, MODEL_PACKAGE
from tests.conftest import model_answers_set
from tests.scripted_inference import Script, ScriptedInferenceServer

ROOT = Path(__file__).resolve().parent.parent
READY = "Press Ctrl+C to stop."


@dataclass
class Embedded:
    process: subprocess.Popen[bytes]
    log: Path
    var_dir: Path
    port: int
    model_port: int
    children: dict[int, str] = field(default_factory=dict)

    def output(self) -> str:
        return self.log.read_text()


def _wait_until(predicate: Callable[[], bool], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie (dead, not yet reaped by whoever adopted it) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> dict[int, str]:
    """The live children of `pid`, with their command lines."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and _alive(int(entry.name)):
            children[int(entry.name)] = command
    return children


@pytest.fixture
def start_embedded(tmp_path: Path) -> Iterator[Callable[..., Embedded]]:
    """Start `manage.py run_embedded` on free ports with a VAR_DIR of its own; stopped at the end."""
    started: list[Embedded] = []

    def start(
        *arguments: str,
        port: int | None = None,
        model_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Embedded:
        port = port or free_port()
        model_port = model_port or free_port()
        environment = {
            key: value
            for key, value in os.environ.items()
            if key
            not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CELERY_BROKER_URL", "INFERENCE_BASE_URL"}
        }
        environment.update({"VAR_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1", **(env or {})})
        log = tmp_path / f"embedded-{len(started)}.log"
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_embedded", "--port", str(port),
             "--model-port", str(model_port), *arguments],
            cwd=ROOT,
            env=environment,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        embedded = Embedded(process, log, tmp_path / "var", port, model_port)
        started.append(embedded)
        return embedded

    try:
        yield start
    finally:
        for embedded in started:
            stop_process_group(embedded.process)
            for pid in embedded.children:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            print(embedded.output()[-3000:])


def _running(embedded: Embedded) -> dict[int, str]:
    """Wait until the platform says it runs; its children then, by command line."""
    _wait_until(
        lambda: READY in embedded.output() or embedded.process.poll() is not None,
        seconds=240,
        what="the embedded platform",
    )
    assert embedded.process.poll() is None, embedded.output()
    embedded.children = _children(embedded.process.pid)
    return embedded.children


@pytest.fixture
def held_port() -> Iterator[int]:
    """A free port that another program (this test) listens on."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


def _assert_model_and_daphne(children: dict[int, str]) -> None:
    assert len(children) == 2, children
    assert [command.endswith(" -m cs_platform.serve_web") for command in children.values()].count(
        True
    ) == 1, children
    assert [" -m llama_cpp.server " in command for command in children.values()].count(True) == 1, children


@pytest.mark.e2e
def test_it_stops_the_model_and_daphne_when_the_terminal_closes(
    start_embedded: Callable[..., Embedded],
) -> None:
    embedded = start_embedded()
    children = _running(embedded)
    _assert_model_and_daphne(children)

    # A closed terminal sends SIGHUP to its foreground process group: run_embedded's.
    os.killpg(embedded.process.pid, signal.SIGHUP)

    assert embedded.process.wait(timeout=60) == 0, embedded.output()
    assert [pid for pid in children if _alive(pid)] == []
    assert not port_in_use("127.0.0.1", embedded.port)
    assert not port_in_use("127.0.0.1", embedded.model_port)
    assert "Stopped (SIGHUP): daphne and the local model are stopped." in embedded.output()


@pytest.mark.e2e
def test_it_leaves_no_child_behind_when_it_is_killed(start_embedded: Callable[..., Embedded]) -> None:
    embedded = start_embedded()
    children = _running(embedded)
    _assert_model_and_daphne(children)

    # SIGKILL: no handler runs; the kernel's parent-death signal must end the children.
    os.kill(embedded.process.pid, signal.SIGKILL)

    assert embedded.process.wait(timeout=10) == -signal.SIGKILL
    _wait_until(lambda: not any(_alive(pid) for pid in children), seconds=30, what="the children to stop")
    _wait_until(
        lambda: (
            not port_in_use("127.0.0.1", embedded.port) and not port_in_use("127.0.0.1", embedded.model_port)
        ),
        seconds=10,
        what="the ports to be released",
    )


def test_it_refuses_a_model_port_held_by_another_program(
    start_embedded: Callable[..., Embedded], held_port: int
) -> None:
    embedded = start_embedded(model_port=held_port)

    assert embedded.process.wait(timeout=120) == 1, embedded.output()
    output = embedded.output()
    assert (
        f"Port {held_port} on 127.0.0.1, for the local model (llama.cpp), is already in use by "
        f"pid {os.getpid()} ("
    ) in output
    assert f"make run MODEL_PORT={held_port + 1}" in output
    assert "Traceback" not in output
    assert "The platform is running" not in output
    # Nothing was started: no model log, no database, and the web port is still free.
    assert not (embedded.var_dir / "llama.log").exists()
    assert not (embedded.var_dir / "db.sqlite3").exists()
    assert not port_in_use("127.0.0.1", embedded.port)


def test_it_refuses_a_web_port_held_by_a_platform_already_running(
    start_embedded: Callable[..., Embedded], held_port: int
) -> None:
    embedded = start_embedded(port=held_port)

    assert embedded.process.wait(timeout=120) == 1, embedded.output()
    output = embedded.output()
    assert f"Port {held_port} on 127.0.0.1 is already in use by pid {os.getpid()} (" in output
    assert "Is the platform already running?" in output
    assert f"make run PORT={held_port + 1}" in output
    assert "Traceback" not in output
    assert "The platform is running" not in output
    assert not (embedded.var_dir / "llama.log").exists()
    assert not port_in_use("127.0.0.1", embedded.model_port)


def test_it_shows_the_model_log_when_llama_cpp_exits_early(
    start_embedded: Callable[..., Embedded], tmp_path: Path
) -> None:
    # A stand-in model package, found first on the path, whose model file is not a model: the real
    # llama.cpp server fails to load it and exits.
    package = tmp_path / "shadow" / MODEL_PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    not_a_model = package / MODEL_FILE
    not_a_model.write_text("this is not a GGUF file\n")
    embedded = start_embedded(env={"PYTHONPATH": str(tmp_path / "shadow")})

    assert embedded.process.wait(timeout=180) == 1, embedded.output()
    output = embedded.output()
    log_path = embedded.var_dir / "llama.log"
    assert (
        f"The local model (llama.cpp) exited with status 1 before it was ready. The end of {log_path}:"
        in output
    )
    assert "Traceback" not in output.split(str(log_path))[0]
    # The tail of the model's own log is shown, with its reason.
    assert f"Failed to load model from file: {not_a_model}" in output.split(str(log_path))[1]
    assert "The platform is running" not in output
    assert not port_in_use("127.0.0.1", embedded.port)


def test_it_exits_non_zero_when_daphne_stops_by_itself(start_embedded: Callable[..., Embedded]) -> None:
    embedded = start_embedded("--no-local-model")
    children = _running(embedded)
    [(daphne, command)] = children.items()
    assert command.endswith(" -m cs_platform.serve_web")

    os.kill(daphne, signal.SIGKILL)

    assert embedded.process.wait(timeout=60) == 1, embedded.output()
    assert (
        "daphne was killed by signal 9 while the platform was running; the platform is stopped."
        in embedded.output()
    )


class _AnsweringHandler(BaseHTTPRequestHandler):
    """Answers every GET with 200, as a platform's /healthz would."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def answer_on() -> Iterator[Callable[[int], None]]:
    """Listen on a port from this test process and answer every GET with 200; closed at the end."""
    servers: list[HTTPServer] = []

    def answer(port: int) -> None:
        server = HTTPServer(("127.0.0.1", port), _AnsweringHandler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    try:
        yield answer
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_it_counts_an_answer_only_from_the_process_it_started(answer_on: Callable[[int], None]) -> None:
    port = free_port()
    answer_on(port)
    # A child that never listens: whatever answers on `port` is someone else.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        start_new_session=True,
        preexec_fn=parent_death_signal(),
    )
    try:
        with pytest.raises(PortTakenByAnother) as raised:
            wait_until_answering(
                f"http://127.0.0.1:{port}/healthz", timeout=10, process=child, what="daphne", port=port
            )
        assert raised.value.port == port
        assert raised.value.holder is not None
        assert raised.value.holder.startswith(f"pid {os.getpid()} (")
        assert str(raised.value) == f"daphne did not get port {port}: {raised.value.holder} answered on it"
        assert child.poll() is None
    finally:
        stop_process_group(child)


def test_it_accepts_the_answer_of_the_process_it_started() -> None:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=parent_death_signal(),
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/", timeout=30, process=child, port=port)
        assert child.poll() is None
    finally:
        stop_process_group(child)


@pytest.mark.e2e
def test_it_stops_when_another_server_takes_its_web_port_after_the_check(
    start_embedded: Callable[..., Embedded], answer_on: Callable[[int], None]
) -> None:
    # Two platforms started at once both find the port free; the one whose daphne loses the bind must
    # not take the other's answer for its own.
    embedded = start_embedded()
    _wait_until(
        lambda: "Starting the local model" in embedded.output() or embedded.process.poll() is not None,
        seconds=60,
        what="the port checks to pass",
    )
    # The ports were checked; daphne starts only once the model is ready.
    answer_on(embedded.port)

    assert embedded.process.wait(timeout=240) == 1, embedded.output()
    output = embedded.output()
    holder = f"Port {embedded.port} on 127.0.0.1 was taken by pid {os.getpid()} ("
    assert holder in output
    assert (
        "while the platform started, so daphne could not listen on it; the platform is stopped."
        in output.split(holder)[1]
    ), output
    assert f"make run PORT={embedded.port + 1}" in output
    assert "The platform is running" not in output
    assert "Traceback" not in output
    assert _children(embedded.process.pid) == {}
    assert not port_in_use("127.0.0.1", embedded.model_port)


async def _streaming_reply(base_url: str, var_dir: Path) -> tuple[Any, int]:
    """A customer's conversation with a reply that has streamed its first token; the open socket."""
    # The model streams it (the demo profile quotes the knowledge base instead).
    model_answers_set(var_dir, ["en"])
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{base_url}/api/widget/conversations", json={"locale": "en"})
    assert response.status_code == 201, response.text
    conversation = response.json()
    socket = await websockets.connect(
        base_url.replace("http", "ws") + conversation["ws_path"], origin=Origin(base_url)
    )
    await socket.send(json.dumps({"type": "hello", "token": conversation["token"]}))
    await socket.send(
        json.dumps({"type": "message", "client_id": str(uuid.uuid4()), "text": "What colour is the sky?"})
    )
    async with asyncio.timeout(60):
        while True:
            frame = json.loads(await socket.recv())
            assert frame["type"] not in {"reply.done", "reply.error"}, frame
            if frame["type"] == "reply.delta":
                return socket, frame["reply_id"]


async def test_it_refuses_a_second_platform_on_the_same_var_dir(
    start_embedded: Callable[..., Embedded],
) -> None:
    # The reply streams its first token, then waits: it is still streaming when the second one starts.
    stalled = Script(tokens=["Hello", " there"], stall_after=1, stall_seconds=300)
    with ScriptedInferenceServer(default=stalled) as inference:
        first = start_embedded(
            "--no-local-model",
            env={"INFERENCE_BASE_URL": inference.base_url, "INFERENCE_TOKEN_TIMEOUT": "300"},
        )
        await asyncio.to_thread(_running, first)
        lock_file = first.var_dir / "run.lock"
        assert lock_file.read_text() == f"{first.process.pid}\n"
        socket, reply_id = await _streaming_reply(f"http://127.0.0.1:{first.port}", first.var_dir)
        async with socket:
            # `make run PORT=8010 MODEL_PORT=8082` beside it: other ports, the same VAR_DIR.
            second = start_embedded()
            assert await asyncio.to_thread(second.process.wait, 120) == 1, second.output()

            output = second.output()
            assert (
                f"The platform is already running on {first.var_dir} (pid {first.process.pid} holds "
                f"{lock_file}). Stop it, or run a second one with a VAR_DIR of its own (its own database, "
                f"media and logs) and other ports: make run VAR_DIR={first.var_dir / 'second'} PORT=8001 "
                "MODEL_PORT=8082."
            ) in output, output
            assert "Traceback" not in output
            assert "Failed 1 replies left streaming" not in output
            assert not port_in_use("127.0.0.1", second.port)
            assert not port_in_use("127.0.0.1", second.model_port)
            # The first platform is untouched: still running, still holding the lock, and its reply
            # still in progress (the second did not sweep it), so the customer can stop it and gets it.
            assert first.process.poll() is None
            assert lock_file.read_text() == f"{first.process.pid}\n"
            await socket.send(json.dumps({"type": "cancel", "reply_id": reply_id}))
            async with asyncio.timeout(30):
                while (frame := json.loads(await socket.recv()))["type"] not in {"reply.done", "reply.error"}:
                    pass
    assert frame["type"] == "reply.done", frame
    assert frame["message"]["id"] == reply_id
    assert frame["message"]["status"] == "cancelled"
    assert frame["message"]["text"] == "Hello"
