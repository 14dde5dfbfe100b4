"""The reports' API, under /api/reports/: the summary of a period as JSON or CSV (staff session)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from datetime import date
from typing import Any

from django.http import HttpResponse
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.permissions import AgentSessionAuthentication, StaffGroupPermission, user_is_supervisor
from conversations.api import ApiError
from reports import selectors

# A year and a leap day, with room for "the same month last year" comparisons; longer is refused.
MAX_RANGE_DAYS = 400
FORMATS = ("json", "csv")
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class ReportsPermission(StaffGroupPermission):
    """Logged in (else 403 `not_authenticated`, as the agent API) and a Supervisor, a Manager or a
    superuser (else 403 `permission_denied`): the agent console's own rule, one level up."""

    refusal_code = "permission_denied"
    refusal_detail = "Only people in the Supervisor or Manager group may read the reports."

    def admits(self, user: Any) -> bool:
        return user_is_supervisor(user)


class JsonOnlyNegotiation(BaseContentNegotiation):
    """JSON always, errors included: `?format=csv` is this API's own parameter, not DRF's renderer
    switch (which would answer 404 for a format it has no renderer for)."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type or "application/json"


def _day_param(request: Request, name: str) -> date:
    value = request.query_params.get(name, "")
    if not value:
        raise ApiError("invalid_date", f"{name} is required: a day as YYYY-MM-DD.")
    if not _ISO_DAY.fullmatch(value):
        raise ApiError("invalid_date", f"{name} must be a day as YYYY-MM-DD, not {value[:40]!r}.")
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise ApiError("invalid_date", f"{name} is not a real day: {value!r}.") from error


def summary_csv(summary: selectors.Summary) -> str:
    """A header row of the contract's keys and one row of values; the CSAT distribution as csat_1..csat_5,
    and null (no CSAT, no measured reply) as an empty cell."""
    data = summary.as_dict()
    header: list[str] = []
    values: list[Any] = []
    for key, value in data.items():
        if key == "csat_distribution":
            for score, count in value.items():
                header.append(f"csat_{score}")
                values.append(count)
            continue
        header.append(key)
        values.append("" if value is None else value)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerow(values)
    return buffer.getvalue()


class SummaryApi(APIView):
    """GET /api/reports/summary?start=YYYY-MM-DD&end=YYYY-MM-DD[&format=csv]."""

    authentication_classes = [AgentSessionAuthentication]
    permission_classes = [ReportsPermission]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnlyNegotiation

    def get(self, request: Request) -> Response | HttpResponse:
        start = _day_param(request, "start")
        end = _day_param(request, "end")
        if start > end:
            raise ApiError("invalid_range", "start must not be after end.")
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise ApiError("range_too_long", f"A period may span at most {MAX_RANGE_DAYS} days.")
        output = request.query_params.get("format", "json")
        if output not in FORMATS:
            raise ApiError("invalid_format", "format must be json or csv.")
        summary = selectors.summary_get(start=start, end=end)
        if output == "csv":
            response = HttpResponse(summary_csv(summary), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="summary-{start}-{end}.csv"'
            return response
        return Response(summary.as_dict())
