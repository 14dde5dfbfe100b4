"""Business tools (tools/): import, the rules a tool must keep, running calls against a real local HTTP
server, the record of calls, the tools offered to the model, and admin's handling of the secret headers."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from conversations.models import Conversation
from cs_platform.pii import record_fields
from cs_platform.processes import free_port
from tests.factories import ConversationFactory
from tools.execution import ToolOutcome, tool_run, tools_offered, url_expand
from tools.models import Tool
from tools.services import tool_call_awaiting_record, tool_call_decide, tool_call_record

SECRET = "Bearer s3cret-token-7f2a9c"
ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "description": "The order number"}},
    "required": ["order_id"],
    "additionalProperties": False,
}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ShopServer:
    base_url: str
    seen: list[Seen] = field(default_factory=list)


class _ShopHandler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.shop.seen.append(Seen(self.command, self.path, dict(self.headers), body))
        path = urlsplit(self.path).path
        try:
            if path == "/hang":
                time.sleep(4)
                self._send(200, b'{"late": true}')
            elif path == "/fail":
                self._send(500, b'{"error": "database down"}')
            elif path == "/big":
                self._send(200, "é".encode() * 3000, "text/plain; charset=utf-8")
            elif path == "/latin1":
                self._send(200, "café".encode("latin-1"), "text/plain")
            else:
                echo = {"method": self.command, "path": self.path, "body": body.decode()}
                self._send(200, json.dumps(echo).encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


@pytest.fixture
def shop() -> Iterator[ShopServer]:
    """A real HTTP server on a free local port, in a thread, recording every request it saw."""
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _ShopHandler)
    server.daemon_threads = True
    server.block_on_close = False
    shop_server = ShopServer(base_url=f"http://127.0.0.1:{port}")
    server.shop = shop_server  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield shop_server
    finally:
        server.shutdown()
        server.server_close()


def new_conversation() -> Conversation:
    return cast(Conversation, ConversationFactory())


def make_tool(**fields: Any) -> Tool:
    """A tool that passes the model's checks, not saved (tool_run needs no database)."""
    values: dict[str, Any] = {
        "name": "order_status",
        "description_en": "Where an order is.",
        "description_zh_hans": "查询订单状态。",
        "parameters": ORDER_SCHEMA,
        "method": Tool.Method.GET,
        "url": "http://127.0.0.1:9/orders/{order_id}",
        "headers": {"Authorization": SECRET},
        **fields,
    }
    tool = Tool(**values)
    tool.clean_fields()
    tool.clean()
    return tool


def import_item(**fields: Any) -> dict[str, Any]:
    return {
        "name": "order_status",
        "description": {"en": "Where an order is.", "zh-Hans": "查询订单状态。"},
        "parameters": ORDER_SCHEMA,
        "method": "GET",
        "url": "https://shop.internal/api/orders/{order_id}",
        "headers": {"Authorization": SECRET},
        "changes_data": False,
        "needs_verified_customer": False,
        "timeout_seconds": 5,
        **fields,
    }


def run_import(tmp_path: Path, items: Any) -> tuple[str, str, str | None]:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    stdout, stderr = StringIO(), StringIO()
    try:
        call_command("import_tools", str(path), stdout=stdout, stderr=stderr)
    except CommandError as error:
        return stdout.getvalue(), stderr.getvalue(), str(error)
    return stdout.getvalue(), stderr.getvalue(), None


def tool_values(tool: Tool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description_en": tool.description_en,
        "description_zh_hans": tool.description_zh_hans,
        "parameters": tool.parameters,
        "method": tool.method,
        "url": tool.url,
        "headers": tool.headers,
        "changes_data": tool.changes_data,
        "needs_verified_customer": tool.needs_verified_customer,
        "timeout_seconds": tool.timeout_seconds,
        "max_response_bytes": tool.max_response_bytes,
        "channels": tool.channels,
        "enabled": tool.enabled,
    }


