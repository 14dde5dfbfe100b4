"""Run the embedded default: the local model, then daphne, until interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.services import replies_fail_stalled
from cs_platform.demo import admin_password_file, demo_data_load
from cs_platform.processes import wait_until_answering
from inference.local_model import LocalModelServer


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
        settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        password = demo_data_load()
        failed = replies_fail_stalled(all_streaming=True)
        if failed:
            self.stdout.write(f"Failed {len(failed)} replies left streaming by the last run.")
        environment = dict(os.environ)
        model_server = None
        if not options["no_local_model"]:
            self.stdout.write("Starting the local model (llama.cpp, gemma 3 270M)…")
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            model_server = LocalModelServer(
                port=options["model_port"], log_path=settings.VAR_DIR / "llama.log"
            )
            model_server.start()
            environment.update(
                {
                    "INFERENCE_BASE_URL": model_server.base_url,
                    "INFERENCE_CONTEXT_TOKENS": str(model_server.context_tokens),
                    # gemma's chat template has no system role.
                    "INFERENCE_SYSTEM_PROMPT_IN_USER_TURN": "true",
                }
            )
        address = f"http://{options['host']}:{options['port']}"
        server = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "daphne", "-b", options["host"], "-p", str(options["port"]),
             "cs_platform.asgi:application"],
            env=environment,
        )  # fmt: skip
        try:
            try:
                wait_until_answering(f"{address}/healthz", timeout=60, process=server, what="daphne")
            except RuntimeError as error:
                raise CommandError(str(error)) from error
            self.stdout.write(self.style.SUCCESS("\nThe platform is running."))
            self.stdout.write(f"  Chat:   {address}/chat/")
            self.stdout.write(
                f"  Admin:  {address}/admin/   (user: admin, password: {self._password(password)})"
            )
            self.stdout.write("Press Ctrl+C to stop.\n")
            signal.signal(signal.SIGTERM, lambda *_: server.terminate())
            # Ctrl+C stops everything, even when started from a shell that ignores SIGINT for its jobs.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
            if model_server is not None:
                model_server.stop()

    def _password(self, created: str | None) -> str:
        if created:
            return created
        if admin_password_file().exists():
            return admin_password_file().read_text().strip()
        return "(set earlier; change it with `python manage.py changepassword admin`)"
