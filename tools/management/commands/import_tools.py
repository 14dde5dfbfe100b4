"""manage.py import_tools FILE.json"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tools.services import ToolImportError, tools_import


class Command(BaseCommand):
    help = (
        "Create or update business tools from a JSON file: a list of tools (DESIGN.md, Business tools). "
        "Importing a name again updates that tool; a bad item never costs the good ones. Exits 1 when any "
        "item failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, metavar="FILE.json")

    def handle(self, *args: Any, **options: Any) -> None:
        """Import the file's tools and print created, updated and failed (each with its index and reason)."""
        path: Path = options["path"]
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise CommandError(f"{path}: cannot be read: {error.strerror or error}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CommandError(f"{path}: not JSON: {error}") from None
        try:
            report = tools_import(items=items)
        except ToolImportError as error:
            raise CommandError(f"{path}: {error}") from None
        for failure in report.failures:
            self.stderr.write(f"failed: {failure}")
        self.stdout.write(f"tools: {report.summary()}")
        if report.failures:
            raise CommandError(f"{len(report.failures)} of {len(items)} failed (see above)")
