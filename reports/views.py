"""The reports page for staff (/reports/) and its tables as CSV (/reports/export/<table>.csv).

Who may read: a Supervisor, a Manager or a superuser, as for /api/reports/summary. A visitor who is
not logged in is sent to the admin login and back; a logged-in person without the role gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_safe

from agents.permissions import user_is_supervisor
from reports import charts, selectors
from reports.api import MAX_RANGE_DAYS
from reports.tables import TABLES, Table, display, duration_text, table_csv, tables_build

DEFAULT_DAYS = 30
PRESETS = (("7 days", 7), ("30 days", 30), ("90 days", 90), ("365 days", 365))


class PeriodError(ValueError):
    """A start or end the page cannot use; its text is shown to the reader."""


@dataclass(frozen=True)
class Period:
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def query(self) -> str:
        return urlencode({"start": self.start.isoformat(), "end": self.end.isoformat()})


def _default_period() -> Period:
    today = selectors.today_get()
    return Period(start=today - timedelta(days=DEFAULT_DAYS - 1), end=today)


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise PeriodError(f"The {name} must be a day as YYYY-MM-DD, not “{value[:40]}”.") from error


def period_from(request: HttpRequest) -> Period:
    """The period in the query (?start=&end=), the last 30 days when neither is given."""
    start_text = request.GET.get("start", "").strip()
    end_text = request.GET.get("end", "").strip()
    if not start_text and not end_text:
        return _default_period()
    today = selectors.today_get()
    end = _day(end_text, "end") if end_text else today
    start = _day(start_text, "start") if start_text else end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise PeriodError("The start must not be after the end.")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise PeriodError(f"A period may span at most {MAX_RANGE_DAYS} days.")
    return Period(start=start, end=end)


def _allowed(request: HttpRequest) -> HttpResponse | None:
    """None for a reader with the role; the login page for a visitor; 403 for anyone else."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if not user_is_supervisor(request.user):
        raise PermissionDenied("Only people in the Supervisor or Manager group may read the reports.")
    return None


