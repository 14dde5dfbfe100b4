"""The demo shop's API: the fictional Acme Store's own system, which the demo business tools call.

`make run` mounts it at /demo/shop/api/ (settings.DEMO_SHOP_ENABLED) so that a tool-capable model has
orders, shipments and invoices of the demo customers to look up, and one call that changes data
(opening a return). It stands in for a company's internal API, so it asks for what such an API asks
for: a bearer token (derived from SECRET_KEY, carried in the demo tools' secret headers), and the
customer's id on every lookup of a customer's own data, answering 404 for another customer's order as
for one that does not exist. Its rules are the demo fact sheet's (knowledge/demo/FACTS.md).

The data is static, with dates counted back from today (Beijing time), so that the demo's windows
(30 days to return, 30 days to re-issue an invoice, 72 hours without a tracking update) stay where
they are meant to be whenever the demo runs. Returns are kept in this process's memory only.
"""

from __future__ import annotations

import hmac
import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

__all__ = [
    "CUSTOMERS",
    "INVOICES",
    "ORDERS",
    "SHIPMENTS",
    "demo_shop_returns_clear",
    "demo_shop_token",
    "urlpatterns",
]

app_name = "demo_shop"

# The shop is in mainland China: its days (and so its windows) are Beijing's.
SHOP_TIME_ZONE = ZoneInfo("Asia/Shanghai")
RETURN_WINDOW_DAYS = 30
REISSUE_WINDOW_DAYS = 30
NO_UPDATE_HOURS = 72
CHANGE_OF_MIND_PICKUP_FEE = Decimal("10.00")
SHIP_RETURN_WITHIN_DAYS = 7
RECENT_ORDERS = 10
# A customer says "order 1234": its last digits name it when they are at least this many.
SHORT_ORDER_NUMBER_DIGITS = 4

Text = dict[str, str]


def _text(en: str, zh: str) -> Text:
    return {"en": en, "zh-Hans": zh}


# --- The data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    sku: str
    name: Text
    quantity: int
    unit_price: Decimal
    # Personalised items, opened in-ear headphones, gift cards (FACTS.md, "Not returnable").
    returnable: bool = True


@dataclass(frozen=True)
class Order:
    number: str
    customer_id: str
    placed_days_ago: int
    status: str
    items: tuple[Item, ...]
    payment_method: Text
    shipping_fee: Decimal = Decimal("0.00")
    coupon_discount: Decimal = Decimal("0.00")
    delivered_days_ago: int | None = None
    tracking_numbers: tuple[str, ...] = ()
    invoice_number: str | None = None


@dataclass(frozen=True)
class Event:
    # Hours before now, not a time of day: a parcel "out for delivery at 08:12 today" would be in the
    # future for a demo run at 02:00.
    hours_ago: int
    location: Text
    description: Text


@dataclass(frozen=True)
class Shipment:
    tracking_number: str
    order_number: str
    carrier: Text
    status: str
    events: tuple[Event, ...]  # newest first
    parcel: tuple[int, int] = (1, 1)  # this parcel, of how many (a split shipment)
    estimated_delivery_days_from_today: int | None = None


@dataclass(frozen=True)
class Invoice:
    number: str
    order_number: str
    kind: str  # general | special
    title: str
    tax_id: str | None
    amount: Decimal
    issued_days_ago: int
    status: str = "issued"
    reissued: bool = False
    used_for_deduction: bool = False


@dataclass(frozen=True)
class Customer:
    id: str
    name: str
    email: str


