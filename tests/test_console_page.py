"""The agent console's page, /agent/: who gets the console, the sign-in form or a refusal, in which
language, and its modules as collectstatic serves them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = ROOT / "static" / "agent"
IMPORT = re.compile(r'^import \{([^}]*)\} from "(\.{1,2}/[^"]+)";$', re.MULTILINE)
EXPORT = re.compile(r"^export (?:async function|function|const|let|class) (\w+)", re.MULTILINE)
# `export { h };`: a name a module passes on from one it imports.
RE_EXPORT = re.compile(r"^export \{([^}]*)\};$", re.MULTILINE)


def make_user(username: str, group: str | None, **fields: Any) -> User:
    user = User.objects.create_user(username=username, password="a-long-test-password", **fields)
    if group is not None:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def console_config(response: Any) -> dict[str, Any]:
    match = re.search(
        r'<script id="console-config" type="application/json">(.*?)</script>', response.content.decode()
    )
    assert match is not None
    config: dict[str, Any] = json.loads(match.group(1))
    return config


def test_it_shows_the_sign_in_form_to_nobody_with_a_csrf_cookie_for_it() -> None:
    response = Client().get("/agent/")

    assert response.status_code == 200
    config = console_config(response)
    assert config["page"] == "login"
    assert config["locale"] == "en"
    assert "agent" not in config
    assert response.cookies["csrftoken"].value
    assert config["csrfToken"]


def test_it_refuses_a_signed_in_user_outside_the_agent_groups_with_403() -> None:
    client = Client()
    client.force_login(make_user("visitor", None, is_staff=True))

    response = client.get("/agent/")

    assert response.status_code == 403
    config = console_config(response)
    assert config["page"] == "forbidden"
    assert config["username"] == "visitor"
    assert "agent" not in config
    assert "supervisor" not in config


@pytest.mark.parametrize(("group", "supervisor"), [("Agent", False), ("Supervisor", True), ("Manager", True)])
def test_it_gives_each_agent_group_the_console(group: str, supervisor: bool) -> None:
    user = make_user("lin", group, first_name="Lin", last_name="Wei")
    client = Client()
    client.force_login(user)

    response = client.get("/agent/")

    assert response.status_code == 200
    config = console_config(response)
    assert config["page"] == "console"
    assert config["agent"] == {"id": user.pk, "username": "lin", "name": "Lin Wei"}
    assert config["supervisor"] is supervisor
    assert config["apiBase"] == "/api/agent"
    assert config["wsPath"] == "/ws/agent/"
    # Agent assist is on by default: the console shows its AI draft button.
    assert config["assist"] is True
    assert config["locale"] == "en"
    assert config["csrfToken"]


def test_it_hides_the_ai_draft_when_agent_assist_is_switched_off(settings: Any) -> None:
    settings.AGENT_ASSIST_ENABLED = False
    client = Client()
    client.force_login(make_user("lin", "Agent"))

    config = console_config(client.get("/agent/"))

    assert config["page"] == "console"
    assert config["assist"] is False


def test_it_gives_a_superuser_in_no_group_the_supervisors_console() -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "a-long-test-password"))

    response = client.get("/agent/")

    assert response.status_code == 200
    assert console_config(response)["supervisor"] is True


def test_it_refuses_an_inactive_agent_as_nobody_and_shows_the_sign_in_form() -> None:
    user = make_user("gone", "Agent")
    client = Client()
    client.force_login(user)
    User.objects.filter(pk=user.pk).update(is_active=False)

    response = client.get("/agent/")

    # Django's ModelBackend drops the session of an inactive user: the page asks to sign in again.
    assert response.status_code == 200
    assert console_config(response)["page"] == "login"


def test_it_refuses_a_post_to_the_page() -> None:
    response = Client().post("/agent/")

    assert response.status_code == 405


@pytest.mark.parametrize(
    ("accept_language", "query", "expected"),
    [
        ("zh-CN,zh;q=0.9", "", "zh-Hans"),
        ("zh-Hans", "", "zh-Hans"),
        ("en-GB,en;q=0.8", "", "en"),
        ("fr-FR", "", "en"),
        ("zh-CN", "?lang=en", "en"),
        ("en-US", "?lang=zh-Hans", "zh-Hans"),
        ("en-US", "?lang=de", "en"),
    ],
)
def test_it_picks_the_language_from_the_link_then_the_browser_then_language_code(
    accept_language: str, query: str, expected: str
) -> None:
    client = Client()
    client.force_login(make_user("lin", "Agent"))

    response = client.get(f"/agent/{query}", HTTP_ACCEPT_LANGUAGE=accept_language)

    assert console_config(response)["locale"] == expected
    assert f'<html lang="{expected}">' in response.content.decode()


def test_it_serves_the_page_with_a_policy_that_allows_only_its_own_scripts_and_socket() -> None:
    client = Client()
    client.force_login(make_user("lin", "Agent"))

    response = client.get("/agent/")

    policy = response["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "connect-src 'self' ws: wss:;" in policy
    assert "frame-ancestors 'none';" in policy
    assert "no-cache" in response["Cache-Control"]
    scripts = re.findall(r"<script ([^>]*)></script>", response.content.decode())
    assert scripts == [
        'src="/static/vendor/markdown-it.min.js" defer',
        'src="/static/vendor/purify.min.js" defer',
        'type="module" src="/static/agent/console.js"',
    ]


def _imports(source: str) -> list[tuple[list[str], str]]:
    """Each import's names (as the imported module calls them: `icon as widgetIcon` is `icon`)."""
    return [
        ([name.split(" as ")[0].strip() for name in names.split(",") if name.strip()], target)
        for names, target in IMPORT.findall(source)
    ]


