"""Operations endpoints: liveness and readiness.

`/readyz` is public, so it names only the part that failed and a state per inference server (in the
order of INFERENCE_BASE_URL, without URLs); the exception text and the servers' addresses go to the
log, and each server's state to `/metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum

import httpx
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from inference.client import FailureKind, ServerState, server_registry

logger = logging.getLogger(__name__)

# A readiness probe answers within a few seconds whatever the servers do.
PROBE_TIMEOUT_SECONDS = 3.0


class Part(StrEnum):
    """What `/readyz` names when it fails."""

    DATABASE = "database"
    REDIS = "redis"
    INFERENCE = "inference"


class InferenceServerState(StrEnum):
    """A server's state as `/readyz` shows it."""

    HEALTHY = "healthy"
    # It answers the probe, but failed recently in this process (a reply or a probe) and sits out
    # its cool-down.
    COOLING_DOWN = "cooling_down"
    NOT_ANSWERING = "not_answering"


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and answers HTTP."""
    return JsonResponse({"status": "ok"})


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        logger.warning("Readiness: the database did not answer", exc_info=True)
        return False
    return True


async def _channel_layer_answers() -> bool:
    layer = get_channel_layer()
    if layer is None:
        logger.warning("Readiness: no channel layer is configured")
        return False
    try:
        channel = await layer.new_channel()
        await asyncio.wait_for(layer.send(channel, {"type": "readiness.probe"}), timeout=2)
        await asyncio.wait_for(layer.receive(channel), timeout=2)
    except Exception:
        logger.warning("Readiness: the channel layer (Redis) did not answer", exc_info=True)
        return False
    return True


def _failure_kind(error: httpx.HTTPError) -> FailureKind:
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return FailureKind.CONNECT
    if isinstance(error, httpx.TimeoutException):
        return FailureKind.TIMEOUT
    if isinstance(error, httpx.HTTPStatusError):
        return FailureKind.SERVER_ERROR if error.response.status_code >= 500 else FailureKind.BAD_RESPONSE
    return FailureKind.CLOSED


async def _probe(client: httpx.AsyncClient, base_url: str) -> InferenceServerState:
    """List the server's models; a failure also puts it in its cool-down for this process's replies."""
    base_url = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {settings.INFERENCE_API_KEY}"} if settings.INFERENCE_API_KEY else {}
    try:
        response = await client.get(f"{base_url}/models", headers=headers)
        response.raise_for_status()
    except httpx.HTTPError as error:
        kind = _failure_kind(error)
        logger.warning("Readiness: inference server %s did not answer (%s): %r", base_url, kind, error)
        server_registry.record_failure(base_url, kind, settings.INFERENCE_SERVER_COOLDOWN_SECONDS)
        return InferenceServerState.NOT_ANSWERING
    health = server_registry.health(base_url)
    if health.state(server_registry.clock()) is ServerState.COOLING_DOWN:
        return InferenceServerState.COOLING_DOWN
    return InferenceServerState.HEALTHY


async def _inference_states() -> list[InferenceServerState]:
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_SECONDS) as client:
        return list(await asyncio.gather(*(_probe(client, url) for url in settings.INFERENCE_BASE_URLS)))


@dataclass(frozen=True)
class Readiness:
    """One probe's outcome: the parts that failed, and each inference server's state."""

    failures: list[Part]
    servers: list[InferenceServerState]


async def _check() -> Readiness:
    """Probe the database, the channel layer and every inference server once."""
    database_ok = await sync_to_async(_database_answers)()
    layer_ok, inference_states = await asyncio.gather(_channel_layer_answers(), _inference_states())
    failures = [
        part
        for part, failed in (
            (Part.DATABASE, not database_ok),
            (Part.REDIS, not layer_ok),
            (Part.INFERENCE, all(state is InferenceServerState.NOT_ANSWERING for state in inference_states)),
        )
        if failed
    ]
    return Readiness(failures=failures, servers=inference_states)


# /readyz is public: a burst of calls must cost one probe, not one each (40 at once timed the channel
# layer's probe out into false "redis" failures and opened 40 connections to a hung inference
# server). Calls share the probe in flight and reuse its result this long, per process.
READINESS_REUSE_SECONDS = 2.0
_clock = time.monotonic
_last: tuple[float, Readiness] | None = None
_in_flight: tuple[asyncio.AbstractEventLoop, asyncio.Task[Readiness]] | None = None


async def _probe_and_keep() -> Readiness:
    global _last
    readiness = await _check()
    _last = (_clock(), readiness)
    return readiness


async def readiness() -> Readiness:
    """The last probe's result if it is recent, else the probe in flight, else a new one."""
    global _in_flight
    if _last is not None and _clock() - _last[0] < READINESS_REUSE_SECONDS:
        return _last[1]
    loop = asyncio.get_running_loop()
    if _in_flight is None or _in_flight[0] is not loop or _in_flight[1].done():
        _in_flight = (loop, loop.create_task(_probe_and_keep()))
    # Shielded: a caller that goes away does not cancel the probe the others are waiting for.
    return await asyncio.shield(_in_flight[1])


def forget_readiness() -> None:
    """Drop the kept result (tests, whose settings change between calls)."""
    global _last, _in_flight
    _last = None
    _in_flight = None


async def readyz(request: HttpRequest) -> JsonResponse:
    """The database, the channel layer (Redis) and at least one inference server answer; else 503."""
    result = await readiness()
    failures = result.failures
    servers = [{"server": position, "state": state} for position, state in enumerate(result.servers, 1)]
    if failures:
        return JsonResponse(
            {"status": "unavailable", "failures": failures, "inference_servers": servers}, status=503
        )
    return JsonResponse({"status": "ok", "inference_servers": servers})
