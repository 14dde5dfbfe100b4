"""The business tools a reply is offered and calls (inference/tooling.py's provider, registered at start-up).

Only tools that read are offered for now: a tool that changes data runs only after the customer's yes
(`confirm.requested` in DESIGN.md), and that confirmation is not built yet, so such a tool is never
offered rather than offered and refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

from channels.db import database_sync_to_async

from conversations.models import Conversation, Message
from inference.tooling import BusinessToolResult
from tools.execution import ToolOutcome, tool_run, tools_offered
from tools.models import Tool, ToolCall
from tools.services import tool_call_record

SUMMARY_VALUE_CHARACTERS = 40
_WORDS = re.compile(r"[_\-]+")


def _first_value(arguments: str) -> str:
    """The first short argument value (an order number, a tracking number), for the customer's line."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return ""
    if not isinstance(parsed, dict):
        return ""
    for value in parsed.values():
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()[:SUMMARY_VALUE_CHARACTERS]
    return ""


def _tool_get(name: str) -> Tool | None:
    return Tool.objects.filter(name=name, enabled=True).first()


class ToolsProvider:
    """The tools/ app's business tools, as inference.tooling.BusinessTools."""

    def offered(self, *, conversation: Conversation) -> list[dict[str, Any]]:
        names = set(Tool.objects.filter(enabled=True, changes_data=False).values_list("name", flat=True))
        return [
            entry
            for entry in tools_offered(
                channel=conversation.channel,
                customer_verified=bool(conversation.verified_customer_id),
                locale=conversation.locale,
            )
            if entry["function"]["name"] in names
        ]

    def summary(self, *, name: str, arguments: str, locale: str) -> str:
        value = _first_value(arguments)
        if locale == Conversation.Locale.ZH_HANS:
            return f"正在查询（{value}）…" if value else "正在查询…"
        what = _WORDS.sub(" ", name).strip()
        return f"Looking up {what} ({value})…" if value else f"Looking up {what}…"

    async def call(
        self, *, conversation: Conversation, reply_id: int, call_id: str, name: str, arguments: str
    ) -> BusinessToolResult:
        tool = await database_sync_to_async(_tool_get)(name)
        if tool is None or tool.changes_data:
            outcome = ToolOutcome(
                outcome=ToolCall.Outcome.REFUSED,
                status_code=None,
                content_for_model=f"There is no tool named {name!r} that you may call.",
                duration_ms=0,
            )
        else:
            outcome = await tool_run(tool, arguments, customer_id=conversation.verified_customer_id or None)
        await database_sync_to_async(_record)(conversation, reply_id, tool, call_id, name, arguments, outcome)
        return BusinessToolResult(outcome=outcome.outcome, content=outcome.content_for_model)


def _record(
    conversation: Conversation,
    reply_id: int,
    tool: Tool | None,
    call_id: str,
    name: str,
    arguments: str,
    outcome: ToolOutcome,
) -> None:
    tool_call_record(
        conversation=conversation,
        reply=Message.objects.filter(pk=reply_id).first(),
        tool=tool,
        tool_name=name,
        call_id=call_id,
        arguments_json=arguments,
        outcome=outcome,
    )
