# The reports page's tables, kept per day like the summary's figures: handoff reasons, the agents'
# times, the cited articles and the unanswered questions. Rows written before this get version 0, which
# the reports do not read (those days are counted live) until the beat task or `manage.py
# reports_recompute` rewrites them.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="dailystat",
            name="version",
            field=models.PositiveSmallIntegerField(default=0, verbose_name="version"),
        ),
        migrations.AddField(
            model_name="dailystat",
            name="handoff_triggers",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="dailystat",
            name="first_response_histogram",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="dailystat",
            name="resolution_histogram",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="dailystat",
            name="cited_articles",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="dailystat",
            name="unanswered_questions",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
