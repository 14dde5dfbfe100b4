"""Liveness and readiness: the database, Redis and an inference server must answer."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient, Client

from cs_platform.processes import free_port
from tests.scripted_inference import ScriptedInferenceServer

pytestmark = pytest.mark.django_db


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
    assert response.json() == {"status": "ok"}
    assert [request.path for request in scripted_inference.requests] == ["/v1/models"]


async def test_it_is_ready_for_an_async_client(scripted_inference: ScriptedInferenceServer) -> None:
    response = await async_get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_it_names_inference_when_no_server_answers(settings: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings.INFERENCE_BASE_URLS = [dead]

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "failures": [f"inference: no server answered ({dead}: ConnectError)"],
    }


async def test_it_names_inference_to_an_async_client(settings: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings.INFERENCE_BASE_URLS = [dead]

    response = await async_get("/readyz")

    assert response.status_code == 503
    assert response.json()["failures"] == [f"inference: no server answered ({dead}: ConnectError)"]


def test_it_is_ready_when_any_inference_server_answers(
    settings: Any, scripted_inference: ScriptedInferenceServer
) -> None:
    settings.INFERENCE_BASE_URLS = [f"http://127.0.0.1:{free_port()}/v1", scripted_inference.base_url]

    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_it_names_every_inference_server_that_failed(settings: Any) -> None:
    first, second = (f"http://127.0.0.1:{free_port()}/v1" for _ in range(2))
    settings.INFERENCE_BASE_URLS = [first, second]

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["failures"] == [
        f"inference: no server answered ({first}: ConnectError; {second}: ConnectError)"
    ]


def test_it_names_an_inference_server_answering_with_an_error(settings: Any) -> None:
    with ScriptedInferenceServer() as server:
        # The scripted server answers 404 for any path but its own.
        broken = f"{server.base_url}/broken"
        settings.INFERENCE_BASE_URLS = [broken]

        response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["failures"] == [f"inference: no server answered ({broken}: HTTPStatusError)"]


def test_it_names_redis_when_the_channel_layer_is_down(
    settings: Any, scripted_inference: ScriptedInferenceServer
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
        }
    }

    response = Client().get("/readyz")

    assert response.status_code == 503
    [failure] = response.json()["failures"]
    assert failure.startswith("redis: ")