ORDER_STATUSES: dict[str, Text] = {
    "pending_payment": _text("Pending payment", "待付款"),
    "paid": _text("Paid", "已付款"),
    "processing": _text("Processing (being picked in the warehouse)", "处理中（仓库拣货中）"),
    "shipped": _text("Shipped", "已发货"),
    "delivered": _text("Delivered", "已签收"),
    "completed": _text("Completed", "已完成"),
    "cancelled": _text("Cancelled", "已取消"),
}
SHIPMENT_STATUSES: dict[str, Text] = {
    "in_transit": _text("In transit", "运输中"),
    "out_for_delivery": _text("Out for delivery", "派送中"),
    "delivered": _text("Delivered", "已签收"),
}
INVOICE_KINDS: dict[str, Text] = {
    "general": _text("General VAT invoice (e-fapiao)", "增值税普通发票（电子发票）"),
    "special": _text("Special VAT invoice (e-fapiao)", "增值税专用发票（电子发票）"),
}
INVOICE_STATUSES: dict[str, Text] = {
    "issued": _text("Issued", "已开具"),
    "voided": _text("Voided (red-letter invoice issued)", "已作废（已开红字发票）"),
}
RETURN_REASONS: dict[str, Text] = {
    "defective": _text("Defective", "商品有质量问题"),
    "damaged": _text("Damaged in delivery", "运输途中损坏"),
    "wrong_item": _text("Wrong item", "发错商品"),
    "changed_mind": _text("Changed my mind", "不想要了"),
}
SF = _text("SF Express", "顺丰速运")
JD = _text("JD Logistics", "京东物流")
EMS = _text("China Post / EMS", "中国邮政 EMS")
ALIPAY = _text("Alipay", "支付宝")
WECHAT_PAY = _text("WeChat Pay", "微信支付")
HUABEI = _text("Alipay Huabei, 6 instalments", "支付宝花呗分 6 期")

CUSTOMERS: dict[str, Customer] = {
    customer.id: customer
    for customer in (
        Customer("C-1001", "Alex Morgan", "alex.morgan@example.com"),
        Customer("C-1042", "李娜", "li.na@example.com"),
        Customer("C-4711", "Sam Lee", "sam.lee@example.com"),
    )
}

HEADPHONES = Item(
    "ACM-HP-200",
    _text("Acme SoundAir Pro wireless headphones", "Acme SoundAir Pro 无线耳机"),
    1,
    Decimal("499.00"),
)
PHONE_CASE = Item("ACM-CS-015", _text("Clear phone case", "透明手机壳"), 2, Decimal("29.50"))
POWER_BANK = Item("ACM-PB-020", _text("20000 mAh power bank", "20000 毫安时充电宝"), 1, Decimal("149.00"))
KETTLE = Item("ACM-KT-170", _text("1.7 L electric kettle", "1.7 升电热水壶"), 1, Decimal("129.00"))
AIR_FRYER = Item("ACM-AF-550", _text("5.5 L air fryer", "5.5 升空气炸锅"), 1, Decimal("399.00"))
TUMBLER = Item(
    "ACM-TB-ENG",
    _text("Engraved vacuum tumbler", "定制刻字保温杯"),
    1,
    Decimal("89.00"),
    returnable=False,
)
CHARGER = Item("ACM-CH-065", _text("65 W USB-C charger", "65W USB-C 充电器"), 1, Decimal("119.00"))
VACUUM = Item("ACM-RV-900", _text("Robot vacuum cleaner", "扫地机器人"), 1, Decimal("1299.00"))

ORDERS: dict[str, Order] = {
    order.number: order
    for order in (
        # "Where is my order 1234?": a split shipment, one parcel delivered, the other out for delivery.
        Order(
            "AC20261123001234",
            "C-1001",
            placed_days_ago=3,
            status="shipped",
            items=(HEADPHONES, PHONE_CASE),
            payment_method=ALIPAY,
            tracking_numbers=("SF1234567890", "JDX000123456789"),
            invoice_number="26312000000012345678",
        ),
        Order(
            "AC20261102004521",
            "C-1001",
            placed_days_ago=36,
            status="completed",
            items=(KETTLE,),
            payment_method=WECHAT_PAY,
            delivered_days_ago=33,
            tracking_numbers=("SF1122334455",),
            invoice_number="26312000000045210001",
        ),
        Order(
            "AC20261207007788",
            "C-1001",
            placed_days_ago=1,
            status="processing",
            items=(POWER_BANK,),
            payment_method=ALIPAY,
        ),
        Order(
            "AC20261128003356",
            "C-1042",
            placed_days_ago=8,
            status="delivered",
            items=(AIR_FRYER, TUMBLER),
            payment_method=WECHAT_PAY,
            coupon_discount=Decimal("20.00"),
            delivered_days_ago=5,
            tracking_numbers=("SF2468013579",),
            invoice_number="26442000000033560001",
        ),
        Order(
            "AC20261120009012",
            "C-1042",
            placed_days_ago=17,
            status="cancelled",
            items=(CHARGER,),
            payment_method=ALIPAY,
        ),
        # A remote-area parcel with no update for more than 72 hours: Acme Support opens an investigation.
        Order(
            "AC20261201005566",
            "C-4711",
            placed_days_ago=7,
            status="shipped",
            items=(VACUUM,),
            payment_method=HUABEI,
            tracking_numbers=("EA123456785CN",),
            invoice_number="26650000000055660002",
        ),
    )
}

