"""GET /metrics: Prometheus figures read from the database at scrape time, so they cover every
web process and worker, and the inference servers' state as this process sees it; reachable only
from METRICS_ALLOWED_IPS or with METRICS_TOKEN, or from the addresses of metrics IP rules when there are
any (access/rules.py)."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Avg, Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from access.middleware import request_verdict
from access.rules import Reason, Scope
from conversations.models import Conversation, Message, SatisfactionRating, Ticket
from cs_platform.client_ip import client_ip_from_request
from cs_platform.ratelimit import RATE_LIMIT_UNAVAILABLE
from inference.client import ServerState, server_registry


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

        csat = SatisfactionRating.objects.aggregate(average=Avg("score"), total=Count("id"))
        yield GaugeMetricFamily(
            "cs_csat_average", "Mean satisfaction score (1–5).", value=csat["average"] or 0
        )
        yield GaugeMetricFamily("cs_csat_ratings", "Satisfaction ratings given.", value=csat["total"])


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
    registry.register(InferenceServerCollector())
    # Counted in this process: the rate-limit checks let through while the cache was unreachable.
    registry.register(RATE_LIMIT_UNAVAILABLE)
    return HttpResponse(generate_latest(registry), content_type="text/plain; version=0.0.4; charset=utf-8")
