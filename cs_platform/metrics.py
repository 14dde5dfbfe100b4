"""GET /metrics: Prometheus figures read from the database at scrape time, so they cover every
web process and worker, and the inference servers' state as this process sees it; reachable only
from METRICS_ALLOWED_IPS or with METRICS_TOKEN, or from the addresses of metrics IP rules when there are
any (access/rules.py)."""

from __future__ import annotations

import hmac
import ipaddress
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db.models import Avg, Case, CharField, Count, F, Q, Sum, Value, When
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from access.middleware import request_verdict
from access.rules import Reason, Scope
from conversations.models import Conversation, Message, SatisfactionRating, Ticket
from cs_platform.client_ip import client_ip_from_request
from cs_platform.ratelimit import RATE_LIMIT_UNAVAILABLE
from gateway.models import ApiRequest
from inference.client import ServerState, server_registry

# Seconds: what a customer notices (under 0.5 s feels instant, over 5 s needs the "thinking" line).
FIRST_TOKEN_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
# Celery's default queue, the one every task of the platform goes to.
CELERY_QUEUE = "celery"


class PlatformCollector(Collector):
    """Counts of conversations, replies, tickets and satisfaction, straight from the database."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        conversations = GaugeMetricFamily("cs_conversations", "Conversations by status.", labels=["status"])
        for row in Conversation.objects.values("status").annotate(total=Count("id")):
            conversations.add_metric([row["status"]], row["total"])
        yield conversations

        replies = GaugeMetricFamily(
            "cs_replies", "Assistant replies by status and error code.", labels=["status", "error_code"]
        )
        for row in (
            Message.objects.filter(role=Message.Role.ASSISTANT)
            .values("status", "error_code")
            .annotate(total=Count("id"))
        ):
            replies.add_metric([row["status"], row["error_code"]], row["total"])
        yield replies

        since = timezone.now() - timedelta(hours=1)
        recent = Message.objects.filter(
            role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE, completed_at__gte=since
        ).aggregate(first_token=Avg("first_token_latency_ms"), total=Avg("total_latency_ms"))
        latency = GaugeMetricFamily(
            "cs_reply_latency_seconds_avg_1h", "Mean reply latency over the last hour.", labels=["kind"]
        )
        latency.add_metric(["first_token"], (recent["first_token"] or 0) / 1000)
        latency.add_metric(["total"], (recent["total"] or 0) / 1000)
        yield latency

        tickets = GaugeMetricFamily("cs_tickets", "Handoff tickets by status.", labels=["status"])
        for row in Ticket.objects.values("status").annotate(total=Count("id")):
            tickets.add_metric([row["status"]], row["total"])
        yield tickets

        yield from self._first_tokens_and_tokens()

        handoffs = GaugeMetricFamily(
            "cs_handoffs", "Handoff tickets by what opened them (the trigger).", labels=["trigger"]
        )
        for trigger_row in Ticket.objects.order_by().values("trigger").annotate(total=Count("id")):
            handoffs.add_metric([trigger_row["trigger"]], trigger_row["total"])
        yield handoffs

        csat = SatisfactionRating.objects.aggregate(average=Avg("score"), total=Count("id"))
        yield GaugeMetricFamily(
            "cs_csat_average", "Mean satisfaction score (1–5).", value=csat["average"] or 0
        )
        yield GaugeMetricFamily("cs_csat_ratings", "Satisfaction ratings given.", value=csat["total"])

    @staticmethod
    def _first_tokens_and_tokens() -> Iterator[Any]:
        """The model's times to first token as a histogram, and the tokens it read and wrote, over
        every model reply kept (one query: a count per bucket and two sums)."""
        replies = Message.objects.filter(role=Message.Role.ASSISTANT, source=Message.Source.MODEL)
        buckets = {
            f"le_{index}": Count("id", filter=Q(first_token_latency_ms__lte=int(bound * 1000)))
            for index, bound in enumerate(FIRST_TOKEN_BUCKETS_SECONDS)
        }
        row = replies.aggregate(
            **buckets,
            measured=Count("id", filter=Q(first_token_latency_ms__isnull=False)),
            total_ms=Sum("first_token_latency_ms"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
        )
        histogram = HistogramMetricFamily(
            "cs_reply_first_token_seconds", "The model's time to first token, over every model reply kept."
        )
        histogram.add_metric(
            [],
            [
                *(
                    (str(bound), row[f"le_{index}"])
                    for index, bound in enumerate(FIRST_TOKEN_BUCKETS_SECONDS)
                ),
                ("+Inf", row["measured"]),
            ],
            sum_value=(row["total_ms"] or 0) / 1000,
        )
        yield histogram
        tokens = CounterMetricFamily(
            "cs_model_tokens", "Tokens the model read (prompt) and wrote (completion).", labels=["kind"]
        )
        tokens.add_metric(["prompt"], row["prompt"] or 0)
        tokens.add_metric(["completion"], row["completion"] or 0)
        yield tokens


class GatewayCollector(Collector):
    """The gateway's kept requests (every call with a valid key): counts, tokens and times to first
    token, in two aggregate queries however many rows there are."""

    def collect(self) -> Iterator[Any]:
        # The model a caller asked for is a label only once it was recognised (a mode was chosen): a
        # refused name is the caller's free text, and each one would be a series of its own.
        model = Case(When(mode="", then=Value("")), default=F("model"), output_field=CharField())
        rows = (
            ApiRequest.objects.order_by()
            .annotate(model_label=model)
            .values("model_label", "mode", "status_code", "error_code")
            .annotate(total=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
        )
        requests = CounterMetricFamily(
            "cs_gateway_requests",
            "Gateway requests kept (with a valid key) by model, mode, HTTP status and error code.",
            labels=["model", "mode", "status", "error_code"],
        )
        tokens_by_model: dict[str, tuple[int, int]] = {}
        for row in rows:
            requests.add_metric(
                [row["model_label"], row["mode"], str(row["status_code"]), row["error_code"]], row["total"]
            )
            prompt, completion = tokens_by_model.get(row["model_label"], (0, 0))
            tokens_by_model[row["model_label"]] = (
                prompt + (row["prompt"] or 0),
                completion + (row["completion"] or 0),
            )
        yield requests
        tokens = CounterMetricFamily(
            "cs_gateway_tokens",
            "Tokens the gateway's requests read (prompt) and wrote (completion), by model.",
            labels=["model", "kind"],
        )
        for name, (prompt, completion) in sorted(tokens_by_model.items()):
            tokens.add_metric([name, "prompt"], prompt)
            tokens.add_metric([name, "completion"], completion)
        yield tokens
        yield self._first_tokens()

    @staticmethod
    def _first_tokens() -> HistogramMetricFamily:
        """Times to first token of the gateway's requests by mode, with the replies' buckets."""
        buckets = {
            f"le_{index}": Count("id", filter=Q(first_token_ms__lte=int(bound * 1000)))
            for index, bound in enumerate(FIRST_TOKEN_BUCKETS_SECONDS)
        }
        histogram = HistogramMetricFamily(
            "cs_gateway_first_token_seconds",
            "Time from a gateway request's arrival to its first token, by mode.",
            labels=["mode"],
        )
        rows: Iterable[Mapping[str, Any]] = (
            ApiRequest.objects.filter(first_token_ms__isnull=False)
            .order_by("mode")
            .values("mode")
            .annotate(**buckets, measured=Count("id"), total_ms=Sum("first_token_ms"))
        )
        for row in rows:
            histogram.add_metric(
                [row["mode"]],
                [
                    *(
                        (str(bound), row[f"le_{index}"])
                        for index, bound in enumerate(FIRST_TOKEN_BUCKETS_SECONDS)
                    ),
                    ("+Inf", row["measured"]),
                ],
                sum_value=(row["total_ms"] or 0) / 1000,
            )
        return histogram


class QueueCollector(Collector):
    """How many tasks wait in the Celery queue on Redis (none is collected with the in-memory broker
    of the embedded default, where replies run in-process and nothing queues)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        broker = settings.CELERY_BROKER_URL
        if not broker.startswith(("redis://", "rediss://", "unix://")):
            return
        depth = GaugeMetricFamily("cs_queue_depth", "Tasks waiting in the Celery queue.", labels=["queue"])
        try:
            client = redis.Redis.from_url(broker, socket_connect_timeout=1, socket_timeout=1)
            depth.add_metric([CELERY_QUEUE], client.llen(CELERY_QUEUE))
        except (redis.RedisError, OSError):
            # Redis away: no figure rather than a wrong 0 (its absence is what an alert looks for).
            return
        yield depth