# Import


@pytest.mark.django_db
def test_it_imports_a_new_tool_with_every_field(tmp_path: Path) -> None:
    stdout, stderr, error = run_import(
        tmp_path, [import_item(channels=["widget", "api"], max_response_bytes=2048, enabled=False)]
    )

    assert (stdout, stderr, error) == ("tools: 1 created, 0 updated, 0 failed\n", "", None)
    assert tool_values(Tool.objects.get()) == {
        "name": "order_status",
        "description_en": "Where an order is.",
        "description_zh_hans": "查询订单状态。",
        "parameters": ORDER_SCHEMA,
        "method": "GET",
        "url": "https://shop.internal/api/orders/{order_id}",
        "headers": {"Authorization": SECRET},
        "changes_data": False,
        "needs_verified_customer": False,
        "timeout_seconds": 5,
        "max_response_bytes": 2048,
        "channels": ["widget", "api"],
        "enabled": False,
    }


@pytest.mark.django_db
def test_it_updates_a_tool_imported_again_by_name_keeping_what_the_file_leaves_out(tmp_path: Path) -> None:
    run_import(tmp_path, [import_item(channels=["api"])])
    first = Tool.objects.get()
    again = import_item(method="post", timeout_seconds=30, description={"en": "Track an order."})
    del again["headers"]

    stdout, stderr, error = run_import(tmp_path, [again])

    tool = Tool.objects.get()
    assert (stdout, stderr, error) == ("tools: 0 created, 1 updated, 0 failed\n", "", None)
    assert tool.pk == first.pk
    assert (tool.method, tool.timeout_seconds, tool.description_en, tool.description_zh_hans) == (
        "POST",
        30,
        "Track an order.",
        "",
    )
    assert (tool.headers, tool.channels) == ({"Authorization": SECRET}, ["api"])


@pytest.mark.django_db
def test_it_reports_every_bad_item_by_index_and_name_and_keeps_the_good_ones(tmp_path: Path) -> None:
    items = [
        import_item(name="good_one"),
        "not an object",
        import_item(name="bad name!"),
        import_item(name="typo", need_verified_customer=True),
        import_item(name="missing_url", url=None) | {"url": None},
        {k: v for k, v in import_item(name="no_flags").items() if k != "changes_data"},
        import_item(name="slow", timeout_seconds=61),
        import_item(name="flag_text", changes_data="yes"),
        import_item(name="good_two", method="PUT"),
    ]

    stdout, stderr, error = run_import(tmp_path, items)

    assert stdout == "tools: 2 created, 0 updated, 7 failed\n"
    assert stderr.splitlines() == [
        "failed: item 1: not an object ({…})",
        "failed: item 2 (bad name!): name: 1 to 64 letters, digits, _ or - (what OpenAI tool calling "
        "accepts).",
        "failed: item 3 (typo): unknown key(s): need_verified_customer",
        "failed: item 4 (missing_url): url must be text",
        "failed: item 5 (no_flags): missing key(s): changes_data",
        "failed: item 6 (slow): timeout_seconds: Ensure this value is less than or equal to 60.",
        "failed: item 7 (flag_text): changes_data must be true or false",
    ]
    assert error == "7 of 9 failed (see above)"
    assert sorted(Tool.objects.values_list("name", flat=True)) == ["good_one", "good_two"]


