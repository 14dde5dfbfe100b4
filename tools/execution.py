"""Running a business tool: the model's arguments checked, the URL filled in, the HTTP call made.

Every way a call can go wrong ends in a `ToolOutcome` with a sentence the model can pass on, never an
exception and never a hang: arguments that are not JSON or do not match the schema (nothing is sent),
a customer tool without a verified customer (refused), no answer within the tool's timeout (the whole
call, however slowly the server trickles its bytes), an HTTP error, an answer that is not UTF-8. An
answer longer than the tool's limit is cut there and the model is told so.

The URL's scheme and host are the template's own (tools/models.py refuses placeholders there); the
arguments and the verified customer's id are URL-encoded into the path and the query only, dots
included, so that "../" cannot climb out of the path either. Redirects are not followed: a redirect
could send the secret headers to another host. The headers (the API's secrets) are never logged.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from jsonschema import Draft202012Validator

from cs_platform.logs import REQUEST_ID_HEADER, request_id_get
from tools.models import CUSTOMER_ID_PLACEHOLDER, URL_PLACEHOLDER, Tool, ToolCall, url_template_query_names

__all__ = [
    "ToolOutcome",
    "tool_run",
    "tools_offered",
    "url_expand",
]

logger = logging.getLogger(__name__)

Outcome = ToolCall.Outcome
# How much of an error answer the model is shown: enough for "order not found", not a stack trace.
ERROR_EXCERPT_CHARACTERS = 500
# At most this many schema violations are named, so that a wild call does not fill the prompt.
MAX_ERRORS_NAMED = 5
USER_AGENT = "cs-platform-tools/1"


@dataclass(frozen=True)
class ToolOutcome:
    """What came of one call: its outcome, the HTTP status (if an answer came), and what the model reads."""

    outcome: str
    status_code: int | None
    content_for_model: str
    duration_ms: int
    truncated: bool = False


class _ArgumentsInvalid(Exception):
    """The arguments cannot fill the URL; the message is for the model."""


def _milliseconds_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _arguments_parse(arguments_json: str) -> dict[str, Any]:
    # Some models send "" for a tool without parameters.
    if not arguments_json.strip():
        return {}
    try:
        arguments = json.loads(arguments_json)
    except json.JSONDecodeError as error:
        raise _ArgumentsInvalid(f"The arguments are not valid JSON: {error}.") from None
    if not isinstance(arguments, dict):
        raise _ArgumentsInvalid("The arguments must be a JSON object of the tool's parameters.")
    return arguments


def _arguments_check(tool: Tool, arguments: dict[str, Any]) -> None:
    validator = Draft202012Validator(tool.parameters, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(arguments), key=lambda error: (list(error.path), error.message))
    if not errors:
        return
    named = "; ".join(f"at {error.json_path}: {error.message}" for error in errors[:MAX_ERRORS_NAMED])
    more = f" (and {len(errors) - MAX_ERRORS_NAMED} more)" if len(errors) > MAX_ERRORS_NAMED else ""
    raise _ArgumentsInvalid(f"The arguments do not match the tool's parameters: {named}{more}.")


def _url_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise _ArgumentsInvalid(f"The argument {name} goes into the URL: it must be text or a number.")


def url_expand(template: str, arguments: dict[str, Any], *, customer_id: str | None) -> tuple[str, set[str]]:
    """The URL of a call, and the names of the arguments it used: each placeholder URL-encoded in place.

    The template is split first and only its path and query are filled, so that no value can change
    the scheme or the host; "/" and "." are encoded too, so a value is one path segment, never "..".
    """
    parts = urlsplit(template)
    used: set[str] = set()

    def fill(component: str, *, in_path: bool) -> str:
        def value_for(match: Any) -> str:
            name = match.group(1)
            if name == CUSTOMER_ID_PLACEHOLDER:
                if customer_id is None:
                    raise _ArgumentsInvalid("This tool needs a verified customer.")
                text = customer_id
            elif name in arguments:
                used.add(name)
                text = _url_text(name, arguments[name])
            else:
                raise _ArgumentsInvalid(f"The argument {name} is needed (it goes into the URL).")
            encoded = quote(text, safe="")
            return encoded.replace(".", "%2E") if in_path else encoded

        return str(URL_PLACEHOLDER.sub(value_for, component))

    url = urlunsplit(
        (parts.scheme, parts.netloc, fill(parts.path, in_path=True), fill(parts.query, in_path=False), "")
    )
    # Belt and braces: the template check already forbids placeholders before the path. Both parsed by
    # httpx, so that a default port written out (:443) or a host in capitals compares equal.
    expanded, origin = httpx.URL(url), httpx.URL(urlunsplit((parts.scheme, parts.netloc, "/", "", "")))
    if (expanded.scheme, expanded.host, expanded.port) != (origin.scheme, origin.host, origin.port):
        raise _ArgumentsInvalid("The arguments would change the tool's host.")
    return url, used


def _query_value(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(item, str | int | float | bool) or item is None for item in value
    ):
        return [_query_value(item) for item in value]
    # Numbers, booleans and null as JSON writes them (true, not True); objects as JSON text.
    return json.dumps(value, ensure_ascii=False)


async def _body_read(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The answer's first `limit` bytes (decompressed), and whether there was more; the rest is not read."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


def _body_decode(body: bytes, *, truncated: bool) -> str:
    # A cut answer may end inside a character: only a sequence left incomplete at the end is dropped.
    return codecs.getincrementaldecoder("utf-8")().decode(body, final=not truncated)


def _error_excerpt(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    cut = text[:ERROR_EXCERPT_CHARACTERS]
    return f" Its answer: {cut}{'…' if len(text) > ERROR_EXCERPT_CHARACTERS else ''}"


async def _call(tool: Tool, url: str, arguments: dict[str, Any]) -> tuple[str, int | None, str, bool]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json, text/*;q=0.9, */*;q=0.1"}
    request_id = request_id_get()
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    headers.update(tool.headers)
    request: dict[str, Any] = {"headers": headers}
    if tool.sends_body:
        request["json"] = arguments
    elif arguments:
        # Appended to the template's own query (httpx's params= would replace it).
        query = str(httpx.QueryParams({name: _query_value(value) for name, value in arguments.items()}))
        url += ("&" if urlsplit(url).query else "?") + query
    # trust_env off: the company's own API is reached directly, not through a proxy from the environment.
    async with (
        httpx.AsyncClient(timeout=tool.timeout_seconds, follow_redirects=False, trust_env=False) as client,
        client.stream(tool.method, url, **request) as response,
    ):
        body, truncated = await _body_read(response, tool.max_response_bytes)
    status = response.status_code
    if not 200 <= status < 300:
        sentence = f"The tool failed: its API answered HTTP {status} {response.reason_phrase}.".replace(
            " .", "."
        )
        return Outcome.ERROR, status, sentence + _error_excerpt(body), False
    try:
        text = _body_decode(body, truncated=truncated)
    except UnicodeDecodeError:
        return (
            Outcome.ERROR,
            status,
            "The tool failed: its API answered in an encoding other than UTF-8.",
            False,
        )
    if truncated:
        text += (
            f"\n[The answer was longer than {tool.max_response_bytes} bytes: only its beginning is above.]"
        )
    elif not text.strip():
        text = f"The call succeeded (HTTP {status}) with an empty answer."
    return Outcome.OK, status, text, truncated


_Ended = tuple[str, str, int | None, bool]  # outcome, content for the model, status code, truncated


async def _tool_run_steps(tool: Tool, arguments_json: str, customer_id: str | None) -> _Ended:
    if tool.needs_verified_customer and not customer_id:
        return (
            Outcome.REFUSED,
            "This tool looks up a customer's own data and this customer is not verified: it was not run. "
            "Ask the customer to sign in on the website, or offer to hand over to a person.",
            None,
            False,
        )
    try:
        arguments = _arguments_parse(arguments_json)
        _arguments_check(tool, arguments)
        url, used = url_expand(tool.url, arguments, customer_id=customer_id)
    except _ArgumentsInvalid as error:
        return Outcome.INVALID_ARGUMENTS, str(error), None, False
    remaining = {name: value for name, value in arguments.items() if name not in used}
    fixed = sorted(url_template_query_names(tool.url) & set(remaining)) if not tool.sends_body else []
    if fixed:
        # An argument the schema did not declare (it allows any) may not repeat one the URL fixes either.
        return (
            Outcome.INVALID_ARGUMENTS,
            f"The argument {fixed[0]} is not one of the tool's parameters: the tool's URL sets it.",
            None,
            False,
        )
    try:
        async with asyncio.timeout(tool.timeout_seconds):
            outcome, status_code, content, truncated = await _call(tool, url, remaining)
    except (TimeoutError, httpx.TimeoutException):
        sentence = f"The tool did not answer within {tool.timeout_seconds} seconds: it may be busy."
        return Outcome.TIMEOUT, sentence, None, False
    except httpx.HTTPError as error:
        # The kind of failure only (connection refused, name not found): never the URL or the headers.
        return Outcome.ERROR, f"The tool could not be reached ({type(error).__name__}).", None, False
    return outcome, content, status_code, truncated


async def tool_run(tool: Tool, arguments_json: str, *, customer_id: str | None) -> ToolOutcome:
    """Run one call of `tool` with the model's arguments (JSON text) and the verified customer's id."""
    started = time.monotonic()
    try:
        outcome, content, status_code, truncated = await _tool_run_steps(tool, arguments_json, customer_id)
    except Exception:
        # A fault of ours must still end the call with an outcome: the reply goes on without the tool.
        logger.exception("Tool %s crashed", tool.name, extra={"tool": tool.name})
        outcome, content, status_code, truncated = (
            Outcome.ERROR,
            "The tool failed: something went wrong on our side.",
            None,
            False,
        )
    result = ToolOutcome(outcome, status_code, content, _milliseconds_since(started), truncated)
    # The tool's name and what came of it: never its URL, arguments or headers.
    logger.info(
        "Tool %s: %s",
        tool.name,
        outcome,
        extra={
            "tool": tool.name,
            "outcome": outcome,
            "status_code": status_code,
            "duration_ms": result.duration_ms,
        },
    )
    return result


def _description(tool: Tool, locale: str) -> str:
    chinese = locale.lower().startswith("zh")
    first, second = (
        (tool.description_zh_hans, tool.description_en)
        if chinese
        else (tool.description_en, tool.description_zh_hans)
    )
    return first.strip() or second.strip()


def tools_offered(*, channel: str, customer_verified: bool, locale: str) -> list[dict[str, Any]]:
    """The OpenAI `tools` entries for a conversation: its channel's enabled tools, customer tools only
    when the customer is verified, each described in the conversation's language."""
    offered = []
    # Filtered here, not with a JSON lookup: the embedded default's SQLite has no JSON containment.
    for tool in Tool.objects.filter(enabled=True).order_by("name"):
        if channel not in tool.channels or (tool.needs_verified_customer and not customer_verified):
            continue
        offered.append(
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": _description(tool, locale),
                    "parameters": tool.parameters,
                },
            }
        )
    return offered
