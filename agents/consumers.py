"""The agent console's websocket, `/ws/agent/`: the queue live, open conversations live, typing both ways."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from django.conf import settings

from agents import assist, console, events, presence, selectors
from agents.permissions import user_is_agent, user_is_supervisor
from agents.serializers import (
    agent_message_data,
    conversation_detail_data,
    queue_item_data,
)
from conversations import selectors as conversation_selectors
from conversations.consumers import JsonFrameConsumer
from conversations.events import conversation_group, error_frame, pending_reply_data
from conversations.serializers import author_display_name

logger = logging.getLogger(__name__)

# Not logged in (the session cookie is missing or expired), as the customer's socket says a bad token.
CLOSE_CODE_NOT_AUTHENTICATED = 4401
# Logged in but not in an agent group.
CLOSE_CODE_NOT_AN_AGENT = 4403

# Events from the conversation's group that are for the customer: the console gets its own view of
# them through the agents' group (ticket.updated, conversation.message) instead.
CUSTOMER_ONLY_EVENTS = frozenset({"agent.joined", "agent.message"})

# How many replies a socket remembers the conversation of (to name it on their deltas).
REPLIES_REMEMBERED = 50

# How much longer than the inference timeouts a socket waits to hear from a draft before it ends it
# itself (no worker took it, or the worker died mid-draft).
DRAFT_WATCH_GRACE_SECONDS = 15.0

# Console sockets open in this process, per agent: the last one to close marks the agent offline.
_sockets_per_agent: dict[int, int] = {}


def _queue_frame(user: Any) -> dict[str, Any]:
    waiting = selectors.queue_list(queue="waiting", user=user)
    mine = selectors.queue_list(queue="mine", user=user)
    return events.queue_updated_frame(
        conversations=[
            queue_item_data(i.conversation, ticket=i.ticket, last_message=i.last_message) for i in waiting
        ],
        mine=[queue_item_data(i.conversation, ticket=i.ticket, last_message=i.last_message) for i in mine],
        counts={"waiting": len(waiting), "mine": len(mine)},
    )


def _opened_frame(conversation_id: uuid.UUID) -> dict[str, Any] | None:
    conversation = selectors.conversation_get(conversation_id=conversation_id)
    if conversation is None:
        return None
    detail = selectors.conversation_detail_get(conversation=conversation)
    # The reply still streaming, with its text so far, as the customer's `ready` has it: a console
    # opening (or reopening) mid-reply shows the text already sent and appends the deltas after `seq`.
    pending = conversation_selectors.reply_pending_get(messages=detail.messages)
    return events.conversation_opened_frame(
        {
            **conversation_detail_data(
                detail.conversation, messages=detail.messages, tickets=detail.tickets, csat=detail.csat
            ),
            "pending_reply": pending_reply_data(
                pending=pending,
                progress=conversation_selectors.reply_text_get(reply_id=pending.pk) if pending else None,
            ),
        }
    )


def _may_type_to_customer(conversation_id: uuid.UUID, user: Any) -> bool:
    """The customer sees typing only from whoever holds the ticket (or a supervisor), like a reply."""
    conversation = selectors.conversation_get(conversation_id=conversation_id)
    if conversation is None:
        return False
    ticket = selectors.ticket_unresolved_get(conversation=conversation)
    return ticket is not None and (ticket.assignee_id == user.pk or user_is_supervisor(user))


def _reply_conversation_get(reply_id: int) -> str | None:
    message = selectors.message_for_agents_get(message_id=reply_id)
    return str(message.conversation_id) if message is not None else None


def _message_event(message_id: int) -> dict[str, Any] | None:
    message = selectors.message_for_agents_get(message_id=message_id)
    if message is None or message.internal:
        return None
    return {
        "type": "conversation.message",
        "conversation": str(message.conversation_id),
        "message": agent_message_data(message),
    }


def _draft_check(conversation_id: uuid.UUID, user: Any) -> tuple[str, str] | int | None:
    """Why the agent may not draft in the conversation now, as (code, detail); else the id of the
    customer message a draft would answer (None before the customer wrote)."""
    conversation = selectors.conversation_get(conversation_id=conversation_id)
    if conversation is None:
        return "not_found", "There is no such conversation."
    try:
        console.conversation_act_check(conversation=conversation, agent=user)
    except console.ActionRefused as refused:
        return refused.code, refused.detail
    return conversation_selectors.latest_customer_message_id(conversation_id=conversation_id)


@dataclass
class _DraftWatch:
    """A draft this socket asked for and has not heard the end of."""

    conversation: str
    based_on_message: int | None
    heard_at: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.monotonic)
    streaming: bool = False
    task: asyncio.Task[None] | None = None


def _conversation_id(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class AgentConsumer(JsonFrameConsumer):
    """One console socket: the waiting queue, and the conversations the agent opened, live."""

    user: Any
    open_conversations: set[str]
    # When this socket last relayed a typing frame, per conversation (monotonic seconds).
    typing_relayed_at: dict[str, float]
    # The conversation of each assistant reply whose deltas this socket passed on (their events name
    # only the reply): looked up once per reply, not once per delta.
    reply_conversations: dict[int, str | None]
    # Agent assist's drafts in progress, by draft id.
    drafts: dict[str, _DraftWatch]

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, except that an event this console has no use for is dropped: a group
        it shares with customers may carry types added later, and none of them may close the socket."""
        if message["type"] in CUSTOMER_ONLY_EVENTS or not hasattr(self, get_handler_name(message)):
            return
        await super().dispatch(message)

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.open_conversations = set()
        self.typing_relayed_at = {}
        self.reply_conversations = {}
        self.drafts = {}
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=CLOSE_CODE_NOT_AUTHENTICATED)
            return
        if not await database_sync_to_async(user_is_agent)(self.user):
            await self.close(code=CLOSE_CODE_NOT_AN_AGENT)
            return
        self.agent_name = author_display_name(self.user)
        # Join first, then read: a change is then in the list sent, or announced after it, or both.
        await self.channel_layer.group_add(events.AGENTS_QUEUE_GROUP, self.channel_name)
        await self.channel_layer.group_add(events.agent_user_group(self.user.pk), self.channel_name)
        self.joined = True
        _sockets_per_agent[self.user.pk] = _sockets_per_agent.get(self.user.pk, 0) + 1
        await self._send_queue()
        # Marking the agent online may auto-assign them waiting conversations: after the queue frame,
        # so the console knows the queue the assignments come out of.
        state = await database_sync_to_async(presence.presence_mark_online)(user=self.user)
        await self._send_presence(state)
        self.heartbeat = asyncio.create_task(self._presence_heartbeat())

    async def disconnect(self, code: int) -> None:
        if not getattr(self, "joined", False):
            return
        heartbeat = getattr(self, "heartbeat", None)
        if heartbeat is not None:
            heartbeat.cancel()
        for draft_id in list(self.drafts):
            await self._draft_forget(draft_id, cancel=True)
        remaining = _sockets_per_agent.get(self.user.pk, 1) - 1
        if remaining > 0:
            _sockets_per_agent[self.user.pk] = remaining
        else:
            _sockets_per_agent.pop(self.user.pk, None)
            try:
                await database_sync_to_async(presence.presence_mark_offline)(user=self.user)
            except Exception as error:
                # online_until runs out by itself within the horizon.
                logger.warning("Marking agent %s offline failed: %s", self.user.pk, error)
        groups = [events.AGENTS_QUEUE_GROUP, events.agent_user_group(self.user.pk)]
        for conversation_id in self.open_conversations:
            groups += [conversation_group(conversation_id), events.agents_conversation_group(conversation_id)]
        for group in groups:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception as error:
                # The membership expires by itself (channels-redis group_expiry).
                logger.warning("Leaving %s failed: %s", group, error)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not getattr(self, "joined", False):
            return  # closing: refused at connect
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_error("invalid_frame", 'A frame is a JSON object with a "type".')
            return
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "queue": self.frame_queue,
            "open": self.frame_open,
            "leave": self.frame_leave,
            "typing": self.frame_typing,
            "presence": self.frame_presence,
            "assist.request": self.frame_assist_request,
            "assist.cancel": self.frame_assist_cancel,
        }
        handler = handlers.get(content["type"])
        if handler is None:
            await self.send_error("unknown_type", f"Unknown frame type {content['type']!r}.")
            return
        await handler(content)

    async def send_error(self, code: str, detail: str) -> None:
        await self.send_json(error_frame(code=code, detail=detail))

    async def _send_queue(self) -> None:
        await self.send_json(await database_sync_to_async(_queue_frame)(self.user))

    async def _send_presence(self, state: presence.PresenceState) -> None:
        self.online_agents_sent = state.online_agents
        await self.send_json(
            events.presence_updated_frame(accepting=state.accepting, online_agents=state.online_agents)
        )

    async def _presence_heartbeat(self) -> None:
        """Keep the agent online while the socket is open; say so when the number online changed."""
        while True:
            await asyncio.sleep(presence.PRESENCE_HEARTBEAT_SECONDS)
            try:
                state = await database_sync_to_async(presence.presence_mark_online)(user=self.user)
            except Exception as error:
                # The next beat tries again; until the horizon passes the agent still counts as online.
                logger.warning("Presence heartbeat of agent %s failed: %s", self.user.pk, error)
                continue
            if state.online_agents != self.online_agents_sent:
                await self._send_presence(state)

    async def _frame_conversation_id(self, frame: dict[str, Any]) -> uuid.UUID | None:
        conversation_id = _conversation_id(frame.get("conversation"))
        if conversation_id is None:
            await self.send_error("invalid_frame", '"conversation" must be a conversation id (a UUID).')
        return conversation_id

    async def frame_queue(self, frame: dict[str, Any]) -> None:
        await self._send_queue()

    async def frame_open(self, frame: dict[str, Any]) -> None:
        conversation_id = await self._frame_conversation_id(frame)
        if conversation_id is None:
            return
        key = str(conversation_id)
        if key not in self.open_conversations:
            if (
                await database_sync_to_async(selectors.conversation_get)(conversation_id=conversation_id)
                is None
            ):
                await self.send_error("not_found", "There is no such conversation.")
                return
            # Join first, then read the transcript: a message is then in it, or arrives after it, or both
            # (the console deduplicates by message id).
            await self.channel_layer.group_add(conversation_group(conversation_id), self.channel_name)
            await self.channel_layer.group_add(
                events.agents_conversation_group(conversation_id), self.channel_name
            )
            self.open_conversations.add(key)
        opened = await database_sync_to_async(_opened_frame)(conversation_id)
        if opened is not None:
            await self.send_json(opened)

    async def frame_leave(self, frame: dict[str, Any]) -> None:
        conversation_id = await self._frame_conversation_id(frame)
        if conversation_id is None:
            return
        key = str(conversation_id)
        if key in self.open_conversations:
            self.open_conversations.discard(key)
            self.typing_relayed_at.pop(key, None)
            await self.channel_layer.group_discard(conversation_group(conversation_id), self.channel_name)
            await self.channel_layer.group_discard(
                events.agents_conversation_group(conversation_id), self.channel_name
            )
        await self.send_json({"type": "conversation.left", "conversation": key})

    async def frame_typing(self, frame: dict[str, Any]) -> None:
        conversation_id = await self._frame_conversation_id(frame)
        if conversation_id is None:
            return
        key = str(conversation_id)
        if key not in self.open_conversations:
            await self.send_error(
                "not_open", 'Open the conversation first: {"type": "open", "conversation": id}.'
            )
            return
        internal = frame.get("internal", False) is True
        now = time.monotonic()
        last = self.typing_relayed_at.get(key)
        if last is not None and now - last < events.TYPING_RELAY_INTERVAL_SECONDS:
            return  # the indicator is still lit where it was sent: no need to say it again yet
        if not internal and not await database_sync_to_async(_may_type_to_customer)(
            conversation_id, self.user
        ):
            await self.send_error("not_claimed", "Claim this conversation before typing to the customer.")
            return
        self.typing_relayed_at[key] = now
        event = events.agent_typing_event(
            conversation_id=conversation_id, agent=self.user, sender=self.channel_name, internal=internal
        )
        # A note being written is shown to colleagues only.
        group = (
            events.agents_conversation_group(conversation_id)
            if internal
            else conversation_group(conversation_id)
        )
        await self.channel_layer.group_send(group, event)

    async def frame_presence(self, frame: dict[str, Any]) -> None:
        accepting = frame.get("accepting")
        if not isinstance(accepting, bool):
            await self.send_error("invalid_frame", '"accepting" must be true or false.')
            return
        state = await database_sync_to_async(presence.presence_mark_online)(
            user=self.user, accepting=accepting
        )
        await self._send_presence(state)
        # The agent's other consoles (another tab) show the same switch.
        await self.channel_layer.group_send(
            events.agent_user_group(self.user.pk),
            {**events.presence_changed_event(), "sender": self.channel_name},
        )

    # --- agent assist ---------------------------------------------------------------------------

    async def _assist_error(self, conversation: str, draft_id: str | None, code: str, detail: str) -> None:
        await self.send_json(
            {
                "type": "assist.error",
                "conversation": conversation,
                "draft_id": draft_id,
                "code": code,
                "detail": detail,
            }
        )

    async def frame_assist_request(self, frame: dict[str, Any]) -> None:
        """Draft the agent's next message with AI: only this socket hears it, nothing is saved."""
        conversation_id = await self._frame_conversation_id(frame)
        if conversation_id is None:
            return
        key = str(conversation_id)
        if not settings.AGENT_ASSIST_ENABLED:
            await self._assist_error(key, None, "assist_disabled", "Drafting with AI is switched off here.")
            return
        if key not in self.open_conversations:
            await self._assist_error(
                key, None, "not_open", 'Open the conversation first: {"type": "open", "conversation": id}.'
            )
            return
        checked = await database_sync_to_async(_draft_check)(conversation_id, self.user)
        if isinstance(checked, tuple):
            await self._assist_error(key, None, *checked)
            return
        # One draft per conversation at a time: a new request replaces the one streaming.
        for draft_id, watch in list(self.drafts.items()):
            if watch.conversation == key:
                await self._draft_forget(draft_id, cancel=True)
        request = assist.DraftRequest(
            conversation_id=conversation_id,
            draft_id=uuid.uuid4().hex,
            channel_name=self.channel_name,
            based_on_message=checked,
        )
        watch = _DraftWatch(conversation=key, based_on_message=checked)
        self.drafts[request.draft_id] = watch
        await self.send_json(
            {
                "type": "assist.started",
                "conversation": key,
                "draft_id": request.draft_id,
                "based_on_message": checked,
            }
        )
        try:
            if settings.REPLY_GENERATION_IN_PROCESS:
                assist.draft_generate_in_process(request)
            else:
                from agents.tasks import assist_draft

                await sync_to_async(assist_draft.apply_async, thread_sensitive=False)(
                    kwargs=request.as_task_kwargs(),
                    # Past this a worker would draft for nobody: the socket has given up on it.
                    expires=settings.INFERENCE_FIRST_TOKEN_TIMEOUT,
                )
        except Exception as error:
            logger.warning("Queueing draft %s failed: %s", request.draft_id, error)
            self.drafts.pop(request.draft_id, None)
            await self._assist_error(
                key, request.draft_id, "assist_unavailable", assist.ASSIST_ERROR_DETAILS["assist_unavailable"]
            )
            return
        watch.task = asyncio.create_task(self._draft_watch(request.draft_id))

    async def frame_assist_cancel(self, frame: dict[str, Any]) -> None:
        draft_id = frame.get("draft_id")
        if not isinstance(draft_id, str) or draft_id not in self.drafts:
            # Already ended (its final frame crossed the cancel): nothing to stop.
            return
        watch = self.drafts[draft_id]
        await self._draft_forget(draft_id, cancel=True)
        await self.send_json(
            {
                "type": "assist.done",
                "conversation": watch.conversation,
                "draft_id": draft_id,
                "cancelled": True,
            }
        )

    async def _draft_forget(self, draft_id: str, *, cancel: bool) -> None:
        watch = self.drafts.pop(draft_id, None)
        if watch is None:
            return
        current = asyncio.current_task()
        if watch.task is not None and watch.task is not current:
            watch.task.cancel()
        if cancel:
            await sync_to_async(assist.draft_cancel, thread_sensitive=False)(draft_id)

    async def _draft_watch(self, draft_id: str) -> None:
        """End a draft this socket stops hearing from (no worker took it; the worker died)."""
        while True:
            watch = self.drafts.get(draft_id)
            if watch is None:
                return
            if watch.streaming:
                silence, code = settings.INFERENCE_TOKEN_TIMEOUT, "inference_timeout"
            else:
                silence, code = settings.INFERENCE_FIRST_TOKEN_TIMEOUT, "assist_unavailable"
            deadline = (
                min(
                    watch.heard_at + silence,
                    watch.started_at + settings.INFERENCE_TOTAL_TIMEOUT,
                )
                + DRAFT_WATCH_GRACE_SECONDS
            )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning("Draft %s: nothing heard from its generation; ended", draft_id)
                await self._draft_forget(draft_id, cancel=True)
                await self._assist_error(
                    watch.conversation, draft_id, code, assist.ASSIST_ERROR_DETAILS[code]
                )
                return
            await asyncio.sleep(remaining)

    async def assist_delta(self, event: dict[str, Any]) -> None:
        watch = self.drafts.get(event.get("draft_id", ""))
        if watch is None:
            return  # stopped, replaced or timed out here: what it still sends is for nobody
        watch.heard_at = time.monotonic()
        watch.streaming = True
        await self.send_json(event)

    async def _draft_finished(self, event: dict[str, Any]) -> None:
        draft_id = event.get("draft_id", "")
        if draft_id not in self.drafts:
            return
        await self._draft_forget(draft_id, cancel=False)
        await self.send_json(event)

    async def assist_done(self, event: dict[str, Any]) -> None:
        await self._draft_finished(event)

    async def assist_error(self, event: dict[str, Any]) -> None:
        await self._draft_finished(event)

    # Events, named after their types.

    async def presence_changed(self, event: dict[str, Any]) -> None:
        if event.get("sender") == self.channel_name:
            return
        await self._send_presence(await database_sync_to_async(presence.presence_state_get)(user=self.user))

    async def conversation_assigned(self, event: dict[str, Any]) -> None:
        """Auto-assignment gave this agent a conversation (ticket.updated follows to its openers)."""
        await self.send_json(event)

    async def queue_changed(self, event: dict[str, Any]) -> None:
        await self._send_queue()

    async def conversation_message(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def ticket_updated(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def customer_message(self, event: dict[str, Any]) -> None:
        # A draft under way answers an older message now: the console marks it out of date. (The live
        # copy of the message a draft answers can arrive after the request: that one is not newer.)
        message_id = event["message"].get("id")
        for draft_id, watch in self.drafts.items():
            newer = watch.based_on_message is None or (
                isinstance(message_id, int) and message_id > watch.based_on_message
            )
            if watch.conversation == event["conversation"] and newer:
                await self.send_json(
                    {"type": "assist.stale", "conversation": watch.conversation, "draft_id": draft_id}
                )
        message = {**event["message"], "internal": False, "author": None, "feedback": None}
        message["conversation"] = event["conversation"]
        await self.send_json(
            {"type": "conversation.message", "conversation": event["conversation"], "message": message}
        )

    async def customer_typing(self, event: dict[str, Any]) -> None:
        await self.send_json(events.typing_frame(conversation_id=event["conversation"], who="customer"))

    async def agent_typing(self, event: dict[str, Any]) -> None:
        if event.get("sender") == self.channel_name:
            return
        await self.send_json(
            events.typing_frame(
                conversation_id=event["conversation"],
                who="agent",
                agent_name=event["agent"]["name"],
                internal=event.get("internal", False),
            )
        )

    async def _notice(self, event: dict[str, Any]) -> None:
        if event.get("message"):
            message = {**event["message"], "internal": False, "author": None, "feedback": None}
            message["conversation"] = event["conversation"]
            await self.send_json(
                {"type": "conversation.message", "conversation": event["conversation"], "message": message}
            )

    async def _ticket_refresh(self, conversation_id: str) -> None:
        """The ticket as it is now, for a change made outside the console (admin's resolve or close),
        which sends the customer's event only."""
        ticket = await database_sync_to_async(selectors.ticket_latest_get)(
            conversation_id=uuid.UUID(conversation_id)
        )
        if ticket is not None and conversation_id in self.open_conversations:
            await self.send_json(
                events.ticket_updated_event(conversation_id=ticket.conversation_id, ticket=ticket)
            )

    async def conversation_resolved(self, event: dict[str, Any]) -> None:
        await self._notice(event)
        await self._ticket_refresh(event["conversation"])

    async def conversation_closed(self, event: dict[str, Any]) -> None:
        await self._notice(event)
        await self._ticket_refresh(event["conversation"])

    async def agent_left(self, event: dict[str, Any]) -> None:
        await self._notice(event)

    async def _reply_finished(self, event: dict[str, Any]) -> None:
        # An assistant reply ended in an open conversation: its event names no conversation, the
        # saved message does.
        self.reply_conversations.pop(event["reply_id"], None)
        frame = await database_sync_to_async(_message_event)(event["reply_id"])
        if frame is not None and frame["conversation"] in self.open_conversations:
            await self.send_json(frame)

    async def reply_delta(self, event: dict[str, Any]) -> None:
        """The assistant's reply streaming in an open conversation (one a supervisor watches, say)."""
        reply_id = event["reply_id"]
        if reply_id not in self.reply_conversations:
            if len(self.reply_conversations) >= REPLIES_REMEMBERED:
                self.reply_conversations.pop(next(iter(self.reply_conversations)))
            self.reply_conversations[reply_id] = await database_sync_to_async(_reply_conversation_get)(
                reply_id
            )
        conversation_id = self.reply_conversations[reply_id]
        if conversation_id is not None and conversation_id in self.open_conversations:
            await self.send_json({**event, "conversation": conversation_id})

    async def reply_done(self, event: dict[str, Any]) -> None:
        await self._reply_finished(event)

    async def reply_error(self, event: dict[str, Any]) -> None:
        await self._reply_finished(event)

    async def layer_rejoined(self, event: dict[str, Any]) -> None:
        """The channel layer is back after an outage: what was sent meanwhile is lost, so the console
        gets the queue and its open conversations again as saved."""
        await self._send_queue()
        for key in list(self.open_conversations):
            opened = await database_sync_to_async(_opened_frame)(uuid.UUID(key))
            if opened is not None:
                await self.send_json(opened)
