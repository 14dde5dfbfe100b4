"""Shared fixtures: real PostgreSQL and Redis (from the environment), a scripted inference server."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from celery import current_app
from django.conf import settings as django_settings
from django.db import connections

from conversations import handoff_rules, replies
from cs_platform.health import forget_readiness
from inference.client import server_registry
from tests.scripted_inference import ScriptedInferenceServer

real_reply_generation_enqueue = replies.reply_generation_enqueue


@pytest.fixture
async def worker_connections_closed() -> AsyncIterator[None]:
    """Close the connection the async ORM opened in asgiref's worker thread, which would otherwise
    outlive the test database (the async tests run with transaction=True for that thread to see rows)."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture(scope="session", autouse=True)
def _clean_redis() -> None:
    """Start the run with an empty Redis database: no channel groups or counters from earlier runs."""
    if django_settings.REDIS_URL:
        redis.Redis.from_url(django_settings.REDIS_URL).flushdb()


@pytest.fixture(autouse=True)
def _fresh_server_registry() -> Iterator[None]:
    """Each test starts with every inference server healthy: a cool-down one test caused must not
    change the order in which a later test's servers are tried."""
    server_registry.clear()
    forget_readiness()
    yield
    server_registry.clear()
    forget_readiness()


@pytest.fixture(autouse=True)
def _media_root(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def enqueued_replies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replies queued for generation, recorded instead of run: most tests check only what was queued.

    Tests that want replies generated use `live_replies`.
    """
    queued: list[int] = []
    monkeypatch.setattr(replies, "reply_generation_enqueue", lambda *, reply_id: queued.append(reply_id))
    return queued


@pytest.fixture
def auto_assignment_runs_here(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A broker that delivers the auto-assignment task at once, in the thread that queued it: the task
    is still queued by name on commit, as on a worker, and its work is done when the commit returns.
    Returns the runs queued (other tasks are sent as usual)."""
    real_send_task = current_app.send_task
    runs: list[str] = []

    def send_task(name: str, *args: Any, **kwargs: Any) -> Any:
        if name != handoff_rules.AUTO_ASSIGN_TASK:
            return real_send_task(name, *args, **kwargs)
        runs.append(name)
        return current_app.tasks[name].apply(throw=True)

    monkeypatch.setattr(current_app, "send_task", send_task)
    return runs


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Set the clock every `timezone.now()` reads (auto_now fields too)."""

    def freeze(at: datetime) -> None:
        monkeypatch.setattr("django.utils.timezone.now", lambda: at)

    return freeze


@pytest.fixture
def scripted_inference(settings: Any) -> Iterator[ScriptedInferenceServer]:
    """A scripted OpenAI-compatible server, configured as the only inference server."""
    server = ScriptedInferenceServer().start()
    settings.INFERENCE_BASE_URLS = [server.base_url]
    settings.INFERENCE_MODEL = ""
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def live_replies(
    monkeypatch: pytest.MonkeyPatch, settings: Any, scripted_inference: ScriptedInferenceServer
) -> ScriptedInferenceServer:
    """Replies are generated for real, in-process, against the scripted server."""
    monkeypatch.setattr(replies, "reply_generation_enqueue", real_reply_generation_enqueue)
    settings.REPLY_GENERATION_IN_PROCESS = True
    settings.INFERENCE_BASE_URLS = [scripted_inference.base_url]
    return scripted_inference


def model_answers_set(var_dir: Path, locales: list[str]) -> None:
    """Let the embedded platform's local model write the answers in `locales` (the demo quotes instead).

    What a supervisor does in admin (the profile's "model answer languages"), written straight into the
    platform's SQLite database: the profile is read for every reply.
    """
    database = sqlite3.connect(var_dir / "db.sqlite3")
    with database:
        database.execute(
            "UPDATE inference_assistantprofile SET model_answer_locales = ? WHERE is_active",
            (json.dumps(locales),),
        )
    database.close()
