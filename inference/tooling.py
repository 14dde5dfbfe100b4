"""Business tools as the reply's generator sees them: offered, called, summed up for the customer.

The tools themselves live in tools/ (their definitions, HTTP calls and records), an app built on top of
inference; inference may not import it. tools/ registers its provider here when Django starts
(ToolsConfig.ready), and a reply asks the registered provider, if any, what to offer and what a call
gave.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from conversations.models import Conversation


@dataclass(frozen=True)
class BusinessToolResult:
    """What came of one call: its outcome for the customer's frame, and what the model reads next."""

    outcome: str
    content: str


class BusinessTools(Protocol):
    def offered(self, *, conversation: Conversation) -> list[dict[str, Any]]:
        """The OpenAI `tools` entries for a reply in `conversation` (reads the database: sync)."""
        ...

    def summary(self, *, name: str, arguments: str, locale: str) -> str:
        """What the customer is shown while the call runs, in the conversation's language."""
        ...

    async def call(
        self, *, conversation: Conversation, reply_id: int, call_id: str, name: str, arguments: str
    ) -> BusinessToolResult:
        """Run (and record) one call the model made; never raises, never hangs past the tool's timeout."""
        ...


_registered: list[BusinessTools] = []


def business_tools_register(provider: BusinessTools) -> None:
    """Make `provider` the business tools replies are offered (tools/ calls this once, at start-up)."""
    _registered[:] = [provider]


def business_tools() -> BusinessTools | None:
    """The registered provider, or None when no app provides business tools."""
    return _registered[0] if _registered else None
