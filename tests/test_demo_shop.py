"""The demo shop's API (cs_platform/demo_shop.py) and the demo tools that call it (tools/demo/).

The API through the test client; the tools imported with tools_import and run with tool_run against a
live server serving the API, as the platform's own daphne serves it under `make run`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import clear_url_caches, include, path

import cs_platform.urls
from cs_platform import demo, demo_shop
from tools.execution import tool_run
from tools.models import Tool, ToolCall
from tools.services import tools_import

# The API mounted as cs_platform/urls.py mounts it when DEMO_SHOP_ENABLED (off in the test settings).
urlpatterns = [path("demo/shop/api/", include("cs_platform.demo_shop"))]
pytestmark = pytest.mark.urls(__name__)

API = "/demo/shop/api"
DEMO_TOOL_NAMES = ["order_status", "recent_orders", "shipment_tracking", "invoice_status", "open_return"]


@pytest.fixture(autouse=True)
def _returns_cleared() -> None:
    demo_shop.demo_shop_returns_clear()


def get(client: Client, url: str, *, token: str | None = None) -> Any:
    return client.get(url, headers={"Authorization": f"Bearer {token or demo_shop.demo_shop_token()}"})


def post_return(client: Client, customer: str, body: Any) -> Any:
    return client.post(
        f"{API}/returns?customer={customer}",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {demo_shop.demo_shop_token()}"},
    )


def days_ago(days: int) -> str:
    return (demo_shop._today() - timedelta(days=days)).isoformat()


def test_it_refuses_a_request_without_the_token(client: Client) -> None:
    for response in (
        client.get(f"{API}/orders/AC20261123001234?customer=C-1001"),
        client.get(f"{API}/shipments/SF1234567890"),
        get(client, f"{API}/orders?customer=C-1001", token="not-the-token"),
        client.get(f"{API}/shipments/SF1234567890", headers={"Authorization": demo_shop.demo_shop_token()}),
        client.post(f"{API}/returns?customer=C-1042", data="{}", content_type="application/json"),
    ):
        assert response.status_code == 401
        assert response.json() == {
            "error": "A valid bearer token is required.",
            "error_zh_hans": "需要有效的访问令牌。",
        }
        assert response["WWW-Authenticate"] == 'Bearer realm="demo-shop"'
    assert demo_shop._returns.by_number == {}


def test_it_derives_the_token_from_the_secret_key(settings: Any) -> None:
    first = demo_shop.demo_shop_token()
    settings.SECRET_KEY = "another secret key"
    assert len(first) == 64
    assert demo_shop.demo_shop_token() != first


def test_it_answers_the_customers_order(client: Client) -> None:
    response = get(client, f"{API}/orders/AC20261123001234?customer=C-1001")
    assert response.status_code == 200
    order = response.json()
    assert order["order_number"] == "AC20261123001234"
    assert order["placed_on"] == days_ago(3)
    assert (order["status"], order["status_text"]) == ("shipped", {"en": "Shipped", "zh-Hans": "已发货"})
    assert order["items"] == [
        {
            "sku": "ACM-HP-200",
            "name": {"en": "Acme SoundAir Pro wireless headphones", "zh-Hans": "Acme SoundAir Pro 无线耳机"},
            "quantity": 1,
            "unit_price": "499.00",
            "returnable": True,
        },
        {
            "sku": "ACM-CS-015",
            "name": {"en": "Clear phone case", "zh-Hans": "透明手机壳"},
            "quantity": 2,
            "unit_price": "29.50",
            "returnable": True,
        },
    ]
    assert (order["amount_paid"], order["currency"]) == ("558.00", "CNY")
    assert order["shipments"] == [
        {
            "tracking_number": "SF1234567890",
            "carrier": {"en": "SF Express", "zh-Hans": "顺丰速运"},
            "status": "out_for_delivery",
            "status_text": {"en": "Out for delivery", "zh-Hans": "派送中"},
        },
        {
            "tracking_number": "JDX000123456789",
            "carrier": {"en": "JD Logistics", "zh-Hans": "京东物流"},
            "status": "delivered",
            "status_text": {"en": "Delivered", "zh-Hans": "已签收"},
        },
    ]
    assert order["invoice_number"] == "26312000000012345678"
    assert (order["can_cancel"], order["can_change_address"], order["can_return"]) == (False, False, False)
    # Chinese as it is, not \\uXXXX escapes: the model reads fewer tokens.
    assert "已发货".encode() in response.content


def test_it_finds_an_order_by_its_last_digits(client: Client) -> None:
    response = get(client, f"{API}/orders/1234?customer=C-1001")
    assert response.status_code == 200
    assert response.json()["order_number"] == "AC20261123001234"
    assert get(client, f"{API}/orders/ac20261207007788?customer=C-1001").json()["status"] == "processing"


def test_it_answers_404_for_another_customers_order_as_for_none(client: Client) -> None:
    theirs = get(client, f"{API}/orders/AC20261123001234?customer=C-1042")
    short = get(client, f"{API}/orders/1234?customer=C-1042")
    none = get(client, f"{API}/orders/AC20269999999999?customer=C-1042")
    assert (theirs.status_code, short.status_code, none.status_code) == (404, 404, 404)
    assert theirs.json() == {
        "error": "No order AC20261123001234 for this customer.",
        "error_zh_hans": "该客户没有订单 AC20261123001234。",
    }
    assert none.json()["error"] == "No order AC20269999999999 for this customer."
    # Three digits name no order: "123" would match too much.
    assert get(client, f"{API}/orders/234?customer=C-1001").status_code == 404


def test_it_needs_the_customer_for_a_customers_data(client: Client) -> None:
    for url in (f"{API}/orders/AC20261123001234", f"{API}/orders", f"{API}/invoices/26312000000012345678"):
        response = get(client, url)
        assert response.status_code == 400
        assert response.json()["error"] == "The customer query parameter is required."


def test_it_lists_the_customers_recent_orders_newest_first(client: Client) -> None:
    response = get(client, f"{API}/orders?customer=C-1001")
    assert response.status_code == 200
    orders = response.json()["orders"]
    assert [order["order_number"] for order in orders] == [
        "AC20261207007788",
        "AC20261123001234",
        "AC20261102004521",
    ]
    assert orders[0] == {
        "order_number": "AC20261207007788",
        "placed_on": days_ago(1),
        "status": "processing",
        "status_text": {
            "en": "Processing (being picked in the warehouse)",
            "zh-Hans": "处理中（仓库拣货中）",
        },
        "items": [{"name": {"en": "20000 mAh power bank", "zh-Hans": "20000 毫安时充电宝"}, "quantity": 1}],
        "amount_paid": "149.00",
        "currency": "CNY",
    }
    assert get(client, f"{API}/orders?customer=C-0000").json() == {"orders": []}


def test_it_tracks_a_parcel_by_its_number_alone(client: Client) -> None:
    response = get(client, f"{API}/shipments/sf1234567890")
    assert response.status_code == 200
    shipment = response.json()
    assert shipment["tracking_number"] == "SF1234567890"
    assert shipment["status_text"] == {"en": "Out for delivery", "zh-Hans": "派送中"}
    assert shipment["parcel"] == {"number": 1, "of": 2}
    assert shipment["estimated_delivery_on"] == days_ago(0)
    assert [event["description"]["zh-Hans"] for event in shipment["events"]] == [
        "快递员正在派送",
        "已到达转运中心",
        "已从 Acme 仓库揽收",
    ]
    assert (shipment["no_update_for_72_hours"], shipment["note"]) == (False, None)
    # Anyone with a label can ask: the answer names neither the order nor the customer.
    assert "AC20261123001234" not in response.content.decode()
    assert "C-1001" not in response.content.decode()


def test_it_says_when_a_parcel_has_had_no_update_for_72_hours(client: Client) -> None:
    shipment = get(client, f"{API}/shipments/EA123456785CN").json()
    assert shipment["carrier"] == {"en": "China Post / EMS", "zh-Hans": "中国邮政 EMS"}
    assert shipment["no_update_for_72_hours"] is True
    assert shipment["note"]["en"].startswith("No tracking update for more than 72 hours")


def test_it_answers_404_for_an_unknown_parcel(client: Client) -> None:
    response = get(client, f"{API}/shipments/SF0000000000")
    assert response.status_code == 404
    assert response.json() == {
        "error": "No Acme Store parcel has the tracking number SF0000000000.",
        "error_zh_hans": "没有运单号为 SF0000000000 的 Acme 包裹。",
    }


def test_it_answers_an_invoice_by_its_number_or_its_orders(client: Client) -> None:
    by_number = get(client, f"{API}/invoices/26312000000012345678?customer=C-1001").json()
    by_order = get(client, f"{API}/invoices/1234?customer=C-1001").json()
    assert by_number == by_order
    assert by_number["type_text"] == {
        "en": "General VAT invoice (e-fapiao)",
        "zh-Hans": "增值税普通发票（电子发票）",
    }
    assert (by_number["amount"], by_number["issued_on"], by_number["tax_id"]) == ("558.00", days_ago(1), None)
    assert by_number["reissue"]["allowed"] is True
    assert by_number["reissue"]["until"] == (demo_shop._today() + timedelta(days=29)).isoformat()


def test_it_says_when_an_invoice_cannot_be_reissued(client: Client) -> None:
    late = get(client, f"{API}/invoices/26312000000045210001?customer=C-1001").json()
    deducted = get(client, f"{API}/invoices/AC20261128003356?customer=C-1042").json()
    again = get(client, f"{API}/invoices/26650000000055660002?customer=C-4711").json()
    assert (late["title"], late["tax_id"]) == ("上海示例科技有限公司", "91310115MA1K3YJ52X")
    assert late["reissue"]["allowed"] is False
    assert late["reissue"]["reason"]["en"].startswith("More than 30 days since it was issued")
    assert deducted["type"] == "special"
    assert deducted["reissue"] == {
        "allowed": False,
        "until": None,
        "reason": {
            "en": "This special VAT invoice has been used for deduction: the customer cannot re-issue it; "
            "Acme Support handles it.",
            "zh-Hans": "该增值税专用发票已用于抵扣，客户无法自行重开，请联系 Acme 客服处理。",
        },
    }
    assert (
        again["reissue"]["reason"]["en"]
        == "This invoice was re-issued once already: it can be re-issued only once."
    )


def test_it_answers_404_for_another_customers_invoice_and_an_order_not_invoiced_yet(client: Client) -> None:
    theirs = get(client, f"{API}/invoices/26312000000012345678?customer=C-1042")
    not_yet = get(client, f"{API}/invoices/AC20261207007788?customer=C-1001")
    assert (theirs.status_code, not_yet.status_code) == (404, 404)
    assert theirs.json()["error"] == "No invoice 26312000000012345678 for this customer."
    assert not_yet.json()["error"] == (
        "Order AC20261207007788 has no invoice yet: it is issued within 24 hours of shipping."
    )


def test_it_opens_a_return_once(client: Client) -> None:
    body = {"order_id": "3356", "items": [{"sku": "acm-af-550", "quantity": 1}], "reason": "defective"}
    response = post_return(client, "C-1042", body)
    assert response.status_code == 201
    opened = response.json()
    number = f"RT{demo_shop._today():%Y%m%d}0001"
    assert opened["return_number"] == number
    assert opened["order_number"] == "AC20261128003356"
    assert opened["items"] == [
        {"sku": "ACM-AF-550", "name": {"en": "5.5 L air fryer", "zh-Hans": "5.5 升空气炸锅"}, "quantity": 1}
    ]
    assert (opened["pickup_fee"], opened["pickup"]["zh-Hans"]) == ("0.00", "免费顺丰上门取件。")
    again = post_return(client, "C-1042", body)
    assert again.status_code == 409
    assert again.json()["error"] == "A return is already open for ACM-AF-550 of order AC20261128003356."
    assert list(demo_shop._returns.by_number) == [number]


def test_it_deducts_the_pickup_for_a_change_of_mind(client: Client) -> None:
    body = {
        "order_id": "AC20261128003356",
        "items": [{"sku": "ACM-AF-550", "quantity": 1}],
        "reason": "changed_mind",
    }
    opened = post_return(client, "C-1042", body).json()
    assert opened["pickup_fee"] == "10.00"
    assert opened["pickup"]["en"] == "SF Express pickup: ¥10 is deducted from the refund."


@pytest.mark.parametrize(
    ("customer", "body", "status", "error"),
    [
        (
            "C-1042",
            {
                "order_id": "AC20261128003356",
                "items": [{"sku": "ACM-TB-ENG", "quantity": 1}],
                "reason": "changed_mind",
            },
            409,
            "Engraved vacuum tumbler is personalised and cannot be returned (unless defective).",
        ),
        (
            "C-1001",
            {"order_id": "1234", "items": [{"sku": "ACM-HP-200", "quantity": 1}], "reason": "defective"},
            409,
            "Order AC20261123001234 is shipped: only a delivered order can be returned.",
        ),
        (
            "C-1001",
            {
                "order_id": "AC20261102004521",
                "items": [{"sku": "ACM-KT-170", "quantity": 1}],
                "reason": "defective",
            },
            409,
            f"The 30-day return window of order AC20261102004521 ended on {days_ago(3)}; a defect is covered "
            "by the 1-year warranty (repair).",
        ),
        (
            "C-1042",
            {"order_id": "3356", "items": [{"sku": "ACM-AF-550", "quantity": 2}], "reason": "defective"},
            409,
            "Order AC20261128003356 has only 1 of ACM-AF-550.",
        ),
        (
            "C-1001",
            {"order_id": "3356", "items": [{"sku": "ACM-AF-550", "quantity": 1}], "reason": "defective"},
            404,
            "No order 3356 for this customer.",
        ),
        (
            "C-1042",
            {"order_id": "3356", "items": [{"sku": "ACM-AF-550", "quantity": 1}], "reason": "bored"},
            400,
            "reason must be one of: defective, damaged, wrong_item, changed_mind.",
        ),
        ("C-1042", {"order_id": "3356", "items": [], "reason": "defective"}, 400, None),
        ("C-1042", ["not", "an", "object"], 400, "The body must be a JSON object."),
    ],
)
def test_it_refuses_a_return_the_rules_do_not_allow(
    client: Client, customer: str, body: Any, status: int, error: str | None
) -> None:
    response = post_return(client, customer, body)
    assert response.status_code == status
    assert response.json()["error"] == (error or "items must be a non-empty list of {sku, quantity}.")
    assert demo_shop._returns.by_number == {}


def test_it_reads_only_with_get_and_writes_only_with_post(client: Client) -> None:
    token = {"Authorization": f"Bearer {demo_shop.demo_shop_token()}"}
    assert client.post(f"{API}/orders?customer=C-1001", headers=token).status_code == 405
    assert client.get(f"{API}/returns?customer=C-1042", headers=token).status_code == 405


def test_it_mounts_the_api_only_when_the_demo_shop_is_enabled(settings: Any) -> None:
    original = django_settings.DEMO_SHOP_ENABLED
    try:
        settings.DEMO_SHOP_ENABLED = True
        enabled = [str(pattern.pattern) for pattern in importlib.reload(cs_platform.urls).urlpatterns]
        settings.DEMO_SHOP_ENABLED = False
        disabled = [str(pattern.pattern) for pattern in importlib.reload(cs_platform.urls).urlpatterns]
    finally:
        settings.DEMO_SHOP_ENABLED = original
        importlib.reload(cs_platform.urls)
        clear_url_caches()
    assert enabled == [*disabled, "demo/shop/api/"]
    assert "demo/shop/api/" not in disabled


def test_it_knows_the_address_the_tools_call() -> None:
    assert demo.demo_shop_base_url("127.0.0.1", 8001) == "http://127.0.0.1:8001"
    assert demo.demo_shop_base_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"  # noqa: S104
    assert demo.demo_shop_base_url("::", 8000) == "http://[::1]:8000"


@pytest.mark.django_db
def test_it_imports_the_demo_tools_cleanly() -> None:
    items = json.loads(demo.DEMO_TOOLS_FILE.read_text(encoding="utf-8"))
    report = tools_import(items=items)
    assert (report.created, report.updated, report.failures) == (DEMO_TOOL_NAMES, [], [])
    flags = {
        tool.name: (tool.method, tool.changes_data, tool.needs_verified_customer)
        for tool in Tool.objects.all()
    }
    assert flags == {
        "invoice_status": ("GET", False, True),
        "open_return": ("POST", True, True),
        "order_status": ("GET", False, True),
        "recent_orders": ("GET", False, True),
        "shipment_tracking": ("GET", False, False),
    }
    # The file holds no secret: demo_tools_load adds the token.
    assert all(tool.headers == {} for tool in Tool.objects.all())
    assert all(tool.description_en and tool.description_zh_hans for tool in Tool.objects.all())


@pytest.mark.django_db
def test_it_loads_the_demo_tools_only_when_the_demo_shop_is_enabled(settings: Any) -> None:
    settings.DEMO_SHOP_ENABLED = False
    report = demo.demo_tools_load(base_url="http://127.0.0.1:8001")
    assert (report.created, report.updated) == ([], [])
    assert Tool.objects.count() == 0


@pytest.mark.django_db
def test_it_loads_the_demo_tools_once_and_points_them_at_this_run(settings: Any) -> None:
    settings.DEMO_SHOP_ENABLED = True
    first = demo.demo_tools_load(base_url="http://127.0.0.1:8001")
    assert sorted(first.created) == sorted(DEMO_TOOL_NAMES)
    order_status = Tool.objects.get(name="order_status")
    assert order_status.url == "http://127.0.0.1:8001/demo/shop/api/orders/{order_id}?customer={customer_id}"
    assert order_status.headers == {"Authorization": f"Bearer {demo_shop.demo_shop_token()}"}
    # The operator's changes: one demo tool deleted, one pointed at a real system, one disabled.
    Tool.objects.filter(name="recent_orders").delete()
    Tool.objects.filter(name="invoice_status").update(
        url="https://erp.example.com/invoices/{number}?c={customer_id}"
    )
    Tool.objects.filter(name="shipment_tracking").update(enabled=False)

    old_headers = order_status.headers
    settings.SECRET_KEY = "a new secret key"
    second = demo.demo_tools_load(base_url="http://127.0.0.1:8002")

    assert sorted(second.updated) == ["open_return", "order_status", "shipment_tracking"]
    assert second.created == []
    tools = {tool.name: tool for tool in Tool.objects.all()}
    assert sorted(tools) == ["invoice_status", "open_return", "order_status", "shipment_tracking"]
    assert tools["order_status"].url.startswith("http://127.0.0.1:8002/demo/shop/api/orders/")
    assert tools["open_return"].headers == {"Authorization": f"Bearer {demo_shop.demo_shop_token()}"}
    assert tools["shipment_tracking"].enabled is False
    assert tools["invoice_status"].url == "https://erp.example.com/invoices/{number}?c={customer_id}"
    # Not the demo shop's any more: neither its address nor its headers are the demo's business.
    assert tools["invoice_status"].headers == old_headers


@pytest.fixture
def demo_tools(live_server: Any, settings: Any) -> dict[str, Tool]:
    """The demo tools, loaded as `make run` loads them, calling the API on a live server."""
    settings.DEMO_SHOP_ENABLED = True
    demo.demo_tools_load(base_url=live_server.url)
    return {tool.name: tool for tool in Tool.objects.all()}


def run(tool: Tool, arguments: dict[str, Any], customer_id: str | None) -> Any:
    return asyncio.run(tool_run(tool, json.dumps(arguments), customer_id=customer_id))


def test_it_answers_where_is_my_order_through_the_tool(demo_tools: dict[str, Tool]) -> None:
    outcome = run(demo_tools["order_status"], {"order_id": "1234"}, "C-1001")
    assert (outcome.outcome, outcome.status_code) == (ToolCall.Outcome.OK, 200)
    order = json.loads(outcome.content_for_model)
    assert (order["order_number"], order["status"]) == ("AC20261123001234", "shipped")


def test_it_answers_another_customers_order_through_the_tool_as_not_found(
    demo_tools: dict[str, Tool],
) -> None:
    outcome = run(demo_tools["order_status"], {"order_id": "1234"}, "C-1042")
    assert (outcome.outcome, outcome.status_code) == (ToolCall.Outcome.ERROR, 404)
    assert outcome.content_for_model == (
        "The tool failed: its API answered HTTP 404 Not Found. Its answer: "
        '{"error": "No order 1234 for this customer.", "error_zh_hans": "该客户没有订单 1234。"}'
    )


def test_it_runs_each_demo_tool_against_the_api(demo_tools: dict[str, Tool]) -> None:
    recent = run(demo_tools["recent_orders"], {}, "C-4711")
    parcel = run(demo_tools["shipment_tracking"], {"tracking_number": "SF2468013579"}, None)
    invoice = run(demo_tools["invoice_status"], {"number": "AC20261128003356"}, "C-1042")
    opened = run(
        demo_tools["open_return"],
        {"order_id": "3356", "items": [{"sku": "ACM-AF-550", "quantity": 1}], "reason": "damaged"},
        "C-1042",
    )
    assert [o.status_code for o in (recent, parcel, invoice, opened)] == [200, 200, 200, 201]
    assert [order["order_number"] for order in json.loads(recent.content_for_model)["orders"]] == [
        "AC20261201005566"
    ]
    assert json.loads(parcel.content_for_model)["status_text"]["zh-Hans"] == "已签收"
    assert json.loads(invoice.content_for_model)["title"] == "杭州蓝鲸贸易有限公司"
    assert json.loads(opened.content_for_model)["reason_text"] == {
        "en": "Damaged in delivery",
        "zh-Hans": "运输途中损坏",
    }
    assert len(demo_shop._returns.by_number) == 1


def test_it_refuses_the_tools_without_the_token(demo_tools: dict[str, Tool]) -> None:
    tool = demo_tools["shipment_tracking"]
    tool.headers = {}
    outcome = run(tool, {"tracking_number": "SF2468013579"}, None)
    assert (outcome.outcome, outcome.status_code) == (ToolCall.Outcome.ERROR, 401)