SHIPMENTS: dict[str, Shipment] = {
    shipment.tracking_number: shipment
    for shipment in (
        Shipment(
            "SF1234567890",
            "AC20261123001234",
            SF,
            "out_for_delivery",
            (
                Event(
                    2,
                    _text("Shanghai, Pudong", "上海市浦东新区"),
                    _text("Out for delivery with the courier", "快递员正在派送"),
                ),
                Event(
                    14,
                    _text("Shanghai sorting centre", "上海转运中心"),
                    _text("Arrived at the sorting centre", "已到达转运中心"),
                ),
                Event(
                    44,
                    _text("Kunshan warehouse", "昆山仓"),
                    _text("Picked up from the Acme warehouse", "已从 Acme 仓库揽收"),
                ),
            ),
            parcel=(1, 2),
            estimated_delivery_days_from_today=0,
        ),
        Shipment(
            "JDX000123456789",
            "AC20261123001234",
            JD,
            "delivered",
            (
                Event(
                    20,
                    _text("Shanghai, Pudong: parcel locker", "上海市浦东新区：快递柜"),
                    _text("Delivered to a parcel locker", "已投递至快递柜"),
                ),
                Event(
                    46,
                    _text("Kunshan warehouse", "昆山仓"),
                    _text("Picked up from the Acme warehouse", "已从 Acme 仓库揽收"),
                ),
            ),
            parcel=(2, 2),
        ),
        Shipment(
            "SF1122334455",
            "AC20261102004521",
            SF,
            "delivered",
            (
                Event(
                    33 * 24,
                    _text("Shanghai, Xuhui", "上海市徐汇区"),
                    _text("Delivered, signed by the customer", "已签收，本人签收"),
                ),
                Event(
                    35 * 24 + 5,
                    _text("Kunshan warehouse", "昆山仓"),
                    _text("Picked up from the Acme warehouse", "已从 Acme 仓库揽收"),
                ),
            ),
        ),
        Shipment(
            "SF2468013579",
            "AC20261128003356",
            SF,
            "delivered",
            (
                Event(
                    5 * 24,
                    _text("Hangzhou, Xihu", "杭州市西湖区"),
                    _text("Delivered, signed by the customer", "已签收，本人签收"),
                ),
                Event(
                    6 * 24 + 6,
                    _text("Hangzhou sorting centre", "杭州转运中心"),
                    _text("Arrived at the sorting centre", "已到达转运中心"),
                ),
                Event(
                    7 * 24 + 2,
                    _text("Kunshan warehouse", "昆山仓"),
                    _text("Picked up from the Acme warehouse", "已从 Acme 仓库揽收"),
                ),
            ),
        ),
        Shipment(
            "EA123456785CN",
            "AC20261201005566",
            EMS,
            "in_transit",
            (
                Event(
                    4 * 24,
                    _text("Urumqi sorting centre", "乌鲁木齐转运中心"),
                    _text("Arrived at the sorting centre", "已到达转运中心"),
                ),
                Event(
                    6 * 24 + 6,
                    _text("Kunshan warehouse", "昆山仓"),
                    _text("Picked up from the Acme warehouse", "已从 Acme 仓库揽收"),
                ),
            ),
            estimated_delivery_days_from_today=0,
        ),
    )
}

INVOICES: dict[str, Invoice] = {
    invoice.number: invoice
    for invoice in (
        Invoice(
            "26312000000012345678",
            "AC20261123001234",
            "general",
            "个人 (Alex Morgan)",
            None,
            Decimal("558.00"),
            1,
        ),
        Invoice(
            "26312000000045210001",
            "AC20261102004521",
            "general",
            "上海示例科技有限公司",
            "91310115MA1K3YJ52X",
            Decimal("129.00"),
            35,
        ),
        Invoice(
            "26442000000033560001",
            "AC20261128003356",
            "special",
            "杭州蓝鲸贸易有限公司",
            "91330106MA2H7QXX8L",
            Decimal("468.00"),
            7,
            used_for_deduction=True,
        ),
        Invoice(
            "26650000000055660002",
            "AC20261201005566",
            "general",
            "Sam Lee",
            None,
            Decimal("1299.00"),
            6,
            reissued=True,
        ),
    )
}


