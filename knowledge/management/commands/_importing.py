"""What the import commands share: one transaction, waiting for the index, and how they report."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from knowledge import services
from knowledge.importing import ImportReport
from knowledge.models import IndexBuild


def import_and_report(command: BaseCommand, run_import: Callable[[], ImportReport], *, what: str) -> None:
    """Run an import in one transaction (each file in its own savepoint, so a bad one costs nothing
    else; the index is asked for once, on commit), wait for the index the embedded default builds in
    this process, print each failure and the counts, and exit 1 (CommandError) if any failed."""
    latest_before = IndexBuild.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    with transaction.atomic():
        report = run_import()
    _index_build_wait(command, latest_before)
    for failure in report.failures:
        command.stderr.write(f"failed: {failure.name}: {failure.error}")
    command.stdout.write(f"{what}: {report.summary()}")
    if report.failures:
        raise CommandError(f"{len(report.failures)} of {len(report.results)} failed (see above)")


def _index_build_wait(command: BaseCommand, latest_before: int) -> None:
    # With Celery eager (the embedded default) the build runs on a daemon thread of this process: the
    # command's exit would kill it half-way, leaving the new content unindexed. With a worker, the
    # task is queued and the command need not wait.
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        return
    services.index_rebuild_wait()
    build = IndexBuild.objects.filter(pk__gt=latest_before).order_by("-pk").first()
    if build is not None:
        error = f": {build.error.splitlines()[0]}" if build.error else ""
        counts = f"{build.chunk_count} chunks, {build.faq_count} FAQ entries"
        command.stdout.write(f"index: build {build.pk} {build.status}, {counts}{error}")
