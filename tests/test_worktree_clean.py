"""A test run leaves `git status` as it was: what the tests write goes where git ignores it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.browser.conftest import SCREENSHOTS

ROOT = Path(__file__).resolve().parent.parent


def _shown_by_git_status(path: Path) -> bool:
    """Whether git would list `path` as a change: tracked, or untracked and not ignored."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "--quiet", str(path)], cwd=ROOT, check=False)
    return ignored.returncode != 0


def test_it_keeps_the_browser_tests_screenshots_out_of_git() -> None:
    assert SCREENSHOTS == ROOT / "test-artifacts" / "screenshots"
    assert not _shown_by_git_status(SCREENSHOTS / "desktop-en.png")


def test_it_keeps_the_embedded_platforms_files_out_of_git() -> None:
    written = ["var/llama.log", "var/db.sqlite3", "var/secret_key", "media/x.jpg", "tests/__pycache__/x.pyc"]
    assert [path for path in written if _shown_by_git_status(ROOT / path)] == []