def _exports(source: str) -> set[str]:
    passed_on = {name.strip() for names in RE_EXPORT.findall(source) for name in names.split(",")}
    return set(EXPORT.findall(source)) | (passed_on - {""})


def test_it_imports_only_names_the_consoles_modules_export() -> None:
    # With no build step nothing else would notice a misspelt import before an agent's browser.
    checked = 0
    for module in sorted(CONSOLE.glob("*.js")):
        for names, target in _imports(module.read_text()):
            exported = _exports((module.parent / target).resolve().read_text())
            assert set(names) <= exported, f"{module.name} imports {set(names) - exported} from {target}"
            checked += len(names)
    assert checked > 60


def test_it_keeps_every_word_of_the_console_in_both_languages() -> None:
    source = (CONSOLE / "strings.js").read_text()
    english, chinese = source.split('"zh-Hans": {', 1)
    key = re.compile(r'^\s+"([\w.-]+)":', re.MULTILINE)
    english_keys = set(key.findall(english.split("en: {", 1)[1]))
    chinese_keys = set(key.findall(chinese))

    assert english_keys == chinese_keys
    assert len(english_keys) > 100
    # Every key the modules ask for is in the table (a literal t("...") call).
    used = set()
    for module in CONSOLE.glob("*.js"):
        used |= set(re.findall(r'\bt\("([\w.-]+)"', module.read_text()))
    assert used - english_keys == set()


def test_it_collects_every_module_the_console_imports_under_the_same_relative_url(
    settings: Any, tmp_path: Path
) -> None:
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", interactive=False, verbosity=0)

    pending = [tmp_path / "agent" / "console.js"]
    seen: set[Path] = set()
    while pending:
        module = pending.pop()
        assert module.is_file(), f"{module.relative_to(tmp_path)} is imported but was not collected"
        seen.add(module)
        for _, target in _imports(module.read_text()):
            imported = (module.parent / target).resolve()
            if imported not in seen:
                pending.append(imported)

    assert {path.relative_to(tmp_path).as_posix() for path in seen} == {
        *(f"agent/{path.name}" for path in CONSOLE.glob("*.js")),
        "widget/chat/markdown.js",
        # The widget's element builder, icons and frame listener, shared with the console.
        "widget/chat/dom.js",
    }
    assert (tmp_path / "agent" / "console.css").is_file()
