"""GET /metrics: Prometheus figures read from the database at scrape time, so they cover every
web process and worker; reachable only from METRICS_ALLOWED_IPS or with METRICS_TOKEN."""

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

from conversations.models import Conversation, Message, SatisfactionRating, Ticket
from cs_platform.client_ip import client_ip_from_request


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


def _allowed(request: HttpRequest) -> bool:
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
    return HttpResponse(generate_latest(registry), content_type="text/plain; version=0.0.4; charset=utf-8")