@pytest.mark.django_db
def test_it_refuses_parameters_that_are_not_a_json_schema_of_an_object(tmp_path: Path) -> None:
    items = [
        import_item(name="not_a_schema", parameters={"type": "object", "properties": {"a": {"type": 5}}}),
        import_item(name="array", parameters={"type": "array"}),
        import_item(name="list", parameters=[]),
        import_item(
            name="customer_param",
            parameters={"type": "object", "properties": {"customer_id": {"type": "string"}}},
            url="https://shop.internal/api/orders",
        ),
    ]

    stdout, stderr, error = run_import(tmp_path, items)

    assert stderr.splitlines() == [
        "failed: item 0 (not_a_schema): parameters: Not a valid JSON Schema: at $.properties.a.type: 5 is "
        "not valid under any of the given schemas",
        'failed: item 1 (array): parameters: The parameters must describe an object: "type": "object" '
        "(OpenAI tool calling requires it).",
        "failed: item 2 (list): parameters: The parameters must be a JSON Schema object ({…}).",
        'failed: item 3 (customer_param): parameters: No parameter may be called "customer_id": the '
        "customer's id comes from the verified customer only, never from the model.",
    ]
    assert (stdout, error) == ("tools: 0 created, 0 updated, 4 failed\n", "4 of 4 failed (see above)")
    assert Tool.objects.count() == 0


@pytest.mark.django_db
def test_it_refuses_a_file_that_is_not_json_or_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_text("[{", encoding="utf-8")

    with pytest.raises(CommandError) as not_json:
        call_command("import_tools", str(path), stdout=StringIO(), stderr=StringIO())
    path.write_text('{"name": "x"}', encoding="utf-8")
    with pytest.raises(CommandError) as not_list:
        call_command("import_tools", str(path), stdout=StringIO(), stderr=StringIO())

    assert str(not_json.value).startswith(f"{path}: not JSON: Expecting property name")
    assert str(not_list.value) == f"{path}: The file must hold a JSON list of tools ([{{…}}, …])."
    assert Tool.objects.count() == 0


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("https://{host}/orders", "Placeholders may only be in the path and the query"),
        ("https://shop.internal:{port}/orders", "Placeholders may only be in the path and the query"),
        ("{scheme}://shop.internal/orders", "The URL must start with http:// or https://."),
        ("ftp://shop.internal/orders", "The URL must start with http:// or https://."),
        ("/orders/{order_id}", "The URL must start with http:// or https://."),
        ("https://shop.internal/orders/{order-id}", "A brace that is not a placeholder"),
        ("https://shop.internal/orders/{order_id}#top", "The URL may not have a fragment (#…)."),
        ("https://user:pw@shop.internal/orders", "Put credentials in the headers, not in the URL."),
        ("https://shop.internal/orders/{number}", "{number} is not one of the parameters' properties."),
        (
            "https://shop.internal/c/{customer_id}/orders",
            "The URL uses {customer_id}: the tool needs a verified",
        ),
    ],
)
def test_it_refuses_a_url_template_that_could_send_the_call_elsewhere_or_not_be_filled(
    url: str, error: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        make_tool(url=url)

    assert error in " ".join(
        message for messages in refused.value.message_dict.values() for message in messages
    )


def test_it_refuses_headers_the_call_writes_itself() -> None:
    with pytest.raises(ValidationError) as refused:
        make_tool(headers={"Host": "elsewhere.example"})

    assert refused.value.message_dict == {"headers": ["The header Host is set by the call itself."]}


def test_it_refuses_header_values_on_several_lines_without_quoting_them() -> None:
    with pytest.raises(ValidationError) as refused:
        make_tool(headers={"Authorization": f"{SECRET}\r\nX-Evil: 1"})

    assert refused.value.message_dict == {
        "headers": [
            "The value of header Authorization may only contain printable ASCII characters (no line breaks)."
        ]
    }
    assert SECRET not in str(refused.value)


# Running a call


async def test_it_gets_with_the_path_argument_url_encoded_so_it_cannot_leave_the_path(
    shop: ShopServer,
) -> None:
    tool = make_tool(
        url=f"{shop.base_url}/orders/{{order_id}}?source=chat",
        parameters={
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "include": {"type": "array"},
                "page": {"type": "integer"},
            },
            "required": ["order_id"],
        },
    )

    outcome = await tool_run(
        tool, '{"order_id": "../admin/1 2", "include": ["items", "shipments"], "page": 2}', customer_id=None
    )

    assert [(seen.method, seen.path, seen.body) for seen in shop.seen] == [
        ("GET", "/orders/%2E%2E%2Fadmin%2F1%202?source=chat&include=items&include=shipments&page=2", b"")
    ]
    assert shop.seen[0].headers["Authorization"] == SECRET
    assert (outcome.outcome, outcome.status_code, outcome.truncated) == ("ok", 200, False)
    assert json.loads(outcome.content_for_model) == {
        "method": "GET",
        "path": "/orders/%2E%2E%2Fadmin%2F1%202?source=chat&include=items&include=shipments&page=2",
        "body": "",
    }


