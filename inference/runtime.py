"""The reply runtime: one event loop per process, on which many replies stream at once.

Generation is I/O-bound (an HTTP stream in, channel-layer sends out), so one process can stream
hundreds of replies on one loop. A Celery worker on the `threads` pool gives each reply task a
thread that only hands the coroutine to this loop and waits for it (`run`), with a time limit of
its own: the threads pool has none. The loop runs in a daemon thread, started on first use and
started again in a forked child (a loop does not survive `fork`).

This module also keeps one pooled HTTP client per event loop (`http_client`), so replies reuse
their connections to each inference server instead of opening one per reply; daphne's loop (the
embedded default, `REPLY_GENERATION_IN_PROCESS`) gets one too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

# httpx imports its transport (httpcore, and with it anyio) only when the first client is made. That
# happened on the first reply, on the runtime's thread, while retrieval was warming up on another,
# and anyio's lazy importer compiles source as it is imported: CPython 3.11's compiler is not safe
# to run on two threads at once ("SystemError: AST constructor recursion depth mismatch"), and the
# reply failed. Imported here, with this module, before any of those threads starts.
import httpcore  # noqa: F401
import httpx
from django.conf import settings

__all__ = ["ReplyRuntime", "http_client", "run", "runtime"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long past its own time limit a caller waits for a coroutine that does not end (a loop blocked
# by a sync call, say) before it gives up on it.
LOOP_GRACE_SECONDS = 30.0
# Idle pooled connections are dropped after this long: below the 5 s keep-alive of vLLM's uvicorn and
# llama.cpp's server, so a request is not sent on a connection the server is just closing.
KEEPALIVE_EXPIRY_SECONDS = 4.0


class ReplyRuntime:
    """An event loop running forever in a daemon thread of this process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="reply-runtime", daemon=True)
        self.thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coroutine` on the loop; its future can be waited on from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    @property
    def alive(self) -> bool:
        return self.pid == os.getpid() and self.thread.is_alive() and not self.loop.is_closed()


_lock = threading.Lock()
_runtime: ReplyRuntime | None = None


def runtime() -> ReplyRuntime:
    """This process's runtime, started on first use (and again in a forked child)."""
    global _runtime
    current = _runtime
    if current is not None and current.alive:
        return current
    with _lock:
        if _runtime is None or not _runtime.alive:
            _runtime = ReplyRuntime()
            logger.info("Reply runtime started in process %s", _runtime.pid)
        return _runtime


def run(coroutine: Coroutine[Any, Any, T], *, timeout: float) -> T:
    """Run `coroutine` on the runtime's loop and wait for its result in the calling thread.

    After `timeout` seconds it is cancelled on the loop and TimeoutError is raised here; should the
    loop not end it within LOOP_GRACE_SECONDS more, the caller stops waiting all the same.
    """

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coroutine

    future = runtime().submit(bounded())
    try:
        return future.result(timeout=timeout + LOOP_GRACE_SECONDS)
    except concurrent.futures.TimeoutError:
        if future.cancel():
            logger.error(
                "A coroutine on the reply runtime outlived its time limit by %s s", LOOP_GRACE_SECONDS
            )
        raise


# One pooled client per event loop: an httpx client belongs to the loop it is first used on. Loops
# that closed (a test's, an `asyncio.run`'s) are dropped on the next lookup.
_clients_lock = threading.Lock()
_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def http_client() -> httpx.AsyncClient | None:
    """The running loop's pooled HTTP client, or None outside a running loop.

    httpx keeps a pool per origin, so this is one connection pool per inference server, shared by
    every reply on the loop. A connection is held by one stream at a time; it goes back to the pool
    when the stream ends and is reused by the next reply.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    with _clients_lock:
        for closed in [other for other in _clients if other.is_closed()]:
            del _clients[closed]
        client = _clients.get(loop)
        if client is None:
            concurrency = int(getattr(settings, "REPLY_CONCURRENCY_PER_PROCESS", 100))
            client = _clients[loop] = httpx.AsyncClient(
                # No cap on connections: a stream holds one for its whole length, and the replies in
                # flight are already bounded by the worker's concurrency.
                limits=httpx.Limits(
                    max_connections=None,
                    max_keepalive_connections=max(concurrency, 20),
                    keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
                ),
            )
        return client


def _forget_after_fork() -> None:
    """In a forked child: the parent's loop thread and clients do not exist here."""
    global _lock, _runtime, _clients_lock
    _lock = threading.Lock()
    _runtime = None
    _clients_lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
