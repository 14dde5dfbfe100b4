"""manage.py export_faq FILE"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from knowledge.importing import faq_csv_export


class Command(BaseCommand):
    help = "Write every FAQ entry to FILE as CSV, in the format import_faq reads."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, metavar="FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        """Export the FAQ entries and print how many."""
        path: Path = options["file"]
        text = faq_csv_export()
        path.write_text(text, encoding="utf-8")
        # Rows, not lines: an answer may hold line breaks.
        count = len(list(csv.reader(io.StringIO(text)))) - 1
        self.stdout.write(f"FAQ entries: exported {count} to {path}")