def test_it_refuses_a_parameter_that_would_repeat_a_query_parameter_the_url_fixes() -> None:
    with pytest.raises(ValidationError) as refused:
        make_tool(
            url="https://shop.internal/orders?customer={customer_id}&status={status}",
            parameters={
                "type": "object",
                "properties": {"customer": {"type": "string"}, "status": {"type": "string"}},
            },
            needs_verified_customer=True,
        )

    assert refused.value.message_dict == {
        "parameters": [
            "The parameter customer would repeat the URL's own query parameter customer: rename it."
        ]
    }


async def test_it_never_lets_an_undeclared_argument_replace_a_query_parameter_the_url_fixes(
    shop: ShopServer,
) -> None:
    tool = make_tool(
        name="my_orders",
        url=f"{shop.base_url}/orders?customer={{customer_id}}",
        parameters={"type": "object"},
        needs_verified_customer=True,
    )

    outcome = await tool_run(tool, '{"customer": "someone-else"}', customer_id="cust-42")

    assert (outcome.outcome, outcome.content_for_model) == (
        "invalid_arguments",
        "The argument customer is not one of the tool's parameters: the tool's URL sets it.",
    )
    assert shop.seen == []


def test_it_never_lets_a_dot_segment_through_the_path() -> None:
    url, used = url_expand("https://shop.internal/a/{x}/{y}", {"x": "..", "y": "."}, customer_id=None)

    assert (url, used) == ("https://shop.internal/a/%2E%2E/%2E", {"x", "y"})


def test_it_expands_a_url_whose_host_is_in_capitals_with_its_default_port_written_out() -> None:
    url, used = url_expand("https://Shop.Internal:443/a/{x}?q={x}", {"x": "é 1"}, customer_id=None)

    assert (url, used) == ("https://Shop.Internal:443/a/%C3%A9%201?q=%C3%A9%201", {"x"})


async def test_it_posts_the_arguments_but_the_path_ones_as_a_json_body(shop: ShopServer) -> None:
    tool = make_tool(
        name="return_open",
        method=Tool.Method.POST,
        url=f"{shop.base_url}/orders/{{order_id}}/returns",
        parameters={
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "reason": {"type": "string"},
                "items": {"type": "array"},
            },
            "required": ["order_id", "reason"],
        },
        changes_data=True,
    )

    outcome = await tool_run(
        tool, '{"order_id": "1234", "reason": "broken", "items": [1, 2]}', customer_id=None
    )

    assert [(seen.method, seen.path, json.loads(seen.body)) for seen in shop.seen] == [
        ("POST", "/orders/1234/returns", {"reason": "broken", "items": [1, 2]})
    ]
    assert shop.seen[0].headers["Content-Type"] == "application/json"
    assert (outcome.outcome, outcome.status_code) == ("ok", 200)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            '{"order_id": 1234}',
            "The arguments do not match the tool's parameters: at $.order_id: 1234 is not of type 'string'.",
        ),
        ("{}", "The arguments do not match the tool's parameters: at $: 'order_id' is a required property."),
        (
            '{"order_id": "1", "extra": true}',
            "The arguments do not match the tool's parameters: at $: Additional properties are not allowed "
            "('extra' was unexpected).",
        ),
        ('{"order_id": ', "The arguments are not valid JSON: Expecting value: line 1 column 14 (char 13)."),
        ('["1234"]', "The arguments must be a JSON object of the tool's parameters."),
    ],
)
async def test_it_never_sends_arguments_that_do_not_match_the_schema(
    shop: ShopServer, arguments: str, message: str
) -> None:
    tool = make_tool(url=f"{shop.base_url}/orders/{{order_id}}")

    outcome = await tool_run(tool, arguments, customer_id=None)

    assert (outcome.outcome, outcome.status_code, outcome.content_for_model) == (
        "invalid_arguments",
        None,
        message,
    )
    assert shop.seen == []


