"""Liveness and readiness: the database, Redis and an inference server must answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection, connections
from django.test import AsyncClient, Client

from cs_platform import health
from cs_platform.processes import free_port
from inference.client import FailureKind, ServerState, server_registry
from tests.scripted_inference import ScriptedInferenceServer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _forget_server_health() -> Iterator[None]:
    """The probes record failures in the process's fail-over registry: keep them from the next test."""
    yield
    server_registry.clear()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


async def async_get(path: str) -> Any:
    """GET through Django's async test client, then close the connection the view opened in a worker thread.

    The test client keeps connections open (for the test's transaction); the readiness check's
    `sync_to_async` opened its own in asgiref's worker thread, which would outlive the test database.
    """
    try:
        return await AsyncClient().get(path)
    finally:
        await sync_to_async(connections.close_all)()


def test_it_answers_healthz() -> None:
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_it_answers_healthz_without_an_inference_server(settings: Any) -> None:
    settings.INFERENCE_BASE_URLS = [f"http://127.0.0.1:{free_port()}/v1"]

    response = Client().get("/healthz")

    assert response.status_code == 200


def test_it_is_ready_when_everything_answers(scripted_inference: ScriptedInferenceServer) -> None:
    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "inference_servers": [{"server": 1, "state": "healthy"}]}
    assert [request.path for request in scripted_inference.requests] == ["/v1/models"]


async def test_it_is_ready_for_an_async_client(scripted_inference: ScriptedInferenceServer) -> None:
    response = await async_get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "inference_servers": [{"server": 1, "state": "healthy"}]}


def test_it_names_inference_without_its_address_or_error_when_no_server_answers(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dead = dead_url()
    settings.INFERENCE_BASE_URLS = [dead]

    with caplog.at_level(logging.WARNING, logger="cs_platform.health"):
        response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "failures": ["inference"],
        "inference_servers": [{"server": 1, "state": "not_answering"}],
    }
    body = response.content.decode()
    assert "127.0.0.1" not in body
    assert "ConnectError" not in body
    # The operator still finds out which server and why: in the log, and in /metrics.
    assert any(
        dead in record.getMessage() and "ConnectError" in record.getMessage() for record in caplog.records
    )
    assert server_registry.health(dead).last_failure is FailureKind.CONNECT


async def test_it_names_inference_to_an_async_client(settings: Any) -> None:
    settings.INFERENCE_BASE_URLS = [dead_url()]

    response = await async_get("/readyz")

    assert response.status_code == 503
    assert response.json()["failures"] == ["inference"]


def test_it_is_ready_when_any_inference_server_answers(
    settings: Any, scripted_inference: ScriptedInferenceServer
) -> None:
    settings.INFERENCE_BASE_URLS = [dead_url(), scripted_inference.base_url]

    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "inference_servers": [{"server": 1, "state": "not_answering"}, {"server": 2, "state": "healthy"}],
    }


def test_it_shows_every_inference_server_that_failed(settings: Any) -> None:
    settings.INFERENCE_BASE_URLS = [dead_url(), dead_url()]

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "failures": ["inference"],
        "inference_servers": [
            {"server": 1, "state": "not_answering"},
            {"server": 2, "state": "not_answering"},
        ],
    }


def test_it_hides_the_url_of_an_inference_server_answering_with_an_error(settings: Any) -> None:
    with ScriptedInferenceServer() as server:
        # The scripted server answers 404 for any path but its own.
        broken = f"{server.base_url}/internal-path"
        settings.INFERENCE_BASE_URLS = [broken]

        response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["inference_servers"] == [{"server": 1, "state": "not_answering"}]
    body = response.content.decode()
    assert "internal-path" not in body
    assert "HTTPStatusError" not in body
    assert server_registry.health(broken).last_failure is FailureKind.BAD_RESPONSE


