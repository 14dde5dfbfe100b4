"""The platform as a separate daphne process, through the production entry point, on the test
PostgreSQL database and the tests' Redis database; replies are generated in-process against a
scripted OpenAI-compatible server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import Group, User

from cs_platform.processes import free_port, stop_process_group
from tests.processes import daphne_start, database_url
from tests.scripted_inference import ScriptedInferenceServer

PASSWORD = "contract-password-1"


@dataclass
class Server:
    url: str
    inference: ScriptedInferenceServer
    log: Path
    # The daphne process's environment, for running `manage.py` as an operator on the same platform.
    environment: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def server(
    transactional_db: None, scripted_inference: ScriptedInferenceServer, tmp_path: Path
) -> Iterator[Server]:
    """daphne started as `python -m cs_platform.serve_web`, as the Dockerfile and compose run it."""
    assert settings.REDIS_URL, "the contract tests need REDIS_URL (the tests' own Redis database)"
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    port = free_port()
    log = tmp_path / "daphne.log"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "contract-test-secret",
        "REPLY_GENERATION_IN_PROCESS": "true",
        "INFERENCE_BASE_URL": scripted_inference.base_url,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "PYTHONUNBUFFERED": "1",
    }
    process = daphne_start(port=port, environment=environment, log=log)
    try:
        yield Server(
            url=f"http://127.0.0.1:{port}", inference=scripted_inference, log=log, environment=environment
        )
    finally:
        stop_process_group(process)
        print(log.read_text()[-6000:])


def staff_user_create(username: str, first_name: str, last_name: str, group: str | None = "Agent") -> User:
    """A user with the suite's password, in `group` (None: in no staff group)."""
    user = User.objects.create_user(
        username=username,
        password=PASSWORD,
        first_name=first_name,
        last_name=last_name,
        is_staff=group is not None,
    )
    if group is not None:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user
