"""Business tools inside a reply: offered through OpenAI tool calling, called from a scripted server's
streamed `tool_calls` (as vLLM sends them), run against a real HTTP server standing in for the company's
API, their results given back to the model, and the reply going on: one answer for the customer, with
`tool.started` and `tool.finished` frames while a tool runs.

Real PostgreSQL and Redis, as in test_generation: the reply runs on the test's loop and the customer's
frames are read from the conversation's group on the Redis channel layer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from channels.db import database_sync_to_async

from conversations.models import Message
from tests import factories
from tests.http_servers import base_url, serving
from tests.scripted_inference import Script, ScriptedInferenceServer, ScriptedToolCall, count_prompt_tokens
from tests.test_generation import GroupListener, generate, queued_reply, reload
from tools.models import Tool, ToolCall

pytestmark = pytest.mark.django_db(transaction=True)

ConversationFactory: Any = factories.ConversationFactory
SECRET = "shop-api-secret-7f3a"
ORDER_PARAMETERS = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "pattern": "^[0-9]{4,10}$"}},
    "required": ["order_id"],
    "additionalProperties": False,
}


@dataclass
class Shop:
    """The company's API: answers /orders/<id>, records what it was asked; /slow never answers."""

    url: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def shop() -> Iterator[Shop]:
    recorded: list[tuple[str, dict[str, str]]] = []
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            recorded.append((self.path, {key.lower(): value for key, value in self.headers.items()}))
            if self.path.startswith("/slow"):
                release.wait(10)
                return
            body = json.dumps({"order": self.path.split("/")[2].split("?")[0], "status": "shipped"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Handler) as server:
        try:
            yield Shop(url=base_url(server), requests=recorded, release=release)
        finally:
            release.set()


@pytest.fixture
def tools_on(settings: Any) -> None:
    settings.INFERENCE_TOOLS = True
    settings.INFERENCE_TOOL_ROUNDS = 3


@database_sync_to_async
def tool_create(
    shop: Shop, *, name: str = "order_status", path: str = "/orders/{order_id}", **fields: Any
) -> Tool:
    values: dict[str, Any] = {
        "description_en": "The status of one of the customer's orders.",
        "description_zh_hans": "查询客户的订单状态。",
        "parameters": ORDER_PARAMETERS,
        "method": "GET",
        "headers": {"Authorization": f"Bearer {SECRET}"},
        "changes_data": False,
        "needs_verified_customer": True,
        "timeout_seconds": 1,
        **fields,
    }
    customer = "?customer={customer_id}" if values["needs_verified_customer"] else ""
    tool = Tool(name=name, url=f"{shop.url}{path}{customer}", **values)
    tool.save()
    return tool


async def verified_reply(text: str = "Where is my order 1234?", customer: str = "C-1001") -> Message:
    conversation = await database_sync_to_async(ConversationFactory)(verified_customer_id=customer)
    return await queued_reply(text=text, conversation=conversation)


@database_sync_to_async
def calls_of(reply: Message) -> list[ToolCall]:
    return list(ToolCall.objects.filter(reply=reply).order_by("id"))


def order_call(arguments: str = '{"order_id": "1234"}', call_id: str = "chatcmpl-tool-1") -> ScriptedToolCall:
    # The arguments in pieces, as vLLM's hermes parser streams them.
    middle = len(arguments) // 2
    return ScriptedToolCall(
        name="order_status", arguments=[arguments[:middle], arguments[middle:]], id=call_id
    )


def offered_names(body: Any) -> list[str]:
    return [tool["function"]["name"] for tool in body.get("tools", [])]


async def test_a_lookup_runs_with_the_verified_customer_and_the_reply_uses_its_result(
    tools_on: None, shop: Shop, scripted_inference: ScriptedInferenceServer
) -> None:
    await tool_create(shop)
    scripted_inference.enqueue(
        Script(tokens=["Let me check."], tool_calls=[order_call()]),
        Script(tokens=["Order 1234", " has shipped."]),
    )
    reply = await verified_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    frames = await listener.rest()
    saved = await reload(reply)
    assert (saved.status, saved.text) == (Message.Status.COMPLETE, "Let me check.Order 1234 has shipped.")
    # The API got the verified customer's id, never one the model wrote, with the tool's secret.
    [(path, headers)] = shop.requests
    assert path == "/orders/1234?customer=C-1001"
    assert headers["authorization"] == f"Bearer {SECRET}"
    first, second = (recorded.json for recorded in scripted_inference.chat_requests)
    assert offered_names(first) == ["order_status"]
    assert first["tool_choice"] == "auto"
    # The second request gives the model the call it made and what the tool answered.
    assert second["messages"][-2] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "chatcmpl-tool-1",
                "type": "function",
                "function": {"name": "order_status", "arguments": '{"order_id": "1234"}'},
            }
        ],
    }
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["tool_call_id"] == "chatcmpl-tool-1"
    assert json.loads(second["messages"][-1]["content"]) == {"order": "1234", "status": "shipped"}
    kinds = [frame["type"] for frame in frames if frame["type"] != "reply.delta"]
    assert kinds == ["tool.started", "tool.finished", "reply.done"]
    started = next(frame for frame in frames if frame["type"] == "tool.started")
    assert started == {
        "type": "tool.started",
        "reply_id": reply.pk,
        "call_id": "chatcmpl-tool-1",
        "name": "order_status",
        "summary": "Looking up order status (1234)…",
    }
    assert next(frame for frame in frames if frame["type"] == "tool.finished")["outcome"] == "ok"
    # The customer never sees the secret, the call's JSON or the tool's answer as such.
    everything = json.dumps(frames, ensure_ascii=False)
    assert SECRET not in everything
    assert '"status": "shipped"' not in everything
    [call] = await calls_of(reply)
    assert (call.tool_name, call.outcome, call.status_code, call.call_id) == (
        "order_status",
        "ok",
        200,
        "chatcmpl-tool-1",
    )
    assert SECRET not in str(call.result) + json.dumps(call.arguments)
    # Usage is the sum of both rounds: the scripted server counts the call's name and argument pieces.
    assert saved.prompt_tokens == count_prompt_tokens(first) + count_prompt_tokens(second)
    assert saved.completion_tokens == (1 + 3) + 2


