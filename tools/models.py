"""Business tools and the record of every call the assistant made to one (DESIGN.md, Business tools).

A tool is one HTTP call to the company's own API, offered to the model through OpenAI tool calling.
Its URL is a template: `{param}` is filled from the model's arguments, `{customer_id}` only from the
verified customer, and neither may appear in the scheme or the host, so that no argument can send the
call (and its secret headers) anywhere else. The rules are checked here, on every save, so that admin
and `manage.py import_tools` refuse the same things.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from conversations.models import Conversation, Message

__all__ = [
    "CUSTOMER_ID_PLACEHOLDER",
    "TOOL_NAME_PATTERN",
    "URL_PLACEHOLDER",
    "Tool",
    "ToolCall",
    "default_channels",
    "headers_validate",
    "parameters_validate",
    "url_template_placeholders",
    "url_template_query_names",
    "url_template_validate",
]

CUSTOMER_ID_PLACEHOLDER = "customer_id"
# OpenAI's rule for a function's name (vLLM passes it on to the model's chat template as it is).
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
URL_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# RFC 9110 field names (a token); values are visible ASCII, spaces and tabs (what httpx sends as it
# is), never a line break.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
# What the HTTP client writes from the URL and the body: set by hand, they would contradict them.
_HEADERS_OF_THE_CALL = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_METHODS_WITH_BODY = ("POST", "PUT", "PATCH", "DELETE")


def default_channels() -> list[str]:
    """A new tool's channels: the web widget only (a gateway caller sees a tool when it is asked for)."""
    return [Conversation.Channel.WIDGET]


def url_template_placeholders(template: str) -> list[str]:
    """The `{name}` placeholders of a URL template, in order, each once."""
    return list(dict.fromkeys(URL_PLACEHOLDER.findall(template)))


def url_template_query_names(template: str) -> set[str]:
    """The names of the query parameters a URL template sets itself (`?customer={customer_id}`)."""
    return {name for name, _value in parse_qsl(urlsplit(template).query, keep_blank_values=True)}


def url_template_validate(template: str) -> None:
    """Refuse a URL template the call could not be made safely from (ValidationError, with the reason).

    An absolute http(s) URL whose scheme, host and port are written out: placeholders only in the path
    and the query, no fragment, and no brace that is not a placeholder.
    """
    if URL_PLACEHOLDER.sub("", template).count("{") or URL_PLACEHOLDER.sub("", template).count("}"):
        raise ValidationError(
            "A brace that is not a placeholder: write placeholders as {name} (letters, digits and _).",
            code="stray_brace",
        )
    if any(character.isspace() for character in template):
        raise ValidationError("The URL may not contain spaces or line breaks.", code="space")
    try:
        parts = urlsplit(template)
    except ValueError as error:
        raise ValidationError(f"Not a URL: {error}.", code="not_a_url") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError("The URL must start with http:// or https://.", code="scheme")
    if "{" in parts.netloc:
        raise ValidationError(
            "Placeholders may only be in the path and the query: the host is fixed, so that no argument "
            "can send the call (and its headers) elsewhere.",
            code="placeholder_in_host",
        )
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as error:
        raise ValidationError(f"Not a URL: {error}.", code="not_a_url") from None
    if not parts.hostname:
        raise ValidationError("The URL must name a host.", code="host")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("Put credentials in the headers, not in the URL.", code="credentials")
    if parts.fragment or template.endswith("#"):
        raise ValidationError("The URL may not have a fragment (#…).", code="fragment")


