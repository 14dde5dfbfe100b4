"""The customer's websocket: authorise in the first frame, then chat, cancel, rate and hand off."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from rest_framework import serializers

from conversations import events, frames, handoff_rules, replies, selectors, services
from conversations.models import Conversation
from conversations.selectors import PostedMessage
from conversations.serializers import message_data
from cs_platform.client_ip import client_ip_from_scope
from cs_platform.logs import bound_context, request_id_new
from cs_platform.ratelimit import rate_limit_hit, rate_limit_refund, rate_limit_retry_after

logger = logging.getLogger(__name__)

CLOSE_CODE_UNAUTHORISED = 4401
# A socket that does not say hello in time is closed: unauthenticated sockets cost memory and a slot.
CLOSE_CODE_HELLO_TIMEOUT = 4408


# Channel-layer events whose handlers use no database: channels' dispatch closes stale database
# connections before every handler, a hop to asgiref's one database thread that these skip.
EVENTS_WITHOUT_DATABASE = frozenset(
    {
        "reply.delta",
        "reply.done",
        "reply.error",
        # A business tool the reply is calling (inference.generation): passed on as it comes.
        "tool.started",
        "tool.finished",
        # A handoff another trigger opened (conversations/handoff_rules.py).
        "handoff.started",
        # From the agent console (agents/events.py builds them): passed on, or ignored, as they come.
        "agent.joined",
        "agent.message",
        "agent.typing",
        "agent.left",
        "conversation.resolved",
        # Staff closed it (conversations.services.conversation_close).
        "conversation.closed",
        "customer.message",
        "customer.typing",
    }
)

# A customer's typing frame is passed to the agents at most once per this many seconds per socket
# (the same interval as agents.events.TYPING_RELAY_INTERVAL_SECONDS, which this app may not import).
TYPING_RELAY_INTERVAL_SECONDS = 2.0

# How many finished replies a socket remembers, to drop any delta that arrives after their end.
FINISHED_REPLIES_REMEMBERED = 20


def _ready_frame(conversation: Conversation) -> dict[str, Any]:
    messages = selectors.message_list(conversation=conversation)
    pending = selectors.reply_pending_get(messages=messages)
    ticket = selectors.ticket_unresolved_get(conversation=conversation)
    return events.ready_frame(
        conversation_id=conversation.pk,
        messages=messages,
        pending=pending,
        progress=selectors.reply_text_get(reply_id=pending.pk) if pending else None,
        handoff_ticket=ticket,
        handoff_status=handoff_rules.handoff_status_get(ticket=ticket) if ticket is not None else None,
    )


def _handoff_request(conversation: Conversation, reason: str) -> dict[str, Any]:
    """The customer pressed "talk to a person": hand off, and say where they are in the queue (one hop)."""
    ticket = services.handoff_request(conversation=conversation, reason=reason)
    # Read again after the commit: auto-assignment (queued on it) may have given the ticket to an agent
    # already, and the frame then says so (position 0) rather than what the ticket was when opened.
    ticket.refresh_from_db()
    return handoff_rules.handoff_started_payload(ticket=ticket)


def _message_post(
    conversation: Conversation, data: dict[str, Any], client_ip: str | None = None
) -> PostedMessage | None:
    """Count the message against the rate limits (the conversation's, and its address's across all
    its conversations) and save it, in one hop to the database thread; None if it is over a limit. A
    re-sent message is answered from what was saved, over a limit or not, and its hits are given
    back: it is not a new one."""
    hits = [rate_limit_hit(key=f"ws-message:{conversation.pk}", limit=settings.WIDGET_MESSAGES_PER_MINUTE)]
    if client_ip:
        hits.append(
            rate_limit_hit(key=f"ws-message-ip:{client_ip}", limit=settings.WIDGET_MESSAGES_PER_IP_PER_MINUTE)
        )
    if any(hit.exceeded for hit in hits):
        posted = selectors.message_posted_get(conversation=conversation, client_id=data["client_id"])
    else:
        # A repeated client_id is found by the unique constraint: a new message costs no lookup.
        posted = services.message_post(
            conversation=conversation,
            text=data["text"],
            client_id=data["client_id"],
            attachment_ids=data["attachments"],
        )
    if posted is not None and posted.created:
        selectors.message_attachments_load(message=posted.message)
        return posted
    # Not a new message (re-sent, or refused by one limit): it costs no limit anything.
    for hit in hits:
        rate_limit_refund(hit)
    return posted


def _uuid_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        uuid.UUID(value)
    except ValueError:
        return None
    return value


def _reply_cancel(conversation: Conversation, reply_id: int) -> dict[str, Any] | None:
    outcome = replies.reply_cancel(conversation=conversation, reply_id=reply_id)
    if not outcome.cancelled_here:
        return None  # its worker was told and will send reply.done itself
    return events.reply_done_event(outcome.reply)


class JsonFrameConsumer(AsyncJsonWebsocketConsumer):
    """A websocket whose frames are JSON objects: a binary or broken frame is answered with an error
    frame and the socket stays open (the customer's and the agent console's sockets alike)."""

    async def send_error(self, code: str, detail: str) -> None:
        raise NotImplementedError

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            await self.send_error("invalid_frame", "Frames are JSON text, not binary.")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self.send_error("invalid_json", "The frame is not valid JSON.")
            return
        await self.receive_json(content)


class ConversationConsumer(JsonFrameConsumer):
    """One customer socket on one conversation; replies reach it through the conversation's group."""

    conversation: Conversation | None
    hello_timer: asyncio.TimerHandle
    # For each reply in progress at `ready`: the last delta already in its snapshot.
    delta_floor: dict[int, int]
    # Replies whose reply.done or reply.error this socket passed on: no delta may follow them.
    finished_replies: list[int]
    # When this socket last passed a typing frame on to the agents (monotonic seconds).
    typing_relayed_at: float | None

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Each frame from the customer is handled under a request id of its own (and the conversation's
        id once known): its log lines carry it, and so does the reply a message frame asks for."""
        context: dict[str, Any] = {"request_id": request_id_new()}
        if self.conversation is not None:
            context["conversation_id"] = str(self.conversation.pk)
        with bound_context(**context):
            await super().receive(text_data, bytes_data, **kwargs)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its hop to the database thread for the events that use no
        database: every delta of every reply to every socket would otherwise wait its turn there."""
        if message["type"] in EVENTS_WITHOUT_DATABASE:
            await getattr(self, get_handler_name(message))(message)
            return
        # Client frames and the events that read the database (layer.rejoined sends `ready`).
        await super().dispatch(message)

    async def connect(self) -> None:
        self.conversation = None
        self.client_ip = client_ip_from_scope(self.scope)
        self.delta_floor = {}
        self.finished_replies = []
        self.typing_relayed_at = None
        await self.accept()
        self.hello_timer = asyncio.get_running_loop().call_later(
            settings.WIDGET_HELLO_TIMEOUT_SECONDS, lambda: asyncio.ensure_future(self._close_if_silent())
        )

    async def _close_if_silent(self) -> None:
        if self.conversation is None:
            await self.close(code=CLOSE_CODE_HELLO_TIMEOUT)

    async def disconnect(self, code: int) -> None:
        hello_timer = getattr(self, "hello_timer", None)  # absent if connect() failed before it
        if hello_timer is not None:
            hello_timer.cancel()
        if getattr(self, "conversation", None) is not None:
            assert self.conversation is not None
            try:
                await self.channel_layer.group_discard(
                    events.conversation_group(self.conversation.pk), self.channel_name
                )
            except Exception as error:
                # The group's membership expires by itself (channels-redis group_expiry).
                logger.warning("Leaving the conversation's group failed: %s", error)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_error("invalid_frame", 'A frame is a JSON object with a "type".')
            return
        frame_type = content["type"]
        if self.conversation is None:
            if frame_type == "hello":
                await self.frame_hello(content)
            else:
                await self.send_error("not_authenticated", 'Send {"type": "hello", "token": ...} first.')
            return
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "message": self.frame_message,
            "cancel": self.frame_cancel,
            "feedback": self.frame_feedback,
            "csat": self.frame_csat,
            "handoff": self.frame_handoff,
            "typing": self.frame_typing,
        }
        handler = handlers.get(frame_type)
        if handler is None:
            detail = (
                "Already authenticated." if frame_type == "hello" else f"Unknown frame type {frame_type!r}."
            )
            await self.send_error(
                "unknown_type" if frame_type != "hello" else "already_authenticated", detail
            )
            return
        try:
            await handler(content)
        except services.ServiceError as error:
            await self.send_error(error.code, error.detail, content)

    async def send_error(
        self, code: str, detail: str, frame: dict[str, Any] | None = None, retry_after: int | None = None
    ) -> None:
        client_id = None
        if frame and frame.get("type") == "message":
            # Echoed only when it is what the contract says it is: a UUID, not whatever was sent.
            client_id = _uuid_text(frame.get("client_id"))
        await self.send_json(
            events.error_frame(code=code, detail=detail, client_id=client_id, retry_after=retry_after)
        )

    async def _validated(
        self, serializer_class: type[serializers.Serializer[Any]], frame: dict[str, Any]
    ) -> Any:
        serializer = serializer_class(data=frame)
        if not serializer.is_valid():
            await self.send_error("invalid_frame", frames.first_error(serializer.errors), frame)
            return None
        return serializer.validated_data

    async def frame_hello(self, frame: dict[str, Any]) -> None:
        data = await self._validated(frames.HelloFrame, frame)
        if data is None:
            return
        conversation = await database_sync_to_async(selectors.conversation_get_by_token)(
            conversation_id=self.scope["url_route"]["kwargs"]["conversation_id"], token=data["token"]
        )
        if conversation is None:
            await self.close(code=CLOSE_CODE_UNAUTHORISED)
            return
        # Join first, then read the snapshot: a delta is then in the snapshot, or arrives here, or both.
        await self.channel_layer.group_add(events.conversation_group(conversation.pk), self.channel_name)
        self.conversation = conversation
        await self._send_ready()

    async def _send_ready(self) -> None:
        """Send the conversation as saved, with the reply in progress so far; later deltas follow it."""
        assert self.conversation is not None
        ready = await database_sync_to_async(_ready_frame)(self.conversation)
        pending = ready["pending_reply"]
        if pending is not None:
            self.delta_floor[pending["reply_id"]] = pending["seq"]
        for message in ready["messages"]:
            if message["role"] == "assistant" and message["status"] != "streaming":
                self._remember_finished(message["id"])
        await self.send_json(ready)

    async def frame_message(self, frame: dict[str, Any]) -> None:
        data = await self._validated(frames.MessageFrame, frame)
        if data is None:
            return
        assert self.conversation is not None
        posted = await database_sync_to_async(_message_post)(self.conversation, data, self.client_ip)
        if posted is None:
            await self.send_error(
                "rate_limited",
                "Too many messages; please wait a minute before sending more.",
                frame,
                retry_after=rate_limit_retry_after(),
            )
            return
        reply_id = posted.reply.pk if posted.reply else None
        await self.send_json(
            events.message_accepted_frame(
                client_id=data["client_id"], message=posted.message, reply_id=reply_id
            )
        )
        if reply_id is not None and posted.created:
            await self.send_json(events.reply_started_frame(reply_id))
        if posted.created:
            # For the agent console's sockets that opened this conversation (this socket's siblings
            # ignore it: each customer socket already says what it sent).
            await self._group_send_best_effort(
                {
                    "type": "customer.message",
                    "conversation": str(self.conversation.pk),
                    "message": message_data(posted.message),
                }
            )
            if posted.reply is None:
                # Nobody answers automatically (a person has it, or it just went to one): the waiting
                # list's last message changed, so the agents' queues are read again.
                await self._group_send_best_effort(
                    events.queue_changed_event(), group=events.AGENTS_QUEUE_GROUP
                )

    async def frame_typing(self, frame: dict[str, Any]) -> None:
        """The customer is typing: the agents that opened the conversation are told (rate-limited)."""
        assert self.conversation is not None
        now = time.monotonic()
        if (
            self.typing_relayed_at is not None
            and now - self.typing_relayed_at < TYPING_RELAY_INTERVAL_SECONDS
        ):
            return
        self.typing_relayed_at = now
        await self._group_send_best_effort(
            {"type": "customer.typing", "conversation": str(self.conversation.pk)}
        )

    async def _group_send_best_effort(self, event: dict[str, Any], *, group: str | None = None) -> None:
        assert self.conversation is not None
        try:
            await self.channel_layer.group_send(
                group or events.conversation_group(self.conversation.pk), event
            )
        except Exception as error:
            # What the customer sent is saved; the console reads it from the REST API when it reloads.
            logger.warning(
                "Sending %s to conversation %s failed: %s", event["type"], self.conversation.pk, error
            )

    async def frame_cancel(self, frame: dict[str, Any]) -> None:
        data = await self._validated(frames.CancelFrame, frame)
        if data is None:
            return
        done = await database_sync_to_async(_reply_cancel)(self.conversation, data["reply_id"])
        if done is not None:
            # Through the same gate as the group's final frames: one per reply on this socket.
            self.finished_replies = [r for r in self.finished_replies if r != done["reply_id"]]
            await self._reply_finished(done)

    async def frame_feedback(self, frame: dict[str, Any]) -> None:
        data = await self._validated(frames.FeedbackFrame, frame)
        if data is None:
            return
        feedback = await database_sync_to_async(services.feedback_record)(
            conversation=self.conversation,
            message_id=data["message_id"],
            rating=data["rating"],
            comment=data["comment"],
        )
        await self.send_json(
            events.feedback_saved_frame(message_id=feedback.message_id, rating=feedback.rating)
        )

    async def frame_csat(self, frame: dict[str, Any]) -> None:
        data = await self._validated(frames.CsatFrame, frame)
        if data is None:
            return
        rating = await database_sync_to_async(services.csat_record)(
            conversation=self.conversation, score=data["score"], comment=data["comment"]
        )
        await self.send_json(events.csat_saved_frame(score=rating.score))

    async def frame_handoff(self, frame: dict[str, Any]) -> None:
        data = await self._validated(frames.HandoffFrame, frame)
        if data is None:
            return
        frame = await database_sync_to_async(_handoff_request)(self.conversation, data["reason"])
        await self.send_json(frame)

    # Events from the conversation's group, named after their types.

    async def reply_delta(self, event: dict[str, Any]) -> None:
        if event["reply_id"] in self.finished_replies:
            return  # a worker that lost its reply to the sweeper: nothing may follow the final frame
        floor = self.delta_floor.get(event["reply_id"])
        if floor is not None and event["seq"] <= floor:
            return  # already in the text this socket got with `ready`, or sent again by a retry
        self.delta_floor[event["reply_id"]] = event["seq"]
        await self.send_json(event)

    async def tool_started(self, event: dict[str, Any]) -> None:
        if event["reply_id"] not in self.finished_replies:
            await self.send_json(event)

    async def tool_finished(self, event: dict[str, Any]) -> None:
        if event["reply_id"] not in self.finished_replies:
            await self.send_json(event)

    async def reply_done(self, event: dict[str, Any]) -> None:
        await self._reply_finished(event)

    async def reply_error(self, event: dict[str, Any]) -> None:
        await self._reply_finished(event)

    async def _reply_finished(self, event: dict[str, Any]) -> None:
        reply_id = event["reply_id"]
        self.delta_floor.pop(reply_id, None)
        if reply_id in self.finished_replies:
            return  # one final frame per reply (a final frame resent once the layer was back)
        self._remember_finished(reply_id)
        await self.send_json(event)

    def _remember_finished(self, reply_id: int) -> None:
        if reply_id not in self.finished_replies:
            self.finished_replies = [*self.finished_replies[-FINISHED_REPLIES_REMEMBERED + 1 :], reply_id]

    # Events from the agent console (agents/events.py), passed on to the customer as they are, less
    # the sender's channel name. An internal note is never sent to this group; the check below is the
    # second lock on that door.

    async def handoff_started(self, event: dict[str, Any]) -> None:
        """A handoff this socket did not ask for (a phrase, the model's tool, ratings): said as it is."""
        await self.send_json(event)

    async def agent_joined(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def agent_message(self, event: dict[str, Any]) -> None:
        if event.get("message", {}).get("internal"):
            logger.error(
                "An internal note reached conversation %s's group; not sent", event.get("conversation")
            )
            return
        await self.send_json(event)

    async def agent_typing(self, event: dict[str, Any]) -> None:
        await self.send_json({key: value for key, value in event.items() if key != "sender"})

    async def agent_left(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def conversation_resolved(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def conversation_closed(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def customer_message(self, event: dict[str, Any]) -> None:
        """Another of the customer's sockets sent it; this one says nothing (for the console only)."""

    async def customer_typing(self, event: dict[str, Any]) -> None:
        """The customer's own typing, for the console only."""

    async def layer_rejoined(self, event: dict[str, Any]) -> None:
        """The channel layer is back after an outage: what was sent to the group meanwhile is lost, so
        the socket gets the conversation again as saved (a `ready` the widget reconciles with)."""
        if self.conversation is not None:
            await self._send_ready()
