"""/metrics: the platform's figures for Prometheus, not public."""

from __future__ import annotations

import pytest

from conversations.models import Message
from tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


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