def test_it_shows_a_server_cooling_down_after_a_failed_reply(
    settings: Any, scripted_inference: ScriptedInferenceServer
) -> None:
    server_registry.record_failure(scripted_inference.base_url, FailureKind.TIMEOUT, cooldown_seconds=60)

    response = Client().get("/readyz")

    # It answers the probe, so the platform is ready; replies try it last until the cool-down ends.
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "inference_servers": [{"server": 1, "state": "cooling_down"}]}
    assert server_registry.health(scripted_inference.base_url).state(server_registry.clock()) is (
        ServerState.COOLING_DOWN
    )


def test_it_names_redis_without_the_error_when_the_channel_layer_is_down(
    settings: Any, scripted_inference: ScriptedInferenceServer
) -> None:
    redis_port = free_port()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{redis_port}/0"]},
        }
    }

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "failures": ["redis"],
        "inference_servers": [{"server": 1, "state": "healthy"}],
    }
    assert str(redis_port) not in response.content.decode()


def test_it_names_the_database_without_the_error_when_it_fails(
    monkeypatch: pytest.MonkeyPatch,
    scripted_inference: ScriptedInferenceServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse() -> None:
        raise OperationalError('connection to server at "db.internal" (10.1.2.3), port 5432 failed')

    monkeypatch.setattr(connection, "cursor", refuse)

    with caplog.at_level(logging.WARNING, logger="cs_platform.health"):
        response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "failures": ["database"],
        "inference_servers": [{"server": 1, "state": "healthy"}],
    }
    assert "db.internal" not in response.content.decode()
    assert any("db.internal" in record.exc_text for record in caplog.records if record.exc_text)


async def test_it_answers_a_burst_of_readiness_calls_with_one_probe(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.INFERENCE_BASE_URLS = [dead_url()]
    release = asyncio.Event()
    started = asyncio.Event()
    probes: list[int] = []

    async def check() -> health.Readiness:
        probes.append(1)
        started.set()
        await release.wait()
        return health.Readiness(failures=[], servers=[health.InferenceServerState.HEALTHY])

    async def release_after_the_first_probe_started() -> None:
        async with asyncio.timeout(10):
            await started.wait()
        release.set()

    monkeypatch.setattr(health, "_check", check)
    # A minute of reuse, so that a slow machine's burst cannot outlast it: this counts probes, not time.
    monkeypatch.setattr(health, "READINESS_REUSE_SECONDS", 60.0)

    releaser = asyncio.create_task(release_after_the_first_probe_started())
    responses = await asyncio.gather(*(AsyncClient().get("/readyz") for _ in range(40)))
    await releaser

    assert probes == [1]
    assert [response.status_code for response in responses] == [200] * 40
    assert {response.content for response in responses} == {
        b'{"status": "ok", "inference_servers": [{"server": 1, "state": "healthy"}]}'
    }


async def test_it_probes_again_once_the_last_result_is_older_than_its_reuse_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    states = iter([health.InferenceServerState.NOT_ANSWERING, health.InferenceServerState.HEALTHY])

    async def check() -> health.Readiness:
        state = next(states)
        failures = [health.Part.INFERENCE] if state is health.InferenceServerState.NOT_ANSWERING else []
        return health.Readiness(failures=failures, servers=[state])

    monkeypatch.setattr(health, "_check", check)
    monkeypatch.setattr(health, "_clock", lambda: now[0])

    first = await AsyncClient().get("/readyz")
    now[0] += health.READINESS_REUSE_SECONDS - 0.1
    reused = await AsyncClient().get("/readyz")
    now[0] += 0.2
    fresh = await AsyncClient().get("/readyz")

    assert (first.status_code, reused.status_code, fresh.status_code) == (503, 503, 200)
    assert (
        reused.json()
        == first.json()
        == {
            "status": "unavailable",
            "failures": ["inference"],
            "inference_servers": [{"server": 1, "state": "not_answering"}],
        }
    )
    assert fresh.json() == {"status": "ok", "inference_servers": [{"server": 1, "state": "healthy"}]}
