"""manage.py import_articles PATH... [--publish] [--locale zh-Hans|en]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from knowledge.importing import articles_import_paths
from knowledge.management.commands._importing import import_and_report
from knowledge.models import Locale


class Command(BaseCommand):
    help = (
        "Import articles from Markdown files (<slug>.md), .zip archives of them, or folders (searched "
        "recursively). Re-importing a slug saves a new version. Exits 1 when any file failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument(
            "--publish",
            action="store_true",
            help="Publish them all (else new ones are drafts and existing ones keep their status).",
        )
        parser.add_argument(
            "--locale",
            choices=Locale.values,
            help="The language of every file (otherwise the file's lang:, else detected from its text).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Import the files and print created, updated, unchanged and failed (with each reason)."""
        import_and_report(
            self,
            lambda: articles_import_paths(
                paths=options["paths"], publish=options["publish"], locale=options["locale"]
            ),
            what="articles",
        )
