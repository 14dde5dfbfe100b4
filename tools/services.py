"""Writes for business tools: importing tools from JSON, and recording the calls the assistant makes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation, Message
from cs_platform.pii import mask_value, pii_mask
from tools.execution import ToolOutcome
from tools.models import Tool, ToolCall

__all__ = [
    "ToolImportError",
    "ToolImportFailure",
    "ToolImportReport",
    "tool_call_awaiting_record",
    "tool_call_decide",
    "tool_call_outcome_save",
    "tool_call_record",
    "tools_import",
]

_REQUIRED = ("name", "description", "parameters", "method", "url", "changes_data", "needs_verified_customer")
_OPTIONAL = ("headers", "timeout_seconds", "max_response_bytes", "channels", "enabled")
_DESCRIPTION_LOCALES = {"en": "description_en", "zh-Hans": "description_zh_hans"}
_BOOLEANS = ("changes_data", "needs_verified_customer", "enabled")
_INTEGERS = ("timeout_seconds", "max_response_bytes")
# A record's arguments are for reading in admin: a runaway call's are cut here.
MAX_RECORDED_ARGUMENTS_CHARACTERS = 20_000


class ToolImportError(Exception):
    """An item (or the whole file) that cannot be imported; the message says why, for the operator."""


@dataclass(frozen=True)
class ToolImportFailure:
    index: int
    name: str | None
    error: str

    def __str__(self) -> str:
        return f"item {self.index}{f' ({self.name})' if self.name else ''}: {self.error}"


@dataclass
class ToolImportReport:
    """What an import did: the names created and updated, and each item that failed with its reason."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    failures: list[ToolImportFailure] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.created)} created, {len(self.updated)} updated, {len(self.failures)} failed"


