"""Structured logs: one line per record (JSON, or plain for a person at a terminal) with a request id.

Every logger writes through the handlers in settings.LOGGING, Django's, Celery's and ours alike, so
the format is decided there once (LOG_FORMAT). A record's structured fields are its `extra=` values
and the context bound with `bound_context` (structlog.contextvars: it follows async code, and
`sync_to_async` threads, of the request or websocket frame that bound it). `ContextFilter` copies the
context onto the record before the PII filter runs, so that the masking sees every field of the line.

The request id: an HTTP request takes a sane X-Request-ID from its caller (a front proxy's), or gets
a new one, and answers with it (`RequestIdMiddleware`); a customer's websocket frame gets one of its
own. A reply queued for a message carries its message's id to the Celery task (or the in-process
generation), which binds it again; the inference client sends it on to the server as X-Request-ID.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from celery.signals import setup_logging
from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponseBase

from cs_platform.client_ip import client_ip_from_request
from cs_platform.pii import record_fields

__all__ = [
    "REQUEST_ID_HEADER",
    "ContextFilter",
    "JsonFormatter",
    "PlainFormatter",
    "RequestIdMiddleware",
    "bound_context",
    "request_id_get",
    "request_id_new",
    "request_id_or_new",
]

REQUEST_ID_HEADER = "X-Request-ID"
# What a caller's request id may be: a token (a UUID, a proxy's hex id), never free text for a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# Requests answered for machines every few seconds: their access lines are DEBUG, not INFO.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def request_id_new() -> str:
    """A fresh request id (32 hex digits)."""
    return uuid.uuid4().hex


def request_id_or_new(candidate: str | None) -> str:
    """`candidate` if it is a sane token (letters, digits, . _ : -, up to 128), else a fresh id."""
    if candidate and _SANE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return request_id_new()


def request_id_get() -> str | None:
    """The request id bound in the current context, if any."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


@contextmanager
def bound_context(**fields: Any) -> Iterator[None]:
    """Bind `fields` to every log line written in this context until the block ends (then unbound)."""
    with structlog.contextvars.bound_contextvars(**fields):
        yield


class ContextFilter(logging.Filter):
    """Copy the bound context (request id, conversation…) onto each record, before the PII filter.

    On the handler, ahead of `pii`: the masking then sees the context as fields of the record, and the
    formatter needs no context of its own. A field given in `extra=` wins over the context's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in structlog.contextvars.get_contextvars().items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def _add_record_fields(_logger: Any, _method: str, event_dict: Any) -> Any:
    """The record's fields and its (already masked) traceback, into the event dict."""
    record: logging.LogRecord = event_dict["_record"]
    for key, value in record_fields(record).items():
        event_dict.setdefault(key, value)
    # The PII filter formatted and masked the traceback into exc_text: that text, never exc_info again.
    event_dict.pop("exc_info", None)
    if record.exc_text:
        event_dict["exception"] = record.exc_text
    return event_dict


_PRE_CHAIN: list[Any] = [
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    _add_record_fields,
]


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, event and the fields."""

    def __init__(self) -> None:
        super().__init__(
            foreign_pre_chain=_PRE_CHAIN,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(ensure_ascii=False, default=str),
            ],
        )


class PlainFormatter(structlog.stdlib.ProcessorFormatter):
    """One readable line per record, fields as key=value after the message (the embedded `make run`)."""

    def __init__(self) -> None:
        super().__init__(
            foreign_pre_chain=_PRE_CHAIN,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0),
            ],
        )


access_logger = logging.getLogger("cs_platform.access")


class RequestIdMiddleware:
    """Give each HTTP request its id (the caller's sane X-Request-ID, else a new one), bind it to every
    line logged while it is handled, answer with it, and write one access line when it is done.

    Right after SecurityMiddleware, so that the lines of the middlewares below it carry the id too.
    Sync and async alike: under ASGI it adds no thread hop (and each request has a context of its own).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        request_id, started = self._start(request)
        response: HttpResponseBase = self.get_response(request)
        self._finish(request, response, request_id, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        request_id, started = self._start(request)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        response = await get_response(request)
        self._finish(request, response, request_id, started)
        return response

    @staticmethod
    def _start(request: HttpRequest) -> tuple[str, float]:
        request_id = request_id_or_new(request.headers.get(REQUEST_ID_HEADER))
        # Bound until the response is closed (`_request_id_unbind`), not only while the middleware runs:
        # Django logs a 4xx or 5xx answer (django.request) after the middlewares have returned.
        structlog.contextvars.bind_contextvars(request_id=request_id)
        return request_id, time.monotonic()

    @staticmethod
    def _finish(request: HttpRequest, response: HttpResponseBase, request_id: str, started: float) -> None:
        response[REQUEST_ID_HEADER] = request_id
        fields = {
            "method": request.method,
            # The path only: a query string may carry anything (the PII filter would mask it anyway).
            "path": request.path,
            "status_code": response.status_code,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "client_ip": client_ip_from_request(request),
        }
        level = logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO
        access_logger.log(level, "http.request", extra=fields)


@setup_logging.connect
def _celery_keeps_django_logging(**kwargs: Any) -> None:
    """Celery's worker and beat configure no logging of their own: Django's LOGGING stays, its JSON
    lines and PII filter included (Celery would otherwise replace the root logger's handlers).

    Connected when this module is imported, which Django's logging configuration does in django.setup();
    Celery's fix-up for Django runs that before the worker or beat sets up its logging.
    """


@receiver(request_finished, dispatch_uid="cs_platform.logs.request_id_unbind")
def _request_id_unbind(**kwargs: Any) -> None:
    """The request's id ends with its response: a thread that serves the next request (WSGI, the test
    client) must not write it on lines that are not that request's."""
    structlog.contextvars.unbind_contextvars("request_id")
