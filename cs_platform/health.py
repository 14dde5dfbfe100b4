"""Operations endpoints: liveness and readiness."""

from __future__ import annotations

import asyncio

import httpx
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and answers HTTP."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        return f"database: {error.__class__.__name__}: {error}"
    return None


async def _check_channel_layer() -> str | None:
    layer = get_channel_layer()
    if layer is None:
        return "channel layer: not configured"
    try:
        channel = await layer.new_channel()
        await asyncio.wait_for(layer.send(channel, {"type": "readiness.probe"}), timeout=2)
        await asyncio.wait_for(layer.receive(channel), timeout=2)
    except Exception as error:
        return f"redis: {error.__class__.__name__}: {error}"
    return None


async def _check_inference() -> str | None:
    headers = {"Authorization": f"Bearer {settings.INFERENCE_API_KEY}"} if settings.INFERENCE_API_KEY else {}
    failures = []
    async with httpx.AsyncClient(timeout=3) as client:
        for base_url in settings.INFERENCE_BASE_URLS:
            try:
                response = await client.get(f"{base_url.rstrip('/')}/models", headers=headers)
                response.raise_for_status()
                return None
            except httpx.HTTPError as error:
                failures.append(f"{base_url}: {error.__class__.__name__}")
    return "inference: no server answered (" + "; ".join(failures) + ")"


async def readyz(request: HttpRequest) -> JsonResponse:
    """The database, the channel layer (Redis) and at least one inference server answer; else 503."""
    from asgiref.sync import sync_to_async

    database_failure = await sync_to_async(_check_database)()
    layer_failure, inference_failure = await asyncio.gather(_check_channel_layer(), _check_inference())
    failures = [failure for failure in (database_failure, layer_failure, inference_failure) if failure]
    if failures:
        return JsonResponse({"status": "unavailable", "failures": failures}, status=503)
    return JsonResponse({"status": "ok"})