def _validation_text(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(
            f"{name}: {' '.join(messages)}" if name != "__all__" else " ".join(messages)
            for name, messages in error.message_dict.items()
        )
    return " ".join(error.messages)


def _item_fields(item: Any) -> dict[str, Any]:
    """The model fields an item sets, its types checked; absent optional keys are left as they are."""
    if not isinstance(item, dict):
        raise ToolImportError("not an object ({…})")
    unknown = sorted(set(item) - {*_REQUIRED, *_OPTIONAL})
    if unknown:
        # A misspelt safety flag must not quietly fall back to its default.
        raise ToolImportError(f"unknown key(s): {', '.join(unknown)}")
    missing = [key for key in _REQUIRED if key not in item]
    if missing:
        raise ToolImportError(f"missing key(s): {', '.join(missing)}")
    for key in ("name", "method", "url"):
        if not isinstance(item[key], str):
            raise ToolImportError(f"{key} must be text")
    for key in _BOOLEANS:
        if key in item and not isinstance(item[key], bool):
            raise ToolImportError(f"{key} must be true or false")
    for key in _INTEGERS:
        if key in item and (isinstance(item[key], bool) or not isinstance(item[key], int)):
            raise ToolImportError(f"{key} must be a whole number")
    description = item["description"]
    if not isinstance(description, dict) or not set(description) <= set(_DESCRIPTION_LOCALES):
        raise ToolImportError('description must be an object {"en": "…", "zh-Hans": "…"}')
    if not all(isinstance(text, str) for text in description.values()):
        raise ToolImportError("each description must be text")
    fields: dict[str, Any] = {
        _DESCRIPTION_LOCALES[locale]: description.get(locale, "") for locale in _DESCRIPTION_LOCALES
    }
    fields["method"] = item["method"].upper()
    for key in ("parameters", "url", *_BOOLEANS, *_INTEGERS, "headers", "channels"):
        if key in item:
            fields[key] = item[key]
    return fields


def _tool_import_one(item: Any) -> tuple[Tool, bool]:
    fields = _item_fields(item)
    name = item["name"]
    tool = Tool.objects.select_for_update().filter(name=name).first()
    created = tool is None
    if tool is None:
        tool = Tool(name=name)
    for key, value in fields.items():
        setattr(tool, key, value)
    tool.full_clean()
    tool.save()
    return tool, created


def tools_import(*, items: Any) -> ToolImportReport:
    """Create or update (by name) a tool for each item of an import file's list.

    Each item is saved in its own savepoint, so a bad one costs nothing else; a key an item leaves out
    (headers, channels, …) keeps an existing tool's value, so a file without the secrets does not wipe
    them. Raises ToolImportError when `items` is not a list at all.
    """
    if not isinstance(items, list):
        raise ToolImportError("The file must hold a JSON list of tools ([{…}, …]).")
    report = ToolImportReport()
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else None
        try:
            with transaction.atomic():
                tool, created = _tool_import_one(item)
        except ToolImportError as error:
            report.failures.append(ToolImportFailure(index, name, str(error)))
        except ValidationError as error:
            report.failures.append(ToolImportFailure(index, name, _validation_text(error)))
        else:
            (report.created if created else report.updated).append(tool.name)
    return report


def _arguments_masked(arguments_json: str) -> Any:
    try:
        arguments = json.loads(arguments_json) if arguments_json.strip() else {}
    except json.JSONDecodeError:
        # Kept as the text the model sent, so that the record shows what was wrong with it.
        return pii_mask(arguments_json[:MAX_RECORDED_ARGUMENTS_CHARACTERS])
    return mask_value(arguments)


def _result_masked(text: str, limit: int) -> str:
    # Masked before it is cut: a number cut in half would no longer be recognised, and kept whole.
    masked = pii_mask(text)
    return masked.encode()[:limit].decode(errors="ignore")


def _tool_call_create(
    *,
    conversation: Conversation,
    reply: Message | None,
    tool: Tool | None,
    tool_name: str | None,
    call_id: str,
    arguments_json: str,
    outcome: str,
    **fields: Any,
) -> ToolCall:
    name = tool_name or (tool.name if tool is not None else "")
    return ToolCall.objects.create(
        conversation=conversation,
        reply=reply,
        tool=tool,
        tool_name=name[:64],
        call_id=call_id[:200],
        arguments=_arguments_masked(arguments_json),
        outcome=outcome,
        **fields,
    )


def tool_call_record(
    *,
    conversation: Conversation,
    tool: Tool | None,
    call_id: str,
    arguments_json: str,
    outcome: ToolOutcome,
    reply: Message | None = None,
    tool_name: str | None = None,
) -> ToolCall:
    """Record a call that ran (or was refused), with its arguments and result masked and cut.

    `tool` is None for a name the model made up; `tool_name` then says which.
    """
    limit = (
        tool.max_response_bytes if tool is not None else Tool._meta.get_field("max_response_bytes").default
    )
    return _tool_call_create(
        conversation=conversation,
        reply=reply,
        tool=tool,
        tool_name=tool_name,
        call_id=call_id,
        arguments_json=arguments_json,
        outcome=outcome.outcome,
        status_code=outcome.status_code,
        result=_result_masked(outcome.content_for_model, limit),
        duration_ms=outcome.duration_ms,
    )


def tool_call_awaiting_record(
    *,
    conversation: Conversation,
    tool: Tool,
    call_id: str,
    arguments_json: str,
    reply: Message | None = None,
) -> ToolCall:
    """Record a call of a tool that changes data, proposed to the customer and not run until confirmed."""
    return _tool_call_create(
        conversation=conversation,
        reply=reply,
        tool=tool,
        tool_name=None,
        call_id=call_id,
        arguments_json=arguments_json,
        outcome=ToolCall.Outcome.AWAITING_CONFIRMATION,
    )


def tool_call_decide(
    *, tool_call_id: int, accept: bool, confirmed_by: AbstractBaseUser | None = None
) -> bool:
    """Answer a proposed call, once: True if this answer was the one taken (the caller then runs it when
    `accept`), False if it was answered already or was never awaiting an answer.

    A claim by conditional update, so that two answers at once (the customer's and an agent's, or a
    double click) run the call once at most. `confirmed_by` is the agent who answered for the customer.
    """
    awaiting = ToolCall.objects.filter(
        pk=tool_call_id, outcome=ToolCall.Outcome.AWAITING_CONFIRMATION, confirmed_at__isnull=True
    )
    now = timezone.now()
    if accept:
        return awaiting.update(confirmed_at=now, confirmed_by=confirmed_by) == 1
    return (
        awaiting.update(outcome=ToolCall.Outcome.DECLINED, confirmed_at=now, confirmed_by=confirmed_by) == 1
    )


def tool_call_outcome_save(*, tool_call_id: int, outcome: ToolOutcome) -> None:
    """Save what came of a confirmed call (tool_call_decide took the answer) on its record."""
    tool_call = ToolCall.objects.select_related("tool").get(pk=tool_call_id)
    limit = (
        tool_call.tool.max_response_bytes
        if tool_call.tool is not None
        else Tool._meta.get_field("max_response_bytes").default
    )
    tool_call.outcome = outcome.outcome
    tool_call.status_code = outcome.status_code
    tool_call.result = _result_masked(outcome.content_for_model, limit)
    tool_call.duration_ms = outcome.duration_ms
    tool_call.save(update_fields=["outcome", "status_code", "result", "duration_ms"])