# --- Computed fields ------------------------------------------------------------------------------


def _today() -> date:
    return timezone.now().astimezone(SHOP_TIME_ZONE).date()


def _day(days_ago: int) -> str:
    return (_today() - timedelta(days=days_ago)).isoformat()


def _moment(hours_ago: int) -> datetime:
    moment = timezone.now().astimezone(SHOP_TIME_ZONE) - timedelta(hours=hours_ago)
    return moment.replace(second=0, microsecond=0)


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def _items_total(order: Order) -> Decimal:
    return sum((item.unit_price * item.quantity for item in order.items), Decimal("0.00"))


def _amount_paid(order: Order) -> Decimal:
    return _items_total(order) - order.coupon_discount + order.shipping_fee


def _return_window_end(order: Order) -> date | None:
    if order.delivered_days_ago is None or order.status not in ("delivered", "completed"):
        return None
    return _today() - timedelta(days=order.delivered_days_ago) + timedelta(days=RETURN_WINDOW_DAYS)


def _item_json(item: Item) -> dict[str, Any]:
    return {
        "sku": item.sku,
        "name": item.name,
        "quantity": item.quantity,
        "unit_price": _money(item.unit_price),
        "returnable": item.returnable,
    }


def _order_json(order: Order) -> dict[str, Any]:
    window_end = _return_window_end(order)
    before_shipping = order.status in ("pending_payment", "paid", "processing")
    return {
        "order_number": order.number,
        "placed_on": _day(order.placed_days_ago),
        "status": order.status,
        "status_text": ORDER_STATUSES[order.status],
        "items": [_item_json(item) for item in order.items],
        "currency": "CNY",
        "items_total": _money(_items_total(order)),
        "coupon_discount": _money(order.coupon_discount),
        "shipping_fee": _money(order.shipping_fee),
        "amount_paid": _money(_amount_paid(order)),
        "payment_method": order.payment_method,
        "delivered_on": _day(order.delivered_days_ago) if order.delivered_days_ago is not None else None,
        "shipments": [
            {
                "tracking_number": number,
                "carrier": SHIPMENTS[number].carrier,
                "status": SHIPMENTS[number].status,
                "status_text": SHIPMENT_STATUSES[SHIPMENTS[number].status],
            }
            for number in order.tracking_numbers
        ],
        "invoice_number": order.invoice_number,
        "can_cancel": before_shipping,
        "can_change_address": before_shipping,
        "return_window_ends_on": window_end.isoformat() if window_end else None,
        "can_return": window_end is not None and window_end >= _today(),
    }


def _shipment_json(shipment: Shipment) -> dict[str, Any]:
    latest = _moment(shipment.events[0].hours_ago)
    hours_since = (timezone.now() - latest).total_seconds() / 3600
    estimated = shipment.estimated_delivery_days_from_today
    stale = shipment.status != "delivered" and hours_since > NO_UPDATE_HOURS
    return {
        "tracking_number": shipment.tracking_number,
        "carrier": shipment.carrier,
        "status": shipment.status,
        "status_text": SHIPMENT_STATUSES[shipment.status],
        "parcel": {"number": shipment.parcel[0], "of": shipment.parcel[1]},
        "estimated_delivery_on": (_today() + timedelta(days=estimated)).isoformat()
        if estimated is not None and shipment.status != "delivered"
        else None,
        "events": [
            {
                "time": _moment(event.hours_ago).isoformat(),
                "location": event.location,
                "description": event.description,
            }
            for event in shipment.events
        ],
        "no_update_for_72_hours": stale,
        "note": _text(
            "No tracking update for more than 72 hours: Acme Support can open a carrier investigation "
            "(up to 3 working days), then reship or refund in full.",
            "超过 72 小时没有物流更新：Acme 客服可以向快递公司发起调查（最多 3 个工作日），"
            "之后补发或全额退款。",
        )
        if stale
        else None,
    }