async def test_it_gives_up_on_a_hanging_server_within_the_timeout(shop: ShopServer) -> None:
    tool = make_tool(url=f"{shop.base_url}/hang", parameters={"type": "object"}, timeout_seconds=1)

    started = time.monotonic()
    outcome = await tool_run(tool, "{}", customer_id=None)
    elapsed = time.monotonic() - started

    assert (outcome.outcome, outcome.status_code, outcome.content_for_model) == (
        "timeout",
        None,
        "The tool did not answer within 1 seconds: it may be busy.",
    )
    assert 1.0 <= elapsed < 2.5
    assert 1000 <= outcome.duration_ms < 2500
    assert [seen.path for seen in shop.seen] == ["/hang"]


async def test_it_ends_a_500_in_an_error_naming_the_status(shop: ShopServer) -> None:
    tool = make_tool(url=f"{shop.base_url}/fail", parameters={"type": "object"})

    outcome = await tool_run(tool, "", customer_id=None)

    assert (outcome.outcome, outcome.status_code, outcome.content_for_model) == (
        "error",
        500,
        "The tool failed: its API answered HTTP 500 Internal Server Error. "
        'Its answer: {"error": "database down"}',
    )


async def test_it_cuts_an_oversized_answer_at_the_limit_and_says_so(shop: ShopServer) -> None:
    # "é" is two bytes: 1001 cuts one in half, and the half is dropped rather than called invalid.
    tool = make_tool(url=f"{shop.base_url}/big", parameters={"type": "object"}, max_response_bytes=1001)

    outcome = await tool_run(tool, "{}", customer_id=None)

    assert (outcome.outcome, outcome.status_code, outcome.truncated) == ("ok", 200, True)
    assert outcome.content_for_model == "é" * 500 + (
        "\n[The answer was longer than 1001 bytes: only its beginning is above.]"
    )


async def test_it_ends_an_answer_that_is_not_utf8_in_an_error(shop: ShopServer) -> None:
    tool = make_tool(url=f"{shop.base_url}/latin1", parameters={"type": "object"})

    outcome = await tool_run(tool, "{}", customer_id=None)

    assert (outcome.outcome, outcome.status_code, outcome.content_for_model) == (
        "error",
        200,
        "The tool failed: its API answered in an encoding other than UTF-8.",
    )


async def test_it_ends_an_unreachable_api_in_an_error() -> None:
    tool = make_tool(url=f"http://127.0.0.1:{free_port()}/orders", parameters={"type": "object"})

    outcome = await tool_run(tool, "{}", customer_id=None)

    assert (outcome.outcome, outcome.status_code, outcome.content_for_model) == (
        "error",
        None,
        "The tool could not be reached (ConnectError).",
    )


