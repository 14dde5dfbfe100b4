"""manage.py export_articles DIR"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from knowledge.importing import articles_export_to_directory


class Command(BaseCommand):
    help = "Write every article to DIR as <slug>.md, in the format import_articles reads."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path, metavar="DIR")

    def handle(self, *args: Any, **options: Any) -> None:
        """Export the articles and print how many."""
        count = articles_export_to_directory(options["directory"])
        self.stdout.write(f"articles: exported {count} to {options['directory']}")
