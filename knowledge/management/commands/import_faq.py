"""manage.py import_faq FILE"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.importing import FAQ_CSV_COLUMNS, faq_csv_import
from knowledge.management.commands._importing import import_and_report


class Command(BaseCommand):
    help = (
        f"Import FAQ entries from a CSV file with the header {','.join(FAQ_CSV_COLUMNS)}; an entry with the "
        "same language and question is updated. Exits 1 when any row failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, metavar="FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        """Import the rows and print created, updated, unchanged and failed (with each reason)."""
        path: Path = options["file"]
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file") from None
        except UnicodeDecodeError:
            raise CommandError(f"{path}: not UTF-8 text") from None
        import_and_report(self, lambda: faq_csv_import(text=text, source=str(path)), what="FAQ entries")