def _rate_text(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _cards(report: selectors.Report) -> list[dict[str, str]]:
    summary = report.summary
    csat = "–" if summary.csat_average is None else f"{summary.csat_average:.2f}"
    ttft = "–" if summary.ttft_p50_ms is None else f"{summary.ttft_p50_ms:,} / {summary.ttft_p95_ms:,} ms"
    first_response, resolution = report.first_response, report.resolution
    cards = [
        ("conversations", "Conversations", f"{summary.conversations:,}",
         f"{summary.with_customer_message:,} with a question"),
        ("ai_resolution_rate", "Resolved by the AI", _rate_text(summary.ai_resolution_rate),
         "answered, no person needed"),
        ("handoff_rate", "Handed off", _rate_text(summary.handoff_rate),
         f"{summary.handoffs:,} conversation{pluralize(summary.handoffs)} with a ticket"),
        ("unanswered_rate", "Unanswered", _rate_text(report.unanswered_rate),
         f"{summary.unanswered:,} conversation{pluralize(summary.unanswered)}"),
        ("csat_average", "CSAT average", csat,
         f"of 5, {summary.csat_count:,} rating{pluralize(summary.csat_count)}"),
        ("thumbs_up_ratio", "Thumbs up", _rate_text(report.thumbs_up_ratio),
         f"{summary.thumbs_up:,} up, {summary.thumbs_down:,} down"),
        ("ttft", "First token p50 / p95", ttft, "model replies"),
        ("first_response", "First agent reply p50 / p95",
         f"{duration_text(first_response.p50_seconds)} / {duration_text(first_response.p95_seconds)}",
         f"{first_response.count:,} ticket{pluralize(first_response.count)}"),
        ("resolution", "Resolution p50 / p95",
         f"{duration_text(resolution.p50_seconds)} / {duration_text(resolution.p95_seconds)}",
         f"{resolution.count:,} ticket{pluralize(resolution.count)}"),
        ("review_queue_open", "Review queue open", f"{summary.review_queue_open:,}",
         "rated badly, not reviewed yet"),
    ]  # fmt: skip
    return [
        {"name": name, "title": title, "value": value, "note": note} for name, title, value, note in cards
    ]


def _charts(report: selectors.Report) -> dict[str, Any]:
    labels = [day.day.strftime("%m-%d") for day in report.days]
    others = [max(0, d.conversations - d.ai_resolved - d.handoffs) for d in report.days]
    summary = report.summary
    return {
        "daily": charts.stacked_columns(
            labels=labels,
            series=[
                charts.Series("Resolved by the AI", "chart-a", [d.ai_resolved for d in report.days]),
                charts.Series("Handed off", "chart-b", [d.handoffs for d in report.days]),
                charts.Series("Other", "chart-c", others),
            ],
            label=f"Conversations per day: {summary.conversations} in {len(labels)} days",
        ),
        "ttft": charts.line_chart(
            labels=labels,
            series=[
                charts.Series("p50", "chart-a", [d.ttft_p50_ms for d in report.days]),
                charts.Series("p95", "chart-b", [d.ttft_p95_ms for d in report.days]),
            ],
            label="Time to first token per day, p50 and p95, in milliseconds",
            unit=" ms",
        ),
        "csat": charts.horizontal_bars(
            bars=[
                charts.Bar(
                    f"{score} ★",
                    summary.csat_distribution[str(score)],
                    f"{summary.csat_distribution[str(score)]:,}",
                )
                for score in reversed(selectors.CSAT_SCORES)
            ],
            label="CSAT distribution",
        ),
        "handoff_reasons": _bars(report.handoff_reasons, "Handoff reasons", "chart-b"),
        "review_verdicts": _bars(report.review_verdicts, "Review verdicts", "chart-b", quiet="open"),
    }


def _bars(rows: list[selectors.Ranked], label: str, css_class: str, *, quiet: str = "") -> Any:
    """Ranked rows as bars; the row keyed `quiet` (the open review items) in grey, apart from the rest."""
    return charts.horizontal_bars(
        bars=[
            charts.Bar(
                row.label,
                row.count,
                f"{row.count:,} ({row.share * 100:.0f} %)",
                css_class="chart-c" if quiet and row.key == quiet else "",
            )
            for row in rows
        ],
        label=label,
        css_class=css_class,
    )


def _shown(table: Table) -> dict[str, Any]:
    return {
        "name": table.name,
        "title": table.title,
        "columns": table.columns,
        "rows": [
            [
                (display(value, column.kind), column.kind)
                for value, column in zip(row, table.columns, strict=True)
            ]
            for row in table.rows
        ],
    }


@require_safe
def reports_page(request: HttpRequest) -> HttpResponse:
    refused = _allowed(request)
    if refused is not None:
        return refused
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Reports",
        "time_zone": settings.TIME_ZONE,
        "presets": [],
        "error": "",
    }
    today = selectors.today_get()
    context["presets"] = [
        {"label": label, "query": Period(start=today - timedelta(days=days - 1), end=today).query()}
        for label, days in PRESETS
    ]
    try:
        period = period_from(request)
    except PeriodError as error:
        context.update(error=str(error), start=request.GET.get("start", ""), end=request.GET.get("end", ""))
        return render(request, "reports/report.html", context, status=400)
    report = selectors.report_get(start=period.start, end=period.end)
    tables = tables_build(report)
    context.update(
        start=period.start.isoformat(),
        end=period.end.isoformat(),
        period=period,
        report=report,
        cards=_cards(report),
        charts=_charts(report),
        tables={name: _shown(table) for name, table in tables.items()},
        query=period.query(),
        summary_json=f"{reverse('reports-summary')}?{period.query()}",
        summary_csv=f"{reverse('reports-summary')}?{period.query()}&format=csv",
    )
    return render(request, "reports/report.html", context)


@require_safe
def reports_export(request: HttpRequest, table: str) -> HttpResponse:
    """GET /reports/export/<table>.csv?start=&end=: one of the page's tables as CSV."""
    refused = _allowed(request)
    if refused is not None:
        return refused
    if table not in TABLES:
        raise Http404(f"There is no table {table!r}; the tables are {', '.join(TABLES)}.")
    try:
        period = period_from(request)
    except PeriodError as error:
        return HttpResponse(str(error), status=400, content_type="text/plain; charset=utf-8")
    report = selectors.report_get(start=period.start, end=period.end)
    built = TABLES[table](report)
    response = HttpResponse(table_csv(built), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{table}-{period.start}-{period.end}.csv"'
    return response
