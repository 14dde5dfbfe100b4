from typing import Any

from django.core.management.base import BaseCommand

from cs_platform.demo import admin_password_file, demo_data_load


class Command(BaseCommand):
    help = "Load demo data (assistant profile, quick entries, articles) and create the admin user."

    def handle(self, *args: Any, **options: Any) -> None:
        password = demo_data_load()
        if password:
            self.stdout.write(f"Created admin user 'admin' with password: {password}")
        elif admin_password_file().exists():
            self.stdout.write(f"Admin user 'admin', password: {admin_password_file().read_text().strip()}")
        else:
            self.stdout.write("Admin user 'admin' already exists.")
