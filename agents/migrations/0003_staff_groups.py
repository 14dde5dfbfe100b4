"""The Agent, Supervisor and Manager groups the console and reports check, present on every install.

Without them an operator would have to guess the names the permission checks use; admin then lists
them under Groups, ready to add people to.
"""

from django.db import migrations

GROUPS = ("Agent", "Supervisor", "Manager")


def groups_create(apps, schema_editor):  # type: ignore[no-untyped-def]
    group_model = apps.get_model("auth", "Group")
    for name in GROUPS:
        group_model.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0002_presence_auto_assign_canned_replies"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    # Reversing keeps the groups: people may have been added to them since.
    operations = [migrations.RunPython(groups_create, migrations.RunPython.noop)]