def parameters_validate(parameters: Any) -> None:
    """Refuse parameters that are not a JSON Schema (Draft 2020-12) of an object."""
    if not isinstance(parameters, dict):
        raise ValidationError("The parameters must be a JSON Schema object ({…}).", code="not_object")
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as error:
        where = error.json_path if error.path else "the schema"
        raise ValidationError(
            f"Not a valid JSON Schema: at {where}: {error.message}", code="invalid_schema"
        ) from None
    if parameters.get("type") != "object":
        raise ValidationError(
            'The parameters must describe an object: "type": "object" (OpenAI tool calling requires it).',
            code="not_object_type",
        )
    properties = parameters.get("properties", {})
    if CUSTOMER_ID_PLACEHOLDER in properties:
        raise ValidationError(
            f'No parameter may be called "{CUSTOMER_ID_PLACEHOLDER}": the customer\'s id comes from the '
            "verified customer only, never from the model.",
            code="customer_id_parameter",
        )


def headers_validate(headers: Any) -> None:
    """Refuse headers that are not an object of header names to text values on one line."""
    if not isinstance(headers, dict):
        raise ValidationError('The headers must be an object: {"Name": "value", …}.', code="not_object")
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValidationError(f"Not a header name: {name!r}.", code="header_name")
        if name.lower() in _HEADERS_OF_THE_CALL:
            raise ValidationError(f"The header {name} is set by the call itself.", code="header_reserved")
        # The value itself is never quoted back: it may be the secret.
        if not isinstance(value, str):
            raise ValidationError(f"The value of header {name} must be text.", code="header_value")
        if not _HEADER_VALUE.match(value):
            raise ValidationError(
                f"The value of header {name} may only contain printable ASCII characters (no line breaks).",
                code="header_value",
            )