def _reissue(invoice: Invoice) -> dict[str, Any]:
    until = _today() - timedelta(days=invoice.issued_days_ago) + timedelta(days=REISSUE_WINDOW_DAYS)
    if invoice.kind == "special" and invoice.used_for_deduction:
        allowed, reason = (
            False,
            _text(
                "This special VAT invoice has been used for deduction: the customer cannot re-issue it; "
                "Acme Support handles it.",
                "该增值税专用发票已用于抵扣，客户无法自行重开，请联系 Acme 客服处理。",
            ),
        )
    elif invoice.reissued:
        allowed, reason = (
            False,
            _text(
                "This invoice was re-issued once already: it can be re-issued only once.",
                "该发票已重开过一次，每张发票只能重开一次。",
            ),
        )
    elif until < _today():
        allowed, reason = (
            False,
            _text(
                "More than 30 days since it was issued: the title or tax number can no longer be changed.",
                "开票已超过 30 天，无法再修改抬头或税号。",
            ),
        )
    else:
        allowed, reason = (
            True,
            _text(
                "The title or tax number can be changed once: My orders → Invoice → Re-issue (the old "
                "invoice is voided with a red-letter invoice).",
                "可修改一次抬头或税号：我的订单 → 发票 → 重开（原发票将以红字发票冲销）。",
            ),
        )
    return {"allowed": allowed, "until": until.isoformat() if allowed else None, "reason": reason}


def _invoice_json(invoice: Invoice) -> dict[str, Any]:
    return {
        "invoice_number": invoice.number,
        "order_number": invoice.order_number,
        "type": invoice.kind,
        "type_text": INVOICE_KINDS[invoice.kind],
        "title": invoice.title,
        "tax_id": invoice.tax_id,
        "amount": _money(invoice.amount),
        "currency": "CNY",
        "issued_on": _day(invoice.issued_days_ago),
        "status": invoice.status,
        "status_text": INVOICE_STATUSES[invoice.status],
        "download": _text(
            "PDF or OFD: My orders → the order → Invoice; also sent by e-mail.",
            "PDF 或 OFD：我的订单 → 该订单 → 发票；也已发送到邮箱。",
        ),
        "reissue": _reissue(invoice),
    }


# --- Returns (in memory) --------------------------------------------------------------------------


@dataclass
class _Returns:
    lock: threading.Lock = field(default_factory=threading.Lock)
    by_number: dict[str, dict[str, Any]] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


_returns = _Returns()


def demo_shop_returns_clear() -> None:
    """Forget the returns opened in this process (a test's, or a restart's)."""
    with _returns.lock:
        _returns.by_number.clear()
        _returns.counter = itertools.count(1)


# --- The API --------------------------------------------------------------------------------------


def demo_shop_token() -> str:
    """The bearer token the demo shop's API asks for: derived from SECRET_KEY, so no file holds it."""
    return salted_hmac(
        "cs_platform.demo_shop", "api-token", secret=settings.SECRET_KEY, algorithm="sha256"
    ).hexdigest()


def _error(status: int, en: str, zh: str) -> JsonResponse:
    return JsonResponse(
        {"error": en, "error_zh_hans": zh}, status=status, json_dumps_params={"ensure_ascii": False}
    )


def _answer(data: dict[str, Any], status: int = 200) -> JsonResponse:
    # Chinese as it is: the model reads it, and \uXXXX escapes cost it six tokens a character.
    return JsonResponse(data, status=status, json_dumps_params={"ensure_ascii": False})


def _authorized(request: HttpRequest) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), demo_shop_token().encode()
    )


def _unauthorized() -> JsonResponse:
    response = _error(401, "A valid bearer token is required.", "需要有效的访问令牌。")
    response["WWW-Authenticate"] = 'Bearer realm="demo-shop"'
    return response


def _customer(request: HttpRequest) -> str | None:
    customer_id = request.GET.get("customer", "").strip()
    return customer_id or None


def _order_find(customer_id: str, order_id: str) -> Order | None:
    """The customer's order by its number, or by its last digits when they name one order only."""
    wanted = order_id.strip().upper()
    order = ORDERS.get(wanted)
    if order is not None:
        return order if order.customer_id == customer_id else None
    if not (wanted.isdigit() and len(wanted) >= SHORT_ORDER_NUMBER_DIGITS):
        return None
    matches = [o for o in ORDERS.values() if o.customer_id == customer_id and o.number.endswith(wanted)]
    return matches[0] if len(matches) == 1 else None


