"""The production image and the package hold every app the settings install: an app left out of the
Dockerfile imports on a developer's machine and fails in the container."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from django.apps import apps

ROOT = Path(__file__).resolve().parents[1]


def own_apps() -> set[str]:
    """The installed apps that are top-level packages of this repository (not those in .venv)."""
    return {config.name for config in apps.get_app_configs() if Path(config.path).resolve().parent == ROOT}


def test_the_settings_install_the_platforms_own_apps() -> None:
    assert {"cs_platform", "conversations", "inference", "knowledge", "reports"} <= own_apps()


def test_the_dockerfile_copies_every_app() -> None:
    copied = set(re.findall(r"^COPY (\w+) \1$", (ROOT / "Dockerfile").read_text(), re.MULTILINE))

    assert own_apps() - copied == set()


def test_the_package_includes_every_app() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]

    assert {app for app in own_apps() if not any(fnmatch(app, pattern) for pattern in patterns)} == set()
