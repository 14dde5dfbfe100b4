"""How the import commands print what they did (shared by import_articles and import_faq)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from knowledge.importing import ImportReport


def report_print(command: BaseCommand, report: ImportReport, *, what: str) -> None:
    """Print each failure with its reason, then the counts; raise CommandError (exit 1) if any failed."""
    for failure in report.failures:
        command.stderr.write(f"failed: {failure.name}: {failure.error}")
    command.stdout.write(f"{what}: {report.summary()}")
    if report.failures:
        raise CommandError(f"{len(report.failures)} of {len(report.results)} failed (see above)")
