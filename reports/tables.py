"""The reports page's tables, defined once for the page and for their CSV exports.

A table is a title, columns and rows of raw values (counts, rates as fractions, seconds, None for
"not measured"). The page formats each value by its column's kind; the CSV writes it raw (a rate as
0.2222, an empty cell for None), so a spreadsheet can compute with it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cs_platform.pii import pii_mask
from reports.selectors import CSAT_SCORES, Ranked, Report

__all__ = ["TABLES", "Column", "Table", "display", "duration_text", "table_csv", "tables_build"]


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    # How the page shows a value: "count", "rate" (a fraction as a percentage), "ms", "seconds",
    # "average" (two decimals) or "text".
    kind: str = "count"


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    columns: tuple[Column, ...]
    rows: list[tuple[Any, ...]]


def duration_text(seconds: int | None) -> str:
    """Seconds as a person reads them: "45 s", "3 min 20 s", "2 h 5 min", "1 d 3 h"; "–" for None."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds} s"
    minutes, second = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {second} s" if second else f"{minutes} min"
    hours, minute = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minute} min" if minute else f"{hours} h"
    days, hour = divmod(hours, 24)
    return f"{days} d {hour} h" if hour else f"{days} d"


def display(value: Any, kind: str) -> str:
    """A value as the page shows it in a column of this kind."""
    if value is None:
        return "–"
    if kind == "rate":
        return f"{value * 100:.1f} %"
    if kind == "ms":
        return f"{value:,} ms"
    if kind == "seconds":
        return duration_text(value)
    if kind == "average":
        return f"{value:.2f}"
    if kind == "count":
        return f"{value:,}"
    return pii_mask(str(value))


def _ranked_rows(rows: Sequence[Ranked], *, variants: bool = False) -> list[tuple[Any, ...]]:
    if variants:
        return [(row.label, row.count, row.share, " | ".join(row.variants)) for row in rows]
    return [(row.label, row.count, row.share) for row in rows]


_RANKED = (Column("count", "Count"), Column("share", "Share", "rate"))


def _daily(report: Report) -> Table:
    return Table(
        "daily",
        "Conversations per day",
        (
            Column("day", "Day", "text"),
            Column("conversations", "Conversations"),
            Column("with_customer_message", "With a question"),
            Column("ai_resolved", "Resolved by the AI"),
            Column("handoffs", "Handed off"),
            Column("unanswered", "Unanswered"),
            Column("thumbs_up", "Thumbs up"),
            Column("thumbs_down", "Thumbs down"),
            Column("csat_count", "CSAT ratings"),
            Column("csat_average", "CSAT average", "average"),
            Column("ttft_p50_ms", "First token p50", "ms"),
            Column("ttft_p95_ms", "First token p95", "ms"),
        ),
        [
            (
                day.day.isoformat(),
                day.conversations,
                day.with_customer_message,
                day.ai_resolved,
                day.handoffs,
                day.unanswered,
                day.thumbs_up,
                day.thumbs_down,
                day.csat_count,
                day.csat_average,
                day.ttft_p50_ms,
                day.ttft_p95_ms,
            )
            for day in report.days
        ],
    )


def _csat(report: Report) -> Table:
    distribution = report.summary.csat_distribution
    count = report.summary.csat_count
    return Table(
        "csat",
        "CSAT distribution",
        (Column("score", "Score", "text"), *_RANKED),
        [
            (score, distribution[str(score)], round(distribution[str(score)] / count, 4) if count else 0.0)
            for score in reversed(CSAT_SCORES)
        ],
    )


def _agent_times(report: Report) -> Table:
    return Table(
        "agent_times",
        "Agents' times",
        (
            Column("measure", "Measure", "text"),
            Column("tickets", "Tickets measured"),
            Column("p50_seconds", "Median (p50)", "seconds"),
            Column("p95_seconds", "p95", "seconds"),
        ),
        [
            ("First agent reply", *_timing_row(report.first_response)),
            ("Resolution", *_timing_row(report.resolution)),
        ],
    )


def _timing_row(timing: Any) -> tuple[Any, ...]:
    return (timing.count, timing.p50_seconds, timing.p95_seconds)


def _handoff_reasons(report: Report) -> Table:
    return Table(
        "handoff_reasons",
        "Handoff reasons",
        (Column("reason", "Reason", "text"), *_RANKED),
        _ranked_rows(report.handoff_reasons),
    )


def _cited_articles(report: Report) -> Table:
    return Table(
        "cited_articles",
        "Most cited articles",
        (
            Column("article", "Article", "text"),
            Column("count", "Replies citing it"),
            Column("share", "Share", "rate"),
        ),
        _ranked_rows(report.cited_articles),
    )


def _unanswered_questions(report: Report) -> Table:
    return Table(
        "unanswered_questions",
        "Top unanswered questions",
        (
            Column("question", "Question", "text"),
            Column("count", "Unanswered replies"),
            Column("share", "Share", "rate"),
            Column("variants", "Asked also as", "text"),
        ),
        _ranked_rows(report.unanswered_questions, variants=True),
    )


def _review_verdicts(report: Report) -> Table:
    return Table(
        "review_verdicts",
        "Review verdicts",
        (Column("verdict", "Verdict", "text"), *_RANKED),
        _ranked_rows(report.review_verdicts),
    )


# Name -> how to build it, in the page's order; the names are the CSV exports' addresses.
TABLES: dict[str, Callable[[Report], Table]] = {
    "daily": _daily,
    "csat": _csat,
    "handoff_reasons": _handoff_reasons,
    "agent_times": _agent_times,
    "cited_articles": _cited_articles,
    "unanswered_questions": _unanswered_questions,
    "review_verdicts": _review_verdicts,
}


def tables_build(report: Report) -> dict[str, Table]:
    return {name: build(report) for name, build in TABLES.items()}


# A cell starting with one of these is a formula to a spreadsheet; customers' words never run as one.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any, kind: str) -> Any:
    if value is None:
        return ""
    if kind == "text" and isinstance(value, str):
        value = pii_mask(value)  # customers' own words: no phone, ID, card or e-mail leaves in a file
        if value.startswith(_FORMULA_STARTS):
            return "'" + value
    return value


def table_csv(table: Table) -> str:
    """The table as CSV: its column keys as the header, raw values, None as an empty cell, and text
    that a spreadsheet would take for a formula quoted with a leading apostrophe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([column.key for column in table.columns])
    kinds = [column.kind for column in table.columns]
    for row in table.rows:
        writer.writerow([_cell(value, kind) for value, kind in zip(row, kinds, strict=True)])
    return buffer.getvalue()