def _guarded(view: Any) -> Any:
    """The API's bearer token first, then the view; JSON errors for the rest."""

    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not _authorized(request):
            return _unauthorized()
        response: HttpResponse = view(request, *args, **kwargs)
        return response

    guarded.__name__ = view.__name__
    guarded.__doc__ = view.__doc__
    # A bearer token, no cookies: nothing for a cross-site form to ride on.
    return csrf_exempt(guarded)


def _no_customer() -> JsonResponse:
    return _error(400, "The customer query parameter is required.", "缺少 customer 参数。")


@_guarded
@require_GET
def order_detail(request: HttpRequest, order_id: str) -> HttpResponse:
    """One order of the customer: items, status, shipments, invoice, what can still be done."""
    customer_id = _customer(request)
    if customer_id is None:
        return _no_customer()
    order = _order_find(customer_id, order_id)
    if order is None:
        # The same answer for another customer's order as for none: the number tells nothing.
        return _error(404, f"No order {order_id} for this customer.", f"该客户没有订单 {order_id}。")
    return _answer(_order_json(order))


@_guarded
@require_GET
def order_list(request: HttpRequest) -> HttpResponse:
    """The customer's recent orders, newest first, in brief."""
    customer_id = _customer(request)
    if customer_id is None:
        return _no_customer()
    orders = sorted(
        (order for order in ORDERS.values() if order.customer_id == customer_id),
        key=lambda order: order.placed_days_ago,
    )[:RECENT_ORDERS]
    return _answer(
        {
            "orders": [
                {
                    "order_number": order.number,
                    "placed_on": _day(order.placed_days_ago),
                    "status": order.status,
                    "status_text": ORDER_STATUSES[order.status],
                    "items": [{"name": item.name, "quantity": item.quantity} for item in order.items],
                    "amount_paid": _money(_amount_paid(order)),
                    "currency": "CNY",
                }
                for order in orders
            ]
        }
    )


@_guarded
@require_GET
def shipment_detail(request: HttpRequest, tracking_number: str) -> HttpResponse:
    """A parcel by its tracking number (from a delivery label): carrier, status and its history.

    No customer needed, as on the carrier's own site: so it names neither the order nor the customer.
    """
    shipment = SHIPMENTS.get(tracking_number.strip().upper().replace(" ", ""))
    if shipment is None:
        return _error(
            404,
            f"No Acme Store parcel has the tracking number {tracking_number}.",
            f"没有运单号为 {tracking_number} 的 Acme 包裹。",
        )
    return _answer(_shipment_json(shipment))


@_guarded
@require_GET
def invoice_detail(request: HttpRequest, number: str) -> HttpResponse:
    """The customer's invoice by its number, or by its order's number; whether it may be re-issued."""
    customer_id = _customer(request)
    if customer_id is None:
        return _no_customer()
    wanted = number.strip().upper()
    invoice = INVOICES.get(wanted)
    if invoice is None:
        order = _order_find(customer_id, wanted)
        if order is not None and order.invoice_number is None:
            return _error(
                404,
                f"Order {order.number} has no invoice yet: it is issued within 24 hours of shipping.",
                f"订单 {order.number} 尚未开票：发票在发货后 24 小时内开具。",
            )
        invoice = INVOICES.get(order.invoice_number or "") if order is not None else None
    if invoice is None or ORDERS[invoice.order_number].customer_id != customer_id:
        return _error(404, f"No invoice {number} for this customer.", f"该客户没有发票 {number}。")
    return _answer(_invoice_json(invoice))


def _return_request_parse(body: bytes) -> tuple[str, list[tuple[str, int]], str]:
    """The order, the (sku, quantity) pairs and the reason of a return request; ValueError says why not."""
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("The body must be JSON.") from None
    if not isinstance(data, dict):
        raise ValueError("The body must be a JSON object.")
    order_id, items, reason = data.get("order_id"), data.get("items"), data.get("reason")
    if not isinstance(order_id, str) or not order_id.strip():
        raise ValueError("order_id is required.")
    if reason not in RETURN_REASONS:
        raise ValueError(f"reason must be one of: {', '.join(RETURN_REASONS)}.")
    if not isinstance(items, list) or not items:
        raise ValueError("items must be a non-empty list of {sku, quantity}.")
    pairs = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("sku"), str):
            raise ValueError("Each item needs a sku.")
        quantity = item.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise ValueError("Each item's quantity must be a whole number of at least 1.")
        pairs.append((item["sku"].strip().upper(), quantity))
    return order_id, pairs, str(reason)


