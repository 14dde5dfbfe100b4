"""Every web process also fails stalled replies, so a customer is told even when no worker runs.

The sweep that tells customers their reply's worker died is a Celery task: beat queues it and a worker
runs it. With the only worker killed and not restarted, nothing ran it and the customer waited for
ever. So each web process sweeps too, every REPLY_SWEEP_INTERVAL_SECONDS once it has served anyone,
on its own event loop. The sweep's updates are conditional, so processes sweeping at once fail a reply
once and tell its customer once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from conversations.replies import replies_fail_stalled

__all__ = ["StalledReplySweepMiddleware"]

logger = logging.getLogger(__name__)


class StalledReplySweepMiddleware:
    """ASGI middleware that starts this process's periodic sweep of stalled replies on its first request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._sweep: asyncio.Task[None] | None = None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in {"http", "websocket"}:
            self._start()
        await self.app(scope, receive, send)

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sweep is not None and not self._sweep.done() and self._sweep.get_loop() is loop:
            return
        self._sweep = loop.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.REPLY_SWEEP_INTERVAL_SECONDS)
            try:
                failed = await database_sync_to_async(replies_fail_stalled)()
            except Exception:
                logger.exception("Sweeping stalled replies failed; trying again later")
                continue
            if failed:
                logger.warning("The web process failed %s stalled replies", len(failed))
