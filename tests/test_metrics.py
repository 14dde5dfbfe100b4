"""/metrics: the platform's figures for Prometheus, not public."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


def metrics_body(client: Client) -> str:
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    return response.content.decode()


def test_it_reports_the_first_token_histogram_and_the_tokens(client: Client) -> None:
    conversation = ConversationFactory()
    for latency, prompt, completion in ((80, 100, 10), (400, 200, 20), (2500, 300, 30)):
        MessageFactory(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            source=Message.Source.MODEL,
            first_token_latency_ms=latency,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
    # An FAQ answer's time is not the model's.
    MessageFactory(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        source=Message.Source.FAQ,
        first_token_latency_ms=5,
    )

    body = metrics_body(client)

    assert 'cs_reply_first_token_seconds_bucket{le="0.1"} 1.0' in body
    assert 'cs_reply_first_token_seconds_bucket{le="0.5"} 2.0' in body
    assert 'cs_reply_first_token_seconds_bucket{le="2.0"} 2.0' in body
    assert 'cs_reply_first_token_seconds_bucket{le="3.0"} 3.0' in body
    assert 'cs_reply_first_token_seconds_bucket{le="+Inf"} 3.0' in body
    assert "cs_reply_first_token_seconds_count 3.0" in body
    assert "cs_reply_first_token_seconds_sum 2.98" in body
    assert 'cs_model_tokens_total{kind="prompt"} 600.0' in body
    assert 'cs_model_tokens_total{kind="completion"} 60.0' in body


def test_it_reports_handoffs_by_trigger(client: Client) -> None:
    from conversations.models import Ticket

    for trigger in (
        Ticket.Trigger.CUSTOMER_BUTTON,
        Ticket.Trigger.CUSTOMER_BUTTON,
        Ticket.Trigger.MODEL_TOOL,
    ):
        conversation: Any = ConversationFactory()
        Ticket.objects.create(conversation=conversation, trigger=trigger)

    body = metrics_body(client)

    assert 'cs_handoffs{trigger="customer_button"} 2.0' in body
    assert 'cs_handoffs{trigger="model_tool"} 1.0' in body


def test_it_counts_this_processs_requests_by_method_and_status(client: Client) -> None:
    lines = (
        'cs_http_requests_total{method="GET",status="2xx"}',
        'cs_http_requests_total{method="GET",status="4xx"}',
    )

    def counts() -> tuple[float, ...]:
        rows = dict(
            row.rsplit(" ", 1) for row in metrics_body(client).splitlines() if not row.startswith("#")
        )
        return tuple(float(rows.get(line, 0)) for line in lines)

    ok, missing = counts()
    client.get("/healthz")
    client.get("/no-such-page/")

    # The first scrape is counted once it is answered, after it wrote its figures: 2 answered 200.
    assert counts() == (ok + 2, missing + 1)


def test_it_reports_the_celery_queue_depth(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    import redis

    from cs_platform import metrics

    settings.CELERY_BROKER_URL = settings.REDIS_URL
    queue = f"test-queue-{uuid.uuid4().hex}"
    monkeypatch.setattr(metrics, "CELERY_QUEUE", queue)
    connection = redis.Redis.from_url(settings.REDIS_URL)
    connection.rpush(queue, "a", "b", "c")
    try:
        body = metrics_body(client)
    finally:
        connection.delete(queue)

    assert f'cs_queue_depth{{queue="{queue}"}} 3.0' in body


def test_it_leaves_the_queue_depth_out_with_the_in_memory_broker(client: Client, settings: Any) -> None:
    settings.CELERY_BROKER_URL = "memory://"

    assert "cs_queue_depth" not in metrics_body(client)


def gateway_requests(count: int = 1, **fields: Any) -> None:
    from gateway.models import ApiRequest

    values: dict[str, Any] = {
        "model": "support-assistant",
        "served_model": "qwen2.5-vl-7b",
        "mode": ApiRequest.Mode.ASSISTANT,
        "status_code": 200,
        **fields,
    }
    ApiRequest.objects.bulk_create(ApiRequest(**values) for _ in range(count))


def test_it_counts_the_gateways_requests_and_tokens_by_model_mode_status_and_error_code(
    client: Client,
) -> None:
    gateway_requests(2, prompt_tokens=900, completion_tokens=40)
    gateway_requests(model="qwen2.5-vl-7b", mode="proxy", stream=True, prompt_tokens=50, completion_tokens=10)
    gateway_requests(status_code=429, error_code="insufficient_quota", served_model="")
    gateway_requests(status_code=502, error_code="upstream_error", prompt_tokens=30)
    # A name the gateway did not recognise is the caller's free text: it is no label of its own.
    gateway_requests(
        model="made-up-1", mode="", served_model="", status_code=404, error_code="model_not_found"
    )
    gateway_requests(
        model="made-up-2", mode="", served_model="", status_code=404, error_code="model_not_found"
    )

    body = metrics_body(client)

    requests = sorted(line for line in body.splitlines() if line.startswith("cs_gateway_requests_total"))
    assert requests == [
        'cs_gateway_requests_total{error_code="",mode="assistant",model="support-assistant",'
        'status="200"} 2.0',
        'cs_gateway_requests_total{error_code="",mode="proxy",model="qwen2.5-vl-7b",status="200"} 1.0',
        'cs_gateway_requests_total{error_code="insufficient_quota",mode="assistant",model="support-assistant",'
        'status="429"} 1.0',
        'cs_gateway_requests_total{error_code="model_not_found",mode="",model="",status="404"} 2.0',
        'cs_gateway_requests_total{error_code="upstream_error",mode="assistant",model="support-assistant",'
        'status="502"} 1.0',
    ]
    tokens = sorted(line for line in body.splitlines() if line.startswith("cs_gateway_tokens_total"))
    assert tokens == [
        'cs_gateway_tokens_total{kind="completion",model=""} 0.0',
        'cs_gateway_tokens_total{kind="completion",model="qwen2.5-vl-7b"} 10.0',
        'cs_gateway_tokens_total{kind="completion",model="support-assistant"} 80.0',
        'cs_gateway_tokens_total{kind="prompt",model=""} 0.0',
        'cs_gateway_tokens_total{kind="prompt",model="qwen2.5-vl-7b"} 50.0',
        'cs_gateway_tokens_total{kind="prompt",model="support-assistant"} 1830.0',
    ]
    assert "made-up" not in body


def test_it_reports_the_gateways_times_to_first_token_by_mode(client: Client) -> None:
    for first_token_ms in (80, 400, 2500):
        gateway_requests(first_token_ms=first_token_ms)
    gateway_requests(mode="proxy", model="qwen2.5-vl-7b", first_token_ms=12000)
    # Refused before the model: no first token, not in the histogram.
    gateway_requests(status_code=429, error_code="rate_limit_exceeded")

    body = metrics_body(client)

    histogram = [line for line in body.splitlines() if line.startswith("cs_gateway_first_token_seconds")]
    assert histogram == [
        'cs_gateway_first_token_seconds_bucket{le="0.1",mode="assistant"} 1.0',
        'cs_gateway_first_token_seconds_bucket{le="0.25",mode="assistant"} 1.0',
        'cs_gateway_first_token_seconds_bucket{le="0.5",mode="assistant"} 2.0',
        'cs_gateway_first_token_seconds_bucket{le="1.0",mode="assistant"} 2.0',
        'cs_gateway_first_token_seconds_bucket{le="2.0",mode="assistant"} 2.0',
        'cs_gateway_first_token_seconds_bucket{le="3.0",mode="assistant"} 3.0',
        'cs_gateway_first_token_seconds_bucket{le="5.0",mode="assistant"} 3.0',
        'cs_gateway_first_token_seconds_bucket{le="10.0",mode="assistant"} 3.0',
        'cs_gateway_first_token_seconds_bucket{le="20.0",mode="assistant"} 3.0',
        'cs_gateway_first_token_seconds_bucket{le="30.0",mode="assistant"} 3.0',
        'cs_gateway_first_token_seconds_bucket{le="+Inf",mode="assistant"} 3.0',
        'cs_gateway_first_token_seconds_count{mode="assistant"} 3.0',
        'cs_gateway_first_token_seconds_sum{mode="assistant"} 2.98',
        'cs_gateway_first_token_seconds_bucket{le="0.1",mode="proxy"} 0.0',
        'cs_gateway_first_token_seconds_bucket{le="0.25",mode="proxy"} 0.0',
        'cs_gateway_first_token_seconds_bucket{le="0.5",mode="proxy"} 0.0',
        'cs_gateway_first_token_seconds_bucket{le="1.0",mode="proxy"} 0.0',
        'cs_gateway_first_token_seconds_bucket{le="2.0",mode="proxy"} 0.0',
        'cs_gateway_first_token_seconds_bucket{le="3.0",mode="proxy"} 0.0',
        'cs_gateway_first_token_seconds_bucket{le="5.0",mode="proxy"} 0.0',
        'cs_gateway_first_token_seconds_bucket{le="10.0",mode="proxy"} 0.0',
        'cs_gateway_first_token_seconds_bucket{le="20.0",mode="proxy"} 1.0',
        'cs_gateway_first_token_seconds_bucket{le="30.0",mode="proxy"} 1.0',
        'cs_gateway_first_token_seconds_bucket{le="+Inf",mode="proxy"} 1.0',
        'cs_gateway_first_token_seconds_count{mode="proxy"} 1.0',
        'cs_gateway_first_token_seconds_sum{mode="proxy"} 12.0',
    ]


def test_it_reads_the_gateways_figures_in_two_queries_however_many_rows(
    django_assert_num_queries: Any,
) -> None:
    from cs_platform.metrics import GatewayCollector

    gateway_requests(20, first_token_ms=300, prompt_tokens=10, completion_tokens=2)
    gateway_requests(5, mode="proxy", model="qwen2.5-vl-7b", status_code=502, error_code="upstream_error")

    with django_assert_num_queries(2):
        families = list(GatewayCollector().collect())

    assert [family.name for family in families] == [
        "cs_gateway_requests",
        "cs_gateway_tokens",
        "cs_gateway_first_token_seconds",
    ]


def test_it_reports_no_gateway_series_before_any_request(client: Client) -> None:
    body = metrics_body(client)

    assert "# TYPE cs_gateway_requests_total counter" in body
    assert "cs_gateway_requests_total{" not in body
    assert "cs_gateway_tokens_total{" not in body
    assert "cs_gateway_first_token_seconds_bucket" not in body