@_guarded
@require_POST
def return_open(request: HttpRequest) -> HttpResponse:
    """Open a return for items of the customer's delivered order (FACTS.md, Returns), or say why not."""
    customer_id = _customer(request)
    if customer_id is None:
        return _no_customer()
    try:
        order_id, wanted, reason = _return_request_parse(request.body)
    except ValueError as error:
        return _error(400, str(error), "请求内容无效。")
    order = _order_find(customer_id, order_id)
    if order is None:
        return _error(404, f"No order {order_id} for this customer.", f"该客户没有订单 {order_id}。")
    window_end = _return_window_end(order)
    if window_end is None:
        return _error(
            409,
            f"Order {order.number} is {ORDER_STATUSES[order.status]['en'].lower()}: only a delivered "
            "order can be returned.",
            f"订单 {order.number} 状态为{ORDER_STATUSES[order.status]['zh-Hans']}："
            "只有已签收的订单可以退货。",
        )
    if window_end < _today():
        return _error(
            409,
            f"The 30-day return window of order {order.number} ended on {window_end.isoformat()}; "
            "a defect is covered by the 1-year warranty (repair).",
            f"订单 {order.number} 的 30 天退货期已于 {window_end.isoformat()} 结束；"
            "质量问题可在一年保修期内申请维修。",
        )
    by_sku = {item.sku: item for item in order.items}
    lines = []
    for sku, quantity in wanted:
        item = by_sku.get(sku)
        if item is None:
            return _error(
                409, f"Order {order.number} has no item {sku}.", f"订单 {order.number} 中没有商品 {sku}。"
            )
        if quantity > item.quantity:
            return _error(
                409,
                f"Order {order.number} has only {item.quantity} of {sku}.",
                f"订单 {order.number} 中 {sku} 只有 {item.quantity} 件。",
            )
        if not item.returnable and reason not in ("defective", "damaged", "wrong_item"):
            return _error(
                409,
                f"{item.name['en']} is personalised and cannot be returned (unless defective).",
                f"{item.name['zh-Hans']}为定制商品，除质量问题外不支持退货。",
            )
        lines.append({"sku": sku, "name": item.name, "quantity": quantity})
    free_pickup = reason != "changed_mind"
    with _returns.lock:
        taken = {
            line["sku"]
            for opened in _returns.by_number.values()
            if opened["order_number"] == order.number
            for line in opened["items"]
        }
        again = sorted(taken & {line["sku"] for line in lines})
        if again:
            return _error(
                409,
                f"A return is already open for {', '.join(again)} of order {order.number}.",
                f"订单 {order.number} 的 {', '.join(again)} 已有退货申请。",
            )
        number = f"RT{_today():%Y%m%d}{next(_returns.counter):04d}"
        opened = {
            "return_number": number,
            "order_number": order.number,
            "items": lines,
            "reason": reason,
            "reason_text": RETURN_REASONS[reason],
            "status": "requested",
            "status_text": _text("Requested: reviewed within 24 hours", "已提交：24 小时内审核"),
            "pickup": _text(
                "Free SF Express pickup."
                if free_pickup
                else "SF Express pickup: ¥10 is deducted from the refund.",
                "免费顺丰上门取件。" if free_pickup else "顺丰上门取件：退款中扣除 10 元。",
            ),
            "pickup_fee": _money(Decimal("0.00") if free_pickup else CHANGE_OF_MIND_PICKUP_FEE),
            "ship_within_days_of_approval": SHIP_RETURN_WITHIN_DAYS,
            "refund": _text(
                "To the original payment method after inspection (2 working days after it arrives), "
                "then 5–7 business days.",
                "仓库收货后 2 个工作日内验货，之后原路退款，5–7 个工作日到账。",
            ),
        }
        _returns.by_number[number] = opened
    return _answer(opened, status=201)


urlpatterns = [
    path("orders", order_list, name="orders"),
    path("orders/<str:order_id>", order_detail, name="order"),
    path("shipments/<str:tracking_number>", shipment_detail, name="shipment"),
    path("invoices/<str:number>", invoice_detail, name="invoice"),
    path("returns", return_open, name="returns"),
]