class RequestCollector(Collector):
    """HTTP requests this process answered, by method and status class (per process: scrape each)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily(
            "cs_http_requests", "HTTP requests this process answered.", labels=["method", "status"]
        )
        with _requests_lock:
            for (method, status), count in sorted(_requests.items()):
                requests.add_metric([method, status], count)
        yield requests


_requests: dict[tuple[str, str], int] = {}
_requests_lock = threading.Lock()
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class RequestCountMiddleware:
    """Counts every HTTP response by method and status class (2xx, 3xx, 4xx, 5xx) for /metrics."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        method = request.method if request.method in _METHODS else "other"
        key = (str(method), f"{response.status_code // 100}xx")
        with _requests_lock:
            _requests[key] = _requests.get(key, 0) + 1
        return response


class InferenceServerCollector(Collector):
    """Each configured inference server's state in this process's fail-over registry.

    Labelled by position in INFERENCE_BASE_URL and `host:port`: never the URL's credentials or the
    API key. A web process learns of failures from its `/readyz` probes and the replies it generates
    itself (all of them in the embedded default); a Celery worker's view is in its log.
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["position", "server"]
        healthy = GaugeMetricFamily(
            "cs_inference_server_healthy",
            "1 if the server is in rotation, 0 while it cools down.",
            labels=labels,
        )
        cooldown = GaugeMetricFamily(
            "cs_inference_server_cooldown_remaining_seconds",
            "Seconds until a failed server is back in rotation.",
            labels=labels,
        )
        failures = GaugeMetricFamily(
            "cs_inference_server_consecutive_failures",
            "Failures since the server last answered.",
            labels=labels,
        )
        last_failure = GaugeMetricFamily(
            "cs_inference_server_last_failure",
            "1 for the kind of the server's latest failure (connect, timeout, closed, server_error, ...).",
            labels=[*labels, "kind"],
        )
        now = server_registry.clock()
        for position, health in enumerate(server_registry.snapshot(settings.INFERENCE_BASE_URLS), 1):
            values = [str(position), health.label]
            healthy.add_metric(values, 1 if health.state(now) is ServerState.HEALTHY else 0)
            cooldown.add_metric(values, health.cooldown_remaining(now))
            failures.add_metric(values, health.consecutive_failures)
            if health.last_failure is not None:
                last_failure.add_metric([*values, health.last_failure.value], 1)
        yield from (healthy, cooldown, failures, last_failure)


def _allowed(request: HttpRequest) -> bool:
    """The address is admitted by a metrics allow rule, or is in METRICS_ALLOWED_IPS, or the token is right.

    The IP rules' middleware (access/middleware.py) has already refused a metrics deny rule's address
    (token or not) and, when metrics allow rules exist, any address they do not match: those rules then
    replace METRICS_ALLOWED_IPS. With no metrics allow rule, METRICS_ALLOWED_IPS and METRICS_TOKEN are
    the metrics scope's default, as before the rules existed.
    """
    verdict = request_verdict(request, scope=Scope.METRICS)
    if not verdict.admitted:
        return False
    if verdict.reason is Reason.ALLOW_RULE:
        return True
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header, f"Bearer {token}"):
        return True
    address = client_ip_from_request(request)
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_IPS)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of the platform's figures."""
    if not _allowed(request):
        return JsonResponse(
            {
                "code": "forbidden",
                "detail": "Metrics are reachable from METRICS_ALLOWED_IPS or with METRICS_TOKEN.",
            },
            status=403,
        )
    registry = CollectorRegistry()
    registry.register(PlatformCollector())
    registry.register(GatewayCollector())
    registry.register(InferenceServerCollector())
    registry.register(QueueCollector())
    registry.register(RequestCollector())
    # Counted in this process: the rate-limit checks let through while the cache was unreachable.
    registry.register(RATE_LIMIT_UNAVAILABLE)
    return HttpResponse(generate_latest(registry), content_type="text/plain; version=0.0.4; charset=utf-8")
