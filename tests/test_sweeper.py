"""With no Celery worker or beat at all, a reply whose worker died is still failed and its customer told.

The sweep used to run only as a Celery task, so with the only worker killed and not restarted the
customer waited for ever; each web process now sweeps too (cs_platform/sweeper.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from django.conf import settings
from django.utils import timezone
from websockets.typing import Origin

from conversations.models import Message
from cs_platform.processes import free_port, stop_process_group
from tests import factories
from tests.processes import daphne_start, database_url

ConversationFactory: Any = factories.ConversationFactory
MessageFactory: Any = factories.MessageFactory

pytestmark = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="daphne in its own process needs a database it can share (PostgreSQL)",
)


@pytest.fixture
def web_alone(transactional_db: None, tmp_path: Path) -> Iterator[str]:
    """The production web server on the test database, with no worker and no beat anywhere."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL or "redis://127.0.0.1:6379/1",
        "SECRET_KEY": "sweeper-test-secret",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "REPLY_HEARTBEAT_SECONDS": "1",
        "REPLY_STALLED_AFTER_SECONDS": "3",
        "REPLY_SWEEP_INTERVAL_SECONDS": "1",
    }
    log = tmp_path / "daphne.log"
    process = daphne_start(port=port, environment=env, log=log)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process_group(process)
        print(f"----- daphne.log -----\n{log.read_text()[-3000:]}")


async def test_it_tells_the_customer_when_their_replys_worker_died_and_no_worker_runs(web_alone: str) -> None:
    from asgiref.sync import sync_to_async

    def dead_workers_reply() -> tuple[Any, int]:
        conversation = ConversationFactory()
        question = MessageFactory(conversation=conversation, text="Where is my parcel?")
        long_ago = timezone.now() - timedelta(minutes=1)
        reply = MessageFactory(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            text="",
            reply_to=question,
            generation_started_at=long_ago,
            heartbeat_at=long_ago,
        )
        return conversation, reply.pk

    conversation, reply_id = await sync_to_async(dead_workers_reply)()
    async with websockets.connect(
        f"ws://{web_alone}/ws/conversations/{conversation.pk}/", origin=Origin("http://localhost")
    ) as socket:
        await socket.send(json.dumps({"type": "hello", "token": conversation.token}))
        ready = json.loads(await socket.recv(decode=True))
        assert ready["pending_reply"]["reply_id"] == reply_id

        # No worker and no beat: only the web process's own sweep can say so, within a few seconds.
        async def final_frame() -> dict[str, Any]:
            while True:
                frame: dict[str, Any] = json.loads(await socket.recv(decode=True))
                if frame["type"] == "reply.error":
                    return frame

        frame = await asyncio.wait_for(final_frame(), 60)

    assert (frame["reply_id"], frame["code"]) == (reply_id, "worker_lost")
    saved = await sync_to_async(Message.objects.get)(pk=reply_id)
    assert (saved.status, saved.error_code) == (Message.Status.FAILED, "worker_lost")
