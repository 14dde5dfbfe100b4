"""/metrics: the platform's figures for Prometheus, not public."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from conversations.models import Message
from cs_platform.processes import free_port
from cs_platform.ratelimit import _note_unavailable
from inference.client import FailureKind, server_registry
from tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _forget_server_health() -> Iterator[None]:
    yield
    server_registry.clear()


def test_it_reports_replies_by_status_and_error_code(client):
    conversation = ConversationFactory()
    MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE)
    MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.FAILED,
        error_code="worker_lost",
    )

    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    body = response.content.decode()
    assert 'cs_replies{error_code="",status="complete"} 1.0' in body
    assert 'cs_replies{error_code="worker_lost",status="failed"} 1.0' in body
    assert 'cs_conversations{status="open"} 1.0' in body


def test_it_refuses_other_addresses_without_the_token(client, settings):
    settings.METRICS_TOKEN = "metrics-secret"

    refused = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    wrong_token = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer nope")
    allowed = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer metrics-secret")

    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert wrong_token.status_code == 403
    assert allowed.status_code == 200


def test_it_reports_each_inference_servers_state_by_position_and_address(client, settings):
    settings.INFERENCE_BASE_URLS = ["http://10.0.0.5:8000/v1", "http://user:sk-secret@10.0.0.6:8000/v1/"]
    server_registry.record_failure("http://user:sk-secret@10.0.0.6:8000/v1", FailureKind.TIMEOUT, 3600)
    server_registry.record_failure("http://user:sk-secret@10.0.0.6:8000/v1", FailureKind.CLOSED, 3600)

    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    body = response.content.decode()
    assert 'cs_inference_server_healthy{position="1",server="10.0.0.5:8000"} 1.0' in body
    assert 'cs_inference_server_healthy{position="2",server="10.0.0.6:8000"} 0.0' in body
    assert 'cs_inference_server_consecutive_failures{position="1",server="10.0.0.5:8000"} 0.0' in body
    assert 'cs_inference_server_consecutive_failures{position="2",server="10.0.0.6:8000"} 2.0' in body
    assert 'cs_inference_server_cooldown_remaining_seconds{position="1",server="10.0.0.5:8000"} 0.0' in body
    [remaining] = [
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith('cs_inference_server_cooldown_remaining_seconds{position="2"')
    ]
    assert 3500 < remaining <= 3600
    assert 'cs_inference_server_last_failure{kind="closed",position="2",server="10.0.0.6:8000"} 1.0' in body
    assert 'kind="timeout"' not in body
    assert "sk-secret" not in body


def test_it_reports_a_failure_seen_by_the_readiness_probe(client, settings):
    port = free_port()
    settings.INFERENCE_BASE_URLS = [f"http://127.0.0.1:{port}/v1"]

    client.get("/readyz")
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    body = response.content.decode()
    assert f'cs_inference_server_healthy{{position="1",server="127.0.0.1:{port}"}} 0.0' in body
    assert (
        f'cs_inference_server_last_failure{{kind="connect",position="1",server="127.0.0.1:{port}"}} 1.0'
        in body
    )


def _rate_limit_unavailable_figure(client: Client) -> float:
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    prefix = 'cs_rate_limit_unavailable_total{scope="websocket-message"} '
    lines = [line for line in response.content.decode().splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


@pytest.mark.django_db
def test_it_counts_rate_limit_checks_let_through_while_the_cache_was_unreachable(client: Client) -> None:
    before = _rate_limit_unavailable_figure(client)

    _note_unavailable("websocket-message", ConnectionError("Redis is down"))

    assert _rate_limit_unavailable_figure(client) == before + 1