async def test_it_refuses_a_customer_tool_without_a_verified_customer_and_fills_in_the_verified_one(
    shop: ShopServer,
) -> None:
    tool = make_tool(
        name="my_orders",
        url=f"{shop.base_url}/customers/{{customer_id}}/orders?status={{status}}",
        parameters={"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]},
        needs_verified_customer=True,
    )

    refused = await tool_run(tool, '{"status": "open"}', customer_id=None)
    seen_refused = list(shop.seen)
    answered = await tool_run(tool, '{"status": "open"}', customer_id="cust/42")

    assert (refused.outcome, refused.status_code) == ("refused", None)
    assert refused.content_for_model.startswith(
        "This tool looks up a customer's own data and this customer is not verified"
    )
    assert seen_refused == []
    assert [seen.path for seen in shop.seen] == ["/customers/cust%2F42/orders?status=open"]
    assert (answered.outcome, answered.status_code) == ("ok", 200)


@pytest.mark.django_db
def test_it_sends_the_header_secret_but_never_logs_or_records_it(
    shop: ShopServer, caplog: pytest.LogCaptureFixture
) -> None:
    for logger_name in ("", "httpx", "httpcore", "tools"):
        caplog.set_level(logging.DEBUG, logger=logger_name)
    tool = make_tool(url=f"{shop.base_url}/orders/{{order_id}}")
    tool.save()
    conversation = new_conversation()

    outcome = asyncio.run(tool_run(tool, '{"order_id": "1234"}', customer_id=None))
    call = tool_call_record(
        conversation=conversation,
        tool=tool,
        call_id="call_1",
        arguments_json='{"order_id": "1234"}',
        outcome=outcome,
    )

    assert shop.seen[0].headers["Authorization"] == SECRET
    assert outcome.outcome == "ok"
    assert [record.getMessage() for record in caplog.records if record.name == "tools.execution"] == [
        "Tool order_status: ok"
    ]
    # httpx's and httpcore's own lines were captured too (the request line, the connection's steps).
    assert {"httpx", "httpcore.http11", "httpcore.connection"} <= {record.name for record in caplog.records}
    logged = caplog.text + " ".join(str(record_fields(record)) for record in caplog.records)
    assert "s3cret" not in logged
    assert str(call) == "order_status (ok)"
    assert "s3cret" not in " ".join(
        str(value) for value in (call, repr(call), call.arguments, call.result, call.tool_name)
    )


# The record of calls


@pytest.mark.django_db
def test_it_records_a_call_with_personal_data_masked_and_the_result_cut() -> None:
    tool = make_tool(max_response_bytes=40)
    tool.save()
    conversation = new_conversation()
    outcome = ToolOutcome("ok", 200, '{"phone": "13812345678", "note": "' + "x" * 100 + '"}', 12)

    call = tool_call_record(
        conversation=conversation,
        tool=tool,
        call_id="call_7",
        arguments_json='{"order_id": "1234", "contact": {"email": "li.wei@example.com"}}',
        outcome=outcome,
    )

    call.refresh_from_db()
    assert (call.tool_name, call.call_id, call.outcome, call.status_code, call.duration_ms) == (
        "order_status",
        "call_7",
        "ok",
        200,
        12,
    )
    assert call.arguments == {"order_id": "1234", "contact": {"email": "l***@example.com"}}
    assert call.result == '{"phone": "138****5678", "note": "xxxxxx'
    assert (call.reply, call.confirmed_by, call.confirmed_at) == (None, None, None)


@pytest.mark.django_db
def test_it_records_arguments_that_are_not_json_as_the_text_sent() -> None:
    conversation = new_conversation()
    outcome = ToolOutcome("invalid_arguments", None, "The arguments are not valid JSON.", 0)

    call = tool_call_record(
        conversation=conversation,
        tool=None,
        tool_name="made_up",
        call_id="call_8",
        arguments_json='{"phone": 13812345678',
        outcome=outcome,
    )

    call.refresh_from_db()
    assert (call.tool_id, call.tool_name, call.arguments) == (None, "made_up", '{"phone": 138****5678')


@pytest.mark.django_db
def test_it_takes_one_answer_to_a_proposed_call_only() -> None:
    tool = make_tool(changes_data=True)
    tool.save()
    agent = User.objects.create_user("agent", password="pw-agent-1", is_staff=True)
    proposed = tool_call_awaiting_record(
        conversation=new_conversation(), tool=tool, call_id="call_9", arguments_json='{"order_id": "1"}'
    )
    declined = tool_call_awaiting_record(
        conversation=new_conversation(), tool=tool, call_id="call_10", arguments_json='{"order_id": "2"}'
    )

    answers = [
        tool_call_decide(tool_call_id=proposed.pk, accept=True, confirmed_by=agent),
        tool_call_decide(tool_call_id=proposed.pk, accept=True),
        tool_call_decide(tool_call_id=proposed.pk, accept=False),
        tool_call_decide(tool_call_id=declined.pk, accept=False),
        tool_call_decide(tool_call_id=declined.pk, accept=True),
    ]

    proposed.refresh_from_db()
    declined.refresh_from_db()
    assert answers == [True, False, False, True, False]
    assert (proposed.outcome, proposed.confirmed_by, proposed.confirmed_at is not None) == (
        "awaiting_confirmation",
        agent,
        True,
    )
    assert (declined.outcome, declined.confirmed_by, declined.confirmed_at is not None) == (
        "declined",
        None,
        True,
    )


# Offered to the model


@pytest.mark.django_db
def test_it_offers_the_enabled_tools_of_the_channel_customer_ones_only_when_verified_in_the_locale() -> None:
    make_tool(name="faq_search", description_zh_hans="", channels=["widget", "api"]).save()
    make_tool(
        name="my_orders",
        url="https://shop.internal/customers/{customer_id}/orders",
        parameters={"type": "object"},
        needs_verified_customer=True,
    ).save()
    make_tool(name="api_only", channels=["api"]).save()
    make_tool(name="switched_off", enabled=False).save()

    def offered(**arguments: Any) -> list[tuple[str, str]]:
        return [
            (entry["function"]["name"], entry["function"]["description"])
            for entry in tools_offered(**arguments)
        ]

    first = tools_offered(channel="widget", customer_verified=False, locale="en")
    assert first == [
        {
            "type": "function",
            "function": {
                "name": "faq_search",
                "description": "Where an order is.",
                "parameters": ORDER_SCHEMA,
            },
        }
    ]
    assert offered(channel="widget", customer_verified=True, locale="zh-Hans") == [
        ("faq_search", "Where an order is."),
        ("my_orders", "查询订单状态。"),
    ]
    assert offered(channel="api", customer_verified=False, locale="en") == [
        ("api_only", "Where an order is."),
        ("faq_search", "Where an order is."),
    ]


# Admin


@pytest.fixture
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def superuser_client() -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw-root-1")
    client = Client()
    client.force_login(user)
    return client


def form_data(tool: Tool, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": tool.name,
        "enabled": "on",
        "channels": tool.channels,
        "description_en": tool.description_en,
        "description_zh_hans": tool.description_zh_hans,
        "parameters": json.dumps(tool.parameters),
        "method": tool.method,
        "url": tool.url,
        "timeout_seconds": tool.timeout_seconds,
        "max_response_bytes": tool.max_response_bytes,
    }
    for index, name in enumerate(sorted(tool.headers)):
        data |= {f"headers_saved_{index}": name, f"headers_name_{index}": name, f"headers_value_{index}": ""}
    return data | changes


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_password_hashing")
def test_it_never_shows_a_saved_header_value_in_admin_and_keeps_it_when_left_empty() -> None:
    tool = make_tool(headers={"Authorization": SECRET, "X-Shop": "demo"})
    tool.save()
    client = superuser_client()
    url = f"/admin/tools/tool/{tool.pk}/change/"

    page = client.get(url).content.decode()
    listed = client.get("/admin/tools/tool/").content.decode()
    kept = client.post(url, form_data(tool, description_en="Track an order."))
    tool.refresh_from_db()
    headers_after_keep = tool.headers
    replaced = client.post(
        url,
        form_data(
            tool, headers_value_1="other", headers_name_0="", headers_name_2="X-New", headers_value_2="v"
        ),
    )
    tool.refresh_from_db()

    assert "s3cret" not in page
    assert "s3cret" not in listed
    # Each saved header's placeholder and the mark beside it, and the help text.
    assert page.count("•••• (saved)") == 5
    assert 'name="headers_name_0" value="Authorization"' in page
    assert (kept.status_code, replaced.status_code) == (302, 302)
    assert headers_after_keep == {"Authorization": SECRET, "X-Shop": "demo"}
    assert tool.headers == {"X-Shop": "other", "X-New": "v"}
    assert tool.description_en == "Track an order."


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_password_hashing")
def test_it_adds_a_tool_in_admin_with_a_secret_header() -> None:
    client = superuser_client()
    data = form_data(make_tool(headers={})) | {
        "headers_saved_0": "",
        "headers_name_0": "Authorization",
        "headers_value_0": SECRET,
        "headers_name_1": "",
        "headers_value_1": "",
    }

    form_page = client.get("/admin/tools/tool/add/").content.decode()
    response = client.post("/admin/tools/tool/add/", data)

    tool = Tool.objects.get()
    assert 'name="headers_name_2"' in form_page
    assert response.status_code == 302
    assert (tool.name, tool.headers, tool.channels) == ("order_status", {"Authorization": SECRET}, ["widget"])
    assert "s3cret" not in client.get(f"/admin/tools/tool/{tool.pk}/change/").content.decode()


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_password_hashing")
def test_it_shows_schema_errors_in_admin_and_saves_nothing() -> None:
    tool = make_tool()
    tool.save()
    client = superuser_client()
    url = f"/admin/tools/tool/{tool.pk}/change/"

    response = client.post(url, form_data(tool, parameters='{"type": "array"}', url="https://{host}/x"))
    page = response.content.decode()

    assert response.status_code == 200
    assert "The parameters must describe an object" in page
    assert "Placeholders may only be in the path and the query" in page
    assert "s3cret" not in page
    tool.refresh_from_db()
    assert (tool.parameters, tool.headers) == (ORDER_SCHEMA, {"Authorization": SECRET})


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_password_hashing")
def test_it_refuses_tools_in_admin_to_staff_even_with_the_permissions_given_by_hand() -> None:
    tool = make_tool()
    tool.save()
    user = User.objects.create_user("sue", password="pw-sue-1", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="tools", codename__endswith="_tool")
    )
    client = Client()
    client.force_login(user)

    statuses = [
        client.get("/admin/tools/tool/").status_code,
        client.get(f"/admin/tools/tool/{tool.pk}/change/").status_code,
        client.post(f"/admin/tools/tool/{tool.pk}/delete/", {"post": "yes"}).status_code,
    ]

    assert statuses == [403, 403, 403]
    assert Tool.objects.filter(pk=tool.pk).exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("_fast_password_hashing")
def test_it_shows_tool_calls_read_only() -> None:
    tool = make_tool()
    tool.save()
    call = tool_call_record(
        conversation=new_conversation(),
        tool=tool,
        call_id="call_3",
        arguments_json='{"order_id": "1234"}',
        outcome=ToolOutcome("error", 500, "The tool failed.", 40),
    )
    client = superuser_client()

    listed = client.get("/admin/tools/toolcall/").content.decode()
    found = client.get("/admin/tools/toolcall/", {"q": "call_3"})
    page = client.get(f"/admin/tools/toolcall/{call.pk}/change/").content.decode()
    changed = client.post(f"/admin/tools/toolcall/{call.pk}/change/", {"outcome": "ok"}).status_code

    assert "call_3" in listed
    assert (found.status_code, f"/admin/tools/toolcall/{call.pk}/change/" in found.content.decode()) == (
        200,
        True,
    )
    assert "order_status" in listed
    assert "&quot;order_id&quot;: &quot;1234&quot;" in page
    assert "The tool failed." in page
    assert "s3cret" not in page
    assert client.get("/admin/tools/toolcall/add/").status_code == 403
    assert changed == 403
    call.refresh_from_db()
    assert call.outcome == "error"