async def test_a_customer_tool_is_not_offered_without_a_verified_customer(
    tools_on: None, shop: Shop, scripted_inference: ScriptedInferenceServer
) -> None:
    await tool_create(shop)
    await tool_create(
        shop, name="shipment_tracking", path="/shipments/{order_id}", needs_verified_customer=False
    )
    scripted_inference.enqueue(Script(tokens=["Please tell me the order number."]))
    reply = await queued_reply(text="Where is my order?")

    await generate(reply)

    [request] = scripted_inference.chat_requests
    assert offered_names(request.json) == ["shipment_tracking"]
    assert shop.requests == []


async def test_invalid_arguments_never_reach_the_api_and_the_model_is_told(
    tools_on: None, shop: Shop, scripted_inference: ScriptedInferenceServer
) -> None:
    await tool_create(shop)
    scripted_inference.enqueue(
        Script(tokens=[], tool_calls=[order_call('{"order_id": "../../admin"}')]),
        Script(tokens=["I could not look that up."]),
    )
    reply = await verified_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    frames = await listener.rest()
    assert shop.requests == []
    told = scripted_inference.chat_requests[1].json["messages"][-1]
    assert told["role"] == "tool"
    assert "order_id" in told["content"]
    finished = [frame for frame in frames if frame["type"] == "tool.finished"]
    assert [frame["outcome"] for frame in finished] == ["error"]
    [call] = await calls_of(reply)
    assert call.outcome == "invalid_arguments"
    assert (await reload(reply)).text == "I could not look that up."


async def test_a_tool_that_hangs_ends_in_timeout_and_the_reply_goes_on(
    tools_on: None, shop: Shop, scripted_inference: ScriptedInferenceServer
) -> None:
    await tool_create(shop, path="/slow/{order_id}")
    scripted_inference.enqueue(
        Script(tokens=[], tool_calls=[order_call()]),
        Script(tokens=["Our order system is slow right now."]),
    )
    reply = await verified_reply()
    listener = await GroupListener.join(reply.conversation)

    await generate(reply)

    frames = await listener.rest()
    assert [frame["outcome"] for frame in frames if frame["type"] == "tool.finished"] == ["timeout"]
    saved = await reload(reply)
    assert (saved.status, saved.text) == (Message.Status.COMPLETE, "Our order system is slow right now.")
    assert [call.outcome for call in await calls_of(reply)] == ["timeout"]


async def test_the_last_round_offers_no_business_tool_so_the_model_must_answer(
    tools_on: None, settings: Any, shop: Shop, scripted_inference: ScriptedInferenceServer
) -> None:
    settings.INFERENCE_TOOL_ROUNDS = 2
    await tool_create(shop)
    scripted_inference.enqueue(
        Script(tokens=[], tool_calls=[order_call(call_id="a")]),
        Script(tokens=[], tool_calls=[order_call(call_id="b")]),
        Script(tokens=["Order 1234 has shipped."]),
    )
    reply = await verified_reply()

    await generate(reply)

    requests = [recorded.json for recorded in scripted_inference.chat_requests]
    assert [offered_names(body) for body in requests] == [["order_status"], ["order_status"], []]
    assert "tool_choice" not in requests[2]
    assert len(shop.requests) == 2
    assert (await reload(reply)).text == "Order 1234 has shipped."


async def test_no_tool_is_offered_while_inference_tools_is_off(
    shop: Shop, scripted_inference: ScriptedInferenceServer
) -> None:
    await tool_create(shop)
    scripted_inference.enqueue(Script(tokens=["Hello"]))
    reply = await verified_reply()

    await generate(reply)

    [request] = scripted_inference.chat_requests
    assert "tools" not in request.json


async def test_a_tool_that_changes_data_is_not_offered_until_customers_can_confirm(
    tools_on: None, shop: Shop, scripted_inference: ScriptedInferenceServer
) -> None:
    await tool_create(shop, name="open_return", changes_data=True)
    scripted_inference.enqueue(Script(tokens=["Hello"]))
    reply = await verified_reply()

    await generate(reply)

    [request] = scripted_inference.chat_requests
    assert "tools" not in request.json