class Tool(models.Model):
    """One HTTP call to the company's own API that the assistant may make (DESIGN.md, Business tools).

    Managed by superusers only (tools/admin.py), like API keys: the headers hold the API's secrets,
    stored as they are (the call needs them), never shown again in admin and never logged.
    """

    class Method(models.TextChoices):
        GET = "GET", "GET"
        POST = "POST", "POST"
        PUT = "PUT", "PUT"
        PATCH = "PATCH", "PATCH"
        DELETE = "DELETE", "DELETE"

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(
                TOOL_NAME_PATTERN,
                "1 to 64 letters, digits, _ or - (what OpenAI tool calling accepts).",
                code="tool_name",
            )
        ],
        help_text="What the model calls it, e.g. order_status.",
    )
    description_en = models.TextField(
        "description (English)", blank=True, help_text="What it does and when to use it, for the model."
    )
    description_zh_hans = models.TextField(
        "description (简体中文)", blank=True, help_text="The same in Chinese; either may be empty, not both."
    )
    # blank: an empty or wrong schema is refused by parameters_validate, with its own sentence.
    parameters = models.JSONField(
        default=dict,
        blank=True,
        help_text='A JSON Schema (Draft 2020-12) of the arguments, "type": "object"; every call\'s arguments '
        "are checked against it before anything is sent.",
    )
    method = models.CharField(max_length=8, choices=Method.choices, default=Method.GET)
    url = models.CharField(
        "URL",
        max_length=2000,
        help_text="A template: {param} is filled from the arguments (URL-encoded), {customer_id} from the "
        "verified customer. Placeholders only in the path and the query. GET sends the other arguments "
        "as query parameters, the other methods as a JSON body.",
    )
    headers = models.JSONField(default=dict, blank=True)
    changes_data = models.BooleanField(
        default=False,
        help_text="It changes something (opens a return, re-issues an invoice): it runs only once the "
        "customer (or an agent) confirms.",
    )
    needs_verified_customer = models.BooleanField(
        default=False,
        help_text="It reads or changes a customer's own data: offered only in conversations whose customer "
        "the host site verified. Required when the URL uses {customer_id}.",
    )
    timeout_seconds = models.PositiveSmallIntegerField(
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(60)],
        help_text="The whole call, connecting included (1 to 60).",
    )
    max_response_bytes = models.PositiveIntegerField(
        default=64 * 1024,
        validators=[MinValueValidator(1), MaxValueValidator(1024 * 1024)],
        help_text="A longer answer is cut here (and the model told so).",
    )
    channels = models.JSONField(default=default_channels, blank=True)
    enabled = models.BooleanField(default=True, help_text="Switched off, it is kept but not offered.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """The rules a field cannot check alone: the schema, the URL template, the headers, the channels."""
        errors: dict[str, list[ValidationError]] = {}

        def check(field: str, validate: Any, value: Any) -> None:
            try:
                validate(value)
            except ValidationError as error:
                errors.setdefault(field, []).append(error)

        if not (self.description_en.strip() or self.description_zh_hans.strip()):
            errors.setdefault("description_en", []).append(
                ValidationError("Describe the tool in at least one language.", code="no_description")
            )
        check("parameters", parameters_validate, self.parameters)
        check("url", url_template_validate, self.url)
        check("headers", headers_validate, self.headers)
        check("channels", _channels_validate, self.channels)
        if "url" not in errors and "parameters" not in errors:
            properties = self.parameters.get("properties", {})
            placeholders = url_template_placeholders(self.url)
            if not self.sends_body:
                # GET adds the other arguments to the query: none may stand in for one the URL fixes
                # (?customer={customer_id} must stay the verified customer's).
                for fixed in sorted(url_template_query_names(self.url) & set(properties) - set(placeholders)):
                    errors.setdefault("parameters", []).append(
                        ValidationError(
                            f"The parameter {fixed} would repeat the URL's own query parameter {fixed}: "
                            "rename it.",
                            code="query_name_taken",
                        )
                    )
            for placeholder in placeholders:
                if placeholder == CUSTOMER_ID_PLACEHOLDER:
                    if not self.needs_verified_customer:
                        errors.setdefault("needs_verified_customer", []).append(
                            ValidationError(
                                "The URL uses {customer_id}: the tool needs a verified customer.",
                                code="customer_id_unverified",
                            )
                        )
                elif placeholder not in properties:
                    errors.setdefault("url", []).append(
                        ValidationError(
                            f"{{{placeholder}}} is not one of the parameters' properties.",
                            code="unknown_placeholder",
                        )
                    )
        if errors:
            raise ValidationError(errors)

    @property
    def sends_body(self) -> bool:
        """Whether the arguments go in a JSON body (every method but GET) rather than the query."""
        return self.method in _METHODS_WITH_BODY


def _channels_validate(channels: Any) -> None:
    known = set(Conversation.Channel.values)
    if not isinstance(channels, list) or not all(isinstance(channel, str) for channel in channels):
        raise ValidationError('The channels must be a list, e.g. ["widget"].', code="not_list")
    unknown = [channel for channel in channels if channel not in known]
    if unknown:
        raise ValidationError(
            f"Unknown channel(s): {', '.join(unknown)} (known: {', '.join(sorted(known))}).",
            code="unknown_channel",
        )


class ToolCall(models.Model):
    """One call the model asked for, and what came of it: kept for the transcript and the console.

    The arguments and the result are stored with personal data masked (cs_platform.pii); the tool's
    headers are never part of the record.
    """

    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"
        TIMEOUT = "timeout", "Timed out"
        REFUSED = "refused", "Refused"
        INVALID_ARGUMENTS = "invalid_arguments", "Invalid arguments"
        AWAITING_CONFIRMATION = "awaiting_confirmation", "Awaiting confirmation"
        DECLINED = "declined", "Declined"

    reply = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="tool_calls"
    )
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="tool_calls")
    # The tool may be deleted later: the record keeps its name.
    tool = models.ForeignKey(Tool, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls")
    tool_name = models.CharField(max_length=64)
    call_id = models.CharField(max_length=200, help_text="The model's id of the call (tool_calls[].id).")
    arguments = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=24, choices=Outcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    result = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    confirmed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created_at", "-pk")
        verbose_name = "tool call"

    def __str__(self) -> str:
        return f"{self.tool_name} ({self.outcome})"
