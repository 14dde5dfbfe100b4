"""Run the embedded default: the local model, then daphne, until interrupted."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.replies import replies_fail_stalled
from cs_platform.demo import (
    DEMO_AGENTS,
    DEMO_MANAGERS,
    DEMO_SUPERVISORS,
    admin_password_file,
    demo_data_load,
    demo_shop_base_url,
)
from cs_platform.processes import (
    PortTakenByAnother,
    exit_description,
    parent_death_signal,
    port_holder,
    port_in_use,
    stop_process_group,
    wait_until_answering,
)
from inference.local_model import MODEL_ALIAS, MODEL_DESCRIPTION, LocalModelMissing, LocalModelServer

# Ctrl+C, a closed terminal, and `kill` (or a supervisor) all stop the children on the way out.
STOP_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)
WATCH_INTERVAL_SECONDS = 0.5
# Held (flock) by the running platform for its whole life; it holds that process's pid.
LOCK_FILE_NAME = "run.lock"


class StopRequested(Exception):
    """Raised from the signal handler, so that every `finally` runs and the children are stopped."""

    def __init__(self, signal_number: int) -> None:
        self.signal_name = signal.Signals(signal_number).name
        super().__init__(self.signal_name)


def _stop_requested(signal_number: int, frame: FrameType | None) -> None:
    raise StopRequested(signal_number)


def var_dir_lock(var_dir: Path) -> int:
    """Lock VAR_DIR for this process (the descriptor to close to let go), or refuse with a sentence.

    Two platforms on one VAR_DIR share its SQLite database, and each one's start-up sweep fails the
    replies the other is streaming; two started at once also both pass the port checks. The lock is
    the kernel's (flock), so a platform that was killed holds it no longer.
    """
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / LOCK_FILE_NAME
    # Opened without truncating: the pid in it is the holder's until this process has the lock.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        os.close(descriptor)
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise CommandError(f"Cannot lock {path}: {error.strerror}.") from error
        who = f"pid {holder}" if holder.isdigit() else "a process that has not written its pid yet"
        raise CommandError(
            f"The platform is already running on {var_dir} ({who} holds {path}). Stop it, or run a second "
            f"one with a VAR_DIR of its own (its own database, media and logs) and other ports: make run "
            f"VAR_DIR={var_dir / 'second'} PORT=8001 MODEL_PORT=8082."
        ) from error
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor


class Command(BaseCommand):
    help = "Run the platform as the embedded default: SQLite, in-process replies and a local llama.cpp model."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--model-port", type=int, default=8081)
        parser.add_argument(
            "--no-local-model",
            action="store_true",
            help="Use INFERENCE_BASE_URL instead of starting llama.cpp.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.EMBEDDED:
            raise CommandError(
                "run_embedded is for the embedded default: unset REDIS_URL, or run daphne and Celery."
            )
        host, port = options["host"], options["port"]
        model_port = None if options["no_local_model"] else options["model_port"]
        # First of all: a second platform on this VAR_DIR must not migrate, sweep or take ports.
        lock = var_dir_lock(settings.VAR_DIR)
        try:
            self._run(host, port, model_port)
        finally:
            # Let go only once the children are stopped, so that the next run finds its ports free.
            os.close(lock)

    def _run(self, host: str, port: int, model_port: int | None) -> None:
        """Check the ports, prepare the database, start the children and watch them until stopped."""
        # Before anything starts: a leftover or a second platform would otherwise answer in our place.
        self._ports_check(host, port, model_port)
        for signal_number in STOP_SIGNALS:
            signal.signal(signal_number, _stop_requested)
        model_server: LocalModelServer | None = None
        server: subprocess.Popen[bytes] | None = None
        stopped_by = None
        try:
            settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)
            call_command("migrate", interactive=False, verbosity=0)
            password = demo_data_load(shop_base_url=demo_shop_base_url(host, port))
            failed = replies_fail_stalled(all_streaming=True)
            if failed:
                self.stdout.write(f"Failed {len(failed)} replies left streaming by the last run.")
            environment = dict(os.environ)
            if model_port is not None:
                self.stdout.write(f"Starting the local model (llama.cpp, {MODEL_DESCRIPTION})…")
                settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
                model_server = LocalModelServer(port=model_port, log_path=settings.VAR_DIR / "llama.log")
                self._model_start(model_server)
                environment.update(
                    {
                        "INFERENCE_BASE_URL": model_server.base_url,
                        "INFERENCE_CONTEXT_TOKENS": str(model_server.context_tokens),
                        # Named, so that admin offers the model to gateway keys as a plain proxy.
                        "INFERENCE_MODEL": MODEL_ALIAS,
                    }
                )
            address = f"http://{host}:{port}"
            # Its own session: the terminal's signals reach this command, which stops daphne in turn.
            # Should a stop signal land inside Popen, `server` stays None; the parent-death signal
            # still ends daphne when this command exits.
            server = subprocess.Popen(
                # The production entry point (no --proxy-headers, form bodies left to Django).
                [sys.executable, "-m", "cs_platform.serve_web"],
                env={**environment, "DAPHNE_BIND": host, "DAPHNE_PORT": str(port)},
                start_new_session=True,
                preexec_fn=parent_death_signal(),
            )
            try:
                # Only daphne's own answer counts: another server on the port would answer in its place.
                wait_until_answering(
                    f"{address}/healthz", timeout=60, process=server, what="daphne", port=port
                )
            except PortTakenByAnother as error:
                raise CommandError(
                    f"Port {port} on {host} was taken by {error.holder or 'another process'} while the "
                    "platform started, so daphne could not listen on it; the platform is stopped. Is "
                    f"another platform starting? Start this one on another port: make run PORT={port + 1}."
                ) from error
            except RuntimeError as error:
                ended = server.poll()
                what = (
                    f"{exit_description(ended)} before it answered" if ended is not None else "did not answer"
                )
                raise CommandError(
                    f"daphne {what} on {address}; the platform is stopped (daphne's output is above)."
                ) from error
            self.stdout.write(self.style.SUCCESS("\nThe platform is running."))
            self.stdout.write(f"  Chat:   {address}/chat/")
            self.stdout.write(
                f"  Admin:  {address}/admin/   (user: admin, password: {self._password(password)})"
            )
            agents = " or ".join(username for username, _, _ in DEMO_AGENTS)
            self.stdout.write(f"  Agents: {address}/agent/   (user: {agents}, the admin's password)")
            supervisors = " or ".join(username for username, _, _ in DEMO_SUPERVISORS)
            managers = " or ".join(username for username, _, _ in DEMO_MANAGERS)
            self.stdout.write(
                f"  Roles:  {address}/admin/   (supervisor: {supervisors}, manager: {managers}, "
                "the admin's password)"
            )
            self.stdout.write(f"  Reports: {address}/reports/   (a supervisor, a manager or the admin)")
            self.stdout.write(
                f"  API:    {address}/v1/   (OpenAI-compatible; a key: "
                ".venv/bin/python manage.py api_key create --name NAME)"
            )
            self.stdout.write("Press Ctrl+C to stop.\n")
            self._watch(server, model_server)
        except StopRequested as stop:
            stopped_by = stop.signal_name
        finally:
            # Stopping is not interrupted by a second Ctrl+C; the children get SIGKILL after a grace period.
            for signal_number in STOP_SIGNALS:
                signal.signal(signal_number, signal.SIG_IGN)
            stop_process_group(server)
            if model_server is not None:
                model_server.stop()
        if stopped_by:
            stopped = [
                name for name, child in (("daphne", server), ("the local model", model_server)) if child
            ]
            what = (
                f"{' and '.join(stopped)} {'are' if len(stopped) > 1 else 'is'} stopped"
                if stopped
                else "nothing ran yet"
            )
            # After SIGHUP the terminal that would show it may be gone.
            with contextlib.suppress(OSError):
                self.stdout.write(f"Stopped ({stopped_by}): {what}.")

    def _ports_check(self, host: str, port: int, model_port: int | None) -> None:
        """Refuse, with a sentence, ports that daphne or llama.cpp could not listen on."""
        if model_port == port:
            raise CommandError(f"--port and --model-port are both {port}: give the local model another port.")
        problems = []
        try:
            if port_in_use(host, port):
                problems.append(
                    f"Port {port} on {host} is already in use{self._holder(port)}. Is the platform already "
                    f"running? Stop it, or start this one on another port: make run PORT={port + 1} "
                    f"(manage.py run_embedded --port {port + 1})."
                )
            if model_port is not None and port_in_use("127.0.0.1", model_port):
                problems.append(
                    f"Port {model_port} on 127.0.0.1, for the local model (llama.cpp), is already in use"
                    f"{self._holder(model_port)}. Perhaps a llama.cpp server left by an earlier run: stop "
                    f"it, or choose another port: make run MODEL_PORT={model_port + 1} "
                    f"(manage.py run_embedded --model-port {model_port + 1})."
                )
        except OSError as error:
            raise CommandError(f"Cannot listen on {host}:{port}: {error.strerror}.") from error
        if problems:
            raise CommandError("\n".join(problems))

    def _holder(self, port: int) -> str:
        holder = port_holder(port)
        return f" by {holder}" if holder else ""

    def _model_start(self, model_server: LocalModelServer) -> None:
        """Start llama.cpp; if it ends or hangs before it is ready, say so with the end of its log."""
        try:
            model_server.start()
        except LocalModelMissing as error:
            raise CommandError(str(error)) from error
        except PortTakenByAnother as error:
            raise CommandError(
                f"Port {model_server.port} on 127.0.0.1, for the local model (llama.cpp), was taken by "
                f"{error.holder or 'another process'} while the platform started; the platform is stopped. "
                f"Choose another port: make run MODEL_PORT={model_server.port + 1}."
            ) from error
        except RuntimeError as error:
            process = model_server.process
            if (
                process is not None
                and process.returncode is not None
                and process.returncode != -signal.SIGTERM
            ):
                what = f"{exit_description(process.returncode)} before it was ready"
            else:
                what = str(error).replace("llama.cpp server ", "")
            raise CommandError(
                f"The local model (llama.cpp) {what}. The end of {model_server.log_path}:\n"
                f"{model_server.log_tail()}"
            ) from error

    def _watch(self, server: subprocess.Popen[bytes], model_server: LocalModelServer | None) -> None:
        """Return never: a child that ends by itself ends the platform, with a sentence."""
        while True:
            if server.poll() is not None:
                raise CommandError(
                    f"daphne {exit_description(server.returncode)} while the platform was running; "
                    "the platform is stopped."
                )
            if model_server is not None and model_server.process is not None:
                model = model_server.process
                if model.poll() is not None:
                    raise CommandError(
                        f"The local model (llama.cpp) {exit_description(model.returncode)} while the "
                        "platform was running; the platform is stopped. "
                        f"The end of {model_server.log_path}:\n{model_server.log_tail()}"
                    )
            time.sleep(WATCH_INTERVAL_SECONDS)

    def _password(self, created: str | None) -> str:
        if created:
            return created
        if admin_password_file().exists():
            return admin_password_file().read_text().strip()
        return "(set earlier; change it with `python manage.py changepassword admin`)"
