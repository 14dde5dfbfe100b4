"""`manage.py purge_conversations [--older-than-days N] [--dry-run]`: the retention purge, on demand."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations import retention


class Command(BaseCommand):
    help = (
        "Delete the conversations whose last activity (last message, else creation) is more than "
        "--older-than-days days ago (default DATA_RETENTION_DAYS), with their messages, images, "
        "ratings, tickets and review items and the image files; conversations with an unresolved "
        "ticket are kept. --dry-run only counts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-days",
            type=int,
            default=None,
            help="Days of inactivity (default: DATA_RETENTION_DAYS; 0 keeps everything).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; delete nothing.")

    def handle(self, *args: Any, older_than_days: int | None, dry_run: bool, **options: Any) -> None:
        try:
            days = (
                retention.retention_days()
                if older_than_days is None
                else retention.retention_days_check(older_than_days)
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        if days == 0:
            self.stdout.write("Retention is off (0 days): nothing to purge.")
            return
        result = retention.conversations_purge(days=days, dry_run=dry_run)
        cutoff = result.cutoff.isoformat() if result.cutoff else "-"
        if dry_run:
            self.stdout.write(
                f"Would remove {result.conversations} conversation(s) and {result.files} file(s) "
                f"inactive since before {cutoff} (dry run: nothing deleted)."
            )
        else:
            self.stdout.write(
                f"Removed {result.conversations} conversation(s) and {result.files} file(s) "
                f"inactive since before {cutoff}."
            )
