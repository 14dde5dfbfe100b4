"""The chat page the widget runs in, and the widget's modules as collectstatic serves them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]
WIDGET = ROOT / "static" / "widget"
IMPORT = re.compile(r'^import \{ ([^}]*) \} from "(\./[^"]+)";$', re.MULTILINE)
EXPORT = re.compile(r"^export (?:async function|function|const|let|class) (\w+)", re.MULTILINE)


def widget_config(response: Any) -> dict[str, Any]:
    match = re.search(
        r'<script id="widget-config" type="application/json">(.*?)</script>', response.content.decode()
    )
    assert match is not None
    config: dict[str, Any] = json.loads(match.group(1))
    return config


def test_it_loads_the_widget_as_a_module_after_the_vendored_libraries() -> None:
    page = Client().get("/chat/").content.decode()

    scripts = re.findall(r"<script ([^>]*)></script>", page)
    assert scripts == [
        'src="/static/vendor/markdown-it.min.js" defer',
        'src="/static/vendor/purify.min.js" defer',
        'type="module" src="/static/widget/widget.js"',
    ]


def test_it_ignores_a_greeting_and_a_title_in_the_link(settings: Any) -> None:
    settings.WIDGET_ALLOWED_ORIGINS = ["https://shop.example.com"]
    evil = "Your account is locked: pay at evil.example"

    response = Client().get("/chat/", {"embed": "1", "greeting": evil, "title": evil})

    assert response.status_code == 200
    assert evil not in response.content.decode()
    config = widget_config(response)
    assert "greeting" not in config
    assert config["embedded"] is True
    assert config["title"] == "Support assistant"
    # Only a parent page on these origins may set the greeting, by postMessage from embed.js.
    assert config["allowedOrigins"] == ["https://shop.example.com"]


def test_it_lets_only_the_allowed_origins_frame_the_chat(settings: Any) -> None:
    settings.WIDGET_ALLOWED_ORIGINS = ["https://shop.example.com", "https://www.example.org"]

    response = Client().get("/chat/?embed=1")

    policy = response["Content-Security-Policy"]
    assert "frame-ancestors 'self' https://shop.example.com https://www.example.org;" in policy
    assert "script-src 'self';" in policy


def _imports(source: str) -> list[tuple[list[str], str]]:
    return [(names.split(", "), target) for names, target in IMPORT.findall(source)]


def test_it_imports_only_names_the_widgets_modules_export() -> None:
    # With no build step nothing else would notice a misspelt import before a customer's browser.
    modules = [WIDGET / "widget.js", *sorted((WIDGET / "chat").glob("*.js"))]
    checked = 0
    for module in modules:
        for names, target in _imports(module.read_text()):
            exported = set(EXPORT.findall((module.parent / target).resolve().read_text()))
            assert set(names) <= exported, f"{module.name} imports {set(names) - exported} from {target}"
            checked += len(names)
    assert checked > 100


def test_it_collects_every_module_the_widget_imports_under_the_same_relative_url(
    settings: Any, tmp_path: Path
) -> None:
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", interactive=False, verbosity=0)

    pending = [tmp_path / "widget" / "widget.js"]
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
        "widget/widget.js",
        *(f"widget/chat/{path.name}" for path in (WIDGET / "chat").glob("*.js")),
    }
