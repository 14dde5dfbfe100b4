"""Demo data for a first look: an assistant profile, the demo knowledge base, an admin user and one
staff user of each role (agents, a supervisor, a manager)."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from agents.demo import handoff_demo_load
from cs_platform import roles
from cs_platform.demo_shop import demo_shop_token
from inference.models import AssistantProfile
from knowledge import services
from knowledge.importing import ImportReport, articles_import_paths, faq_csv_import
from knowledge.models import Article, FaqEntry, IndexBuild
from tools.models import Tool
from tools.services import ToolImportReport, tools_import

logger = logging.getLogger(__name__)

DEMO_INSTRUCTIONS = (
    "You are the customer-service assistant of Acme Store, an online shop. Help customers with orders, "
    "delivery, invoices, returns and accounts. Answer briefly and politely. If you cannot help, or the "
    "customer asks for a person, say that you can connect them with a human agent. Never invent order "
    "numbers, prices or policies."
)

# The demo knowledge base of the fictional Acme Store: Markdown articles (published on load) and FAQ
# entries (the quick entries among them), loaded through the same import functions as the commands.
DEMO_KNOWLEDGE_DIR = settings.BASE_DIR / "knowledge" / "demo"


def demo_knowledge_load(directory: Path | None = None) -> ImportReport:
    """Load the demo articles and FAQ entries, each only while there are none, then ask for the index.

    A failed demo file is logged, not fatal: `make run` should start with the rest of the knowledge base.
    """
    directory = directory or DEMO_KNOWLEDGE_DIR
    report = ImportReport()
    # One transaction: the index is asked for once, when the whole demo is in.
    with transaction.atomic():
        if not Article.objects.exists() and (directory / "articles").is_dir():
            report.results += articles_import_paths(paths=[directory / "articles"], publish=True).results
        faq_file = directory / "faq.csv"
        if not FaqEntry.objects.exists() and faq_file.is_file():
            text = faq_file.read_text(encoding="utf-8-sig")
            report.results += faq_csv_import(text=text, source=str(faq_file)).results
        # An index never built (a database from before the knowledge base, or its build died) is
        # built now; asked for again after a load, it is still one build.
        if not IndexBuild.objects.filter(status=IndexBuild.Status.READY).exists():
            services.index_rebuild_on_commit()
    # The embedded default builds on a thread of this process: `make run` starts its children only
    # once it is done, so that the platform answers from the knowledge base as soon as it says it runs.
    services.index_rebuild_wait()
    for failure in report.failures:
        logger.warning("Demo knowledge base: %s failed: %s", failure.name, failure.error)
    return report


# The demo shop's tools (tools/demo/shop_tools.json), calling the demo shop's API
# (cs_platform/demo_shop.py) on the platform's own address, which only `make run` knows.
DEMO_TOOLS_FILE = settings.BASE_DIR / "tools" / "demo" / "shop_tools.json"
DEMO_SHOP_PATH = "/demo/shop/api/"
DEMO_SHOP_DEFAULT_BASE_URL = "http://127.0.0.1:8000"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def demo_shop_base_url(host: str, port: int) -> str:
    """The address the demo tools reach the platform on, from the one daphne listens on."""
    # Listening on every address (not binding to it here): the tools call this machine's own.
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _rebased(url: str, base_url: str) -> str:
    parts, base = urlsplit(url), urlsplit(base_url)
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))


def _is_demo_shop_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.hostname in _LOOPBACK_HOSTS and parts.path.startswith(DEMO_SHOP_PATH)


def demo_tools_load(*, base_url: str, path: Path | None = None) -> ToolImportReport:
    """Import the demo shop's tools while there are no tools, then keep the demo's own pointed at this run.

    Loaded once, like the knowledge base: a tool deleted or edited in admin stays so. But the port
    (`make run PORT=…`) and SECRET_KEY (the API's token) may differ from the last run, so each run sets
    the address and the Authorization header of the tools that still call the demo shop on this
    machine. The file holds no secret: the token is added here, never written to it.
    """
    report = ToolImportReport()
    if not settings.DEMO_SHOP_ENABLED:
        return report
    authorization = {"Authorization": f"Bearer {demo_shop_token()}"}
    if not Tool.objects.exists():
        items = json.loads((path or DEMO_TOOLS_FILE).read_text(encoding="utf-8"))
        for item in items:
            item["url"] = _rebased(item["url"], base_url)
            item["headers"] = authorization
        report = tools_import(items=items)
        for failure in report.failures:
            logger.warning("Demo tools: %s", failure)
        return report
    for tool in Tool.objects.all():
        if not _is_demo_shop_url(tool.url):
            continue
        url, headers = _rebased(tool.url, base_url), {**tool.headers, **authorization}
        if (url, headers) != (tool.url, tool.headers):
            tool.url, tool.headers = url, headers
            tool.save(update_fields=["url", "headers", "updated_at"])
            report.updated.append(tool.name)
    return report


def admin_password_file() -> Path:
    return settings.VAR_DIR / "admin_password"


def demo_data_load(*, shop_base_url: str = DEMO_SHOP_DEFAULT_BASE_URL) -> str | None:
    """Load the demo data once; return the admin's password when the user was created now.

    `shop_base_url` is where the platform listens (`make run` knows it): the demo tools call it.
    """
    if not AssistantProfile.objects.exists():
        AssistantProfile.objects.create(
            name="Acme Support",
            system_instructions=DEMO_INSTRUCTIONS,
            is_active=True,
            max_tokens=200,
            # The local model is small: told to match the customer's language "(Simplified Chinese or
            # English)", it answered English questions in Chinese. The conversation's language is plain.
            language_policy=AssistantProfile.LanguagePolicy.CONVERSATION_LOCALE,
            # The embedded default's SmolLM2-135M invents policies and writes no usable Chinese: on 20
            # demo questions per language it answered 2 of 16 in English and none in Chinese, where
            # quoting the best passage answered 12 and 14 (README, "The knowledge base"). So the demo
            # quotes in both languages; with Qwen-VL behind it, tick the languages in admin.
            model_answer_locales=[],
        )
    demo_knowledge_load()
    # The team's hours (every day 09:00–21:00 Beijing time, as the demo FAQ says), for handoffs.
    handoff_demo_load()
    demo_tools_load(base_url=shop_base_url)
    user_model = get_user_model()
    if user_model.objects.filter(username="admin").exists():
        # A platform set up before the demo had agents gets them, with the admin's saved password.
        if admin_password_file().exists():
            demo_agents_create(password=admin_password_file().read_text().strip())
        return None
    password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username="admin", email="admin@example.com", password=password)
    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    admin_password_file().write_text(password)
    admin_password_file().chmod(0o600)
    demo_agents_create(password=password)
    return password


# Two agents, so that a newcomer can watch a claim race or a hand-over between two browsers.
DEMO_AGENTS = (("lin", "Lin", "Wei"), ("sam", "Sam", "Taylor"))
# One supervisor (reviews replies, edits the knowledge base) and one manager (reads transcripts and
# reports, edits nothing): cs_platform/roles.py says what each group may do.
DEMO_SUPERVISORS = (("mei", "Mei", "Chen"),)
DEMO_MANAGERS = (("wang", "Wang", "Fang"),)

# Every demo user with its group. All are staff: agents read their tickets' transcripts in admin,
# supervisors and managers work there; the groups' permissions decide what each one sees.
DEMO_STAFF = (
    *((user, roles.AGENT) for user in DEMO_AGENTS),
    *((user, roles.SUPERVISOR) for user in DEMO_SUPERVISORS),
    *((user, roles.MANAGER) for user in DEMO_MANAGERS),
)


def demo_agents_create(*, password: str) -> list[str]:
    """Create the demo's staff (agents, a supervisor, a manager) that do not exist yet; returns their
    usernames. A user of that name already there is kept as it is (its password, groups, staff flag)."""
    user_model = get_user_model()
    created = []
    for (username, first_name, last_name), group_name in DEMO_STAFF:
        if user_model.objects.filter(username=username).exists():
            continue
        group, _ = Group.objects.get_or_create(name=group_name)
        user = user_model.objects.create_user(
            username=username,
            password=password,
            first_name=first_name,
            last_name=last_name,
            is_staff=True,
        )
        user.groups.add(group)
        created.append(username)
    return created
