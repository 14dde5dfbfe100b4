"""The OpenAI-compatible API (DESIGN.md, the gateway): GET /v1/models, POST /v1/chat/completions.

Views parse, check the key and its limits, and hand the call to gateway/completions.py; every request
with a good key is kept (gateway/records.py) however it ends, a refused one included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from access.keys import ApiKeyRefused, api_key_authenticate
from access.models import ApiKey
from conversations.uploads import UploadsBusy
from cs_platform.client_ip import client_ip_from_request
from cs_platform.logs import request_id_get
from gateway import errors
from gateway.assistant import AssistantPlan, assistant_plan_on_own_thread
from gateway.completions import Completion
from gateway.errors import GatewayError
from gateway.images import GatewayImageError, image_url_to_data_url
from gateway.limits import limits_check, tokens_count
from gateway.models import ApiRequest
from gateway.parsing import ChatCall, body_parse, chat_call_read
from gateway.records import Exchange, exchange_record
from inference.client import ChatRequest, InferenceClient
from inference.errors import InferenceError
from inference.generation import inference_client

logger = logging.getLogger(__name__)

# A proxied call that names no max_tokens gets this many at most (the assistant's come from its profile).
PROXY_DEFAULT_MAX_TOKENS = 1024
OWNED_BY = "cs-platform"
# Records being written after their caller went away: kept referenced until they are saved.
_records_in_flight: set[asyncio.Task[ApiRequest]] = set()


async def _key(request: HttpRequest) -> ApiKey:
    try:
        return await api_key_authenticate(authorization=request.headers.get("Authorization", ""))
    except ApiKeyRefused as refused:
        raise errors.invalid_api_key(refused.message) from None


# The inference server's model name when INFERENCE_MODEL does not say it, as last asked, and when:
# the servers are asked at most once a minute, not once per request.
_served_model: dict[tuple[str, ...], tuple[str, float]] = {}
SERVED_MODEL_SECONDS = 60.0


async def _raw_model(client: InferenceClient) -> str | None:
    """The inference server's model name, or None when no server can say."""
    if client.model:
        return client.model
    servers = tuple(client.base_urls)
    known = _served_model.get(servers)
    if known is not None and time.monotonic() - known[1] < SERVED_MODEL_SECONDS:
        return known[0]
    try:
        name = await client.served_model()
    except InferenceError:
        return None
    _served_model[servers] = (name, time.monotonic())
    return name


async def _models_for(api_key: ApiKey, client: InferenceClient) -> list[str]:
    allowed = list(api_key.allowed_models or [])
    models = [settings.GATEWAY_ASSISTANT_MODEL] if settings.GATEWAY_ASSISTANT_MODEL in allowed else []
    if any(name != settings.GATEWAY_ASSISTANT_MODEL for name in allowed):
        raw = await _raw_model(client)
        if raw is not None and raw in allowed and raw not in models:
            models.append(raw)
    return models


def _model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNED_BY}


@csrf_exempt
async def models_list(request: HttpRequest) -> HttpResponse:
    """The models this key may call: the assistant, and the raw model where the key allows it."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    try:
        api_key = await _key(request)
        names = await _models_for(api_key, inference_client())
    except GatewayError as error:
        return error.response()
    return JsonResponse({"object": "list", "data": [_model_entry(name) for name in names]})


@csrf_exempt
async def model_get(request: HttpRequest, model: str) -> HttpResponse:
    """One model, if this key may call it."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    try:
        api_key = await _key(request)
        if model not in await _models_for(api_key, inference_client()):
            raise errors.model_not_found(model)
    except GatewayError as error:
        return error.response()
    return JsonResponse(_model_entry(model))


def _method_not_allowed(allowed: str) -> HttpResponse:
    response = GatewayError(405, f"Use {allowed} here.", code="method_not_allowed").response()
    response["Allow"] = allowed
    return response


async def _read_body(request: HttpRequest) -> bytes:
    limit = settings.GATEWAY_MAX_REQUEST_BYTES
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"The request body is over {limit} bytes.", code="request_too_large")
    raw = await sync_to_async(request.read, thread_sensitive=False)(limit + 1)
    if len(raw) > limit:
        raise GatewayError(413, f"The request body is over {limit} bytes.", code="request_too_large")
    return raw


async def _images_take(call: ChatCall, api_key: ApiKey) -> None:
    """Replace every image URL by the normalised image's data: URL (fetched first where allowed)."""
    for number, (where, part) in enumerate(call.image_parts_where()):
        try:
            part["image_url"] = {
                "url": await image_url_to_data_url(
                    part["image_url"]["url"], fetches_image_urls=api_key.fetches_image_urls
                )
            }
        except GatewayImageError as rejected:
            raise errors.bad_request(
                f"Image {number + 1}: {rejected.message}", param=where, code=rejected.code
            ) from None
        except UploadsBusy as busy:
            raise GatewayError(
                503, busy.detail, code="busy", error_type="server_error", retry_after=busy.retry_after
            ) from None


def _proxy_request(call: ChatCall) -> ChatRequest:
    return ChatRequest(
        messages=[{"role": entry["role"], "content": entry["content"]} for entry in call.messages],
        max_tokens=call.max_tokens or PROXY_DEFAULT_MAX_TOKENS,
        temperature=call.temperature,
        options=dict(call.options),
    )


def _milliseconds(since: float, until: float | None = None) -> int:
    return max(0, round(((until if until is not None else time.monotonic()) - since) * 1000))


class ChatCompletionRun:
    """One POST /v1/chat/completions from its first byte to its record."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request
        self.started = time.monotonic()
        self.created = int(timezone.now().timestamp())
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.exchange = Exchange(
            api_key=None,
            client_ip=client_ip_from_request(request),
            user_agent=request.headers.get("User-Agent", "")[:512],
            request_id=request_id_get() or "",
        )
        self.call: ChatCall | None = None
        self.completion: Completion | None = None
        self.recorded = False

    async def prepare(self) -> Completion:
        """Everything before the model: the key, the body, the limits, the images, the prompt."""
        exchange = self.exchange
        api_key = await _key(self.request)
        exchange.api_key = api_key
        call = chat_call_read(body_parse(await _read_body(self.request)))
        self.call = call
        exchange.model, exchange.stream = call.model, call.stream
        allowed = list(api_key.allowed_models or [])
        client = inference_client()
        if call.model == settings.GATEWAY_ASSISTANT_MODEL and call.model in allowed:
            exchange.mode = ApiRequest.Mode.ASSISTANT
        elif call.model in allowed and call.model == await _raw_model(client):
            exchange.mode = ApiRequest.Mode.PROXY
        else:
            raise errors.model_not_found(call.model)
        await limits_check(api_key)
        # The key and the limits were read on this request's own thread (the async ORM's), whose
        # connection would stay checked out of the pool until the response is sent: a stream lasts
        # as long as the model writes, so ten streams would hold the whole pool. Give it back now;
        # the plan reads on a thread of its own, and the record on another, each giving theirs back.
        await sync_to_async(connections.close_all)()
        await _images_take(call, api_key)
        exchange.call = call
        # The model's name as last asked (when INFERENCE_MODEL does not say it): the stream needs no
        # GET /models of its own. None (no server answers) leaves the stream to find out and fail.
        client.model = await _raw_model(client) or ""
        if exchange.mode == ApiRequest.Mode.ASSISTANT:
            plan: AssistantPlan = await sync_to_async(assistant_plan_on_own_thread, thread_sensitive=False)(
                call
            )
            exchange.locale = plan.locale
            return Completion(client=client, request=None, plan=plan)
        return Completion(client=client, request=_proxy_request(call))

    def fail(self, error: GatewayError) -> None:
        self.exchange.status_code = error.status
        self.exchange.error_code = error.code
        self.exchange.error_detail = error.message

    async def finish(self, *, error: GatewayError | None = None, disconnected: bool = False) -> None:
        """The request is over: note how, keep it and log it."""
        if error is not None:
            self.fail(error)
        if disconnected:
            self.exchange.client_disconnected = True
        await self.record()
        self.log()

    async def record(self) -> None:
        """Keep the request (once), and count its tokens against the key's minute."""
        if self.recorded:
            return
        self.recorded = True
        exchange = self.exchange
        if exchange.api_key is None:
            return  # no key, nothing to keep: the log line says it
        completion = self.completion
        if completion is not None:
            completion.usage_settle()
            answer = completion.answer
            exchange.answer = answer.text
            exchange.served_model = answer.served_model
            exchange.prompt_tokens, exchange.completion_tokens = (
                answer.prompt_tokens,
                answer.completion_tokens,
            )
            exchange.source = answer.source
            exchange.citations, exchange.is_unanswered = answer.citations, answer.is_unanswered
            exchange.truncated = answer.finish_reason == "length"
            if answer.first_token_at is not None:
                exchange.first_token_ms = _milliseconds(self.started, answer.first_token_at)
            if answer.blocked_term is not None:
                exchange.error_code, exchange.error_detail = "blocked", answer.blocked_term
        exchange.duration_ms = _milliseconds(self.started)
        api_key = exchange.api_key
        tokens = (exchange.prompt_tokens or 0) + (exchange.completion_tokens or 0)

        async def save() -> ApiRequest:
            await tokens_count(api_key, tokens)
            return await database_sync_to_async(exchange_record)(exchange)

        # Shielded: a caller that went away cancels the request's task, never the record of it.
        task = asyncio.create_task(save())
        _records_in_flight.add(task)
        task.add_done_callback(_records_in_flight.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("A gateway request could not be recorded")

    def log(self) -> None:
        exchange = self.exchange
        logger.info(
            "gateway.request",
            extra={
                "api_key": exchange.api_key.prefix if exchange.api_key else None,
                "client_ip": exchange.client_ip,
                "model": exchange.model or None,
                "stream": exchange.stream,
                "status": exchange.status_code,
                "error_code": exchange.error_code or None,
                "ttft_ms": exchange.first_token_ms,
                "total_ms": exchange.duration_ms,
                "prompt_tokens": exchange.prompt_tokens,
                "completion_tokens": exchange.completion_tokens,
                "client_disconnected": exchange.client_disconnected,
            },
        )

    # --- responses ------------------------------------------------------------------------------

    def _usage(self) -> dict[str, int]:
        answer = self.completion.answer if self.completion else None
        prompt = (answer.prompt_tokens if answer else None) or 0
        completion = (answer.completion_tokens if answer else None) or 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _extension(self) -> dict[str, Any]:
        """The documented extension fields: the assistant's citations (README, the gateway)."""
        if self.exchange.mode != ApiRequest.Mode.ASSISTANT or self.completion is None:
            return {}
        return {"citations": self.completion.answer.citations}

    def body(self) -> dict[str, Any]:
        assert self.completion is not None
        assert self.call is not None
        answer = self.completion.answer
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.call.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": answer.finish_reason or "stop",
                }
            ],
            "usage": self._usage(),
            **self._extension(),
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **more: Any) -> bytes:
        assert self.call is not None
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.call.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            **more,
        }
        if self.call.include_usage:
            payload.setdefault("usage", None)
        return _event(payload)

    async def stream(self, first: str, pieces: AsyncGenerator[str, None]) -> AsyncGenerator[bytes, None]:
        """The answer as server-sent events, OpenAI's chunks; an error after the first is an error event."""
        assert self.completion is not None
        assert self.call is not None
        try:
            yield self.chunk({"role": "assistant", "content": ""})
            yield self.chunk({"content": first})
            async for piece in pieces:
                yield self.chunk({"content": piece})
            answer = self.completion.answer
            yield self.chunk({}, answer.finish_reason or "stop", **self._extension())
            if self.call.include_usage:
                yield _event(
                    {
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.call.model,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": self._usage(),
                    }
                )
            # Kept before the end is sent: whoever reads the end can find the record.
            await self.record()
            yield b"data: [DONE]\n\n"
        except InferenceError as failure:
            error = errors.inference_failed(failure.code, _inference_sentence(failure))
            self.fail(error)
            logger.warning("Gateway stream %s failed (%s): %s", self.id, failure.code, failure.detail)
            yield _event(error.body())
        except (asyncio.CancelledError, GeneratorExit):
            self.exchange.client_disconnected = True
            raise
        finally:
            await pieces.aclose()
            await self.record()
            self.log()


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def _inference_sentence(failure: InferenceError) -> str:
    return {
        "inference_timeout": "The model did not answer in time; try again.",
        "inference_unavailable": "The model is not reachable right now; try again shortly.",
        "inference_bad_response": "The model sent an answer that could not be read; try again.",
        "inference_rejected": f"The model refused the request: {failure.detail}",
    }.get(failure.code, "The model failed to answer; try again.")


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """Answer a chat completion, streamed as server-sent events or whole."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    run = ChatCompletionRun(request)
    try:
        try:
            run.completion = await run.prepare()
            pieces = run.completion.pieces()
            # The first piece before any header: a model that is down answers with an error status.
            try:
                first = await anext(pieces)
            except StopAsyncIteration:
                first = ""
            except InferenceError as failure:
                logger.warning("Gateway request %s failed (%s): %s", run.id, failure.code, failure.detail)
                raise errors.inference_failed(failure.code, _inference_sentence(failure)) from None
        except GatewayError as error:
            await run.finish(error=error)
            return error.response()
    except asyncio.CancelledError:
        await run.finish(disconnected=True)
        raise
    if run.call is not None and run.call.stream:
        response = StreamingHttpResponse(run.stream(first, pieces), content_type="text/event-stream")
        # Never buffered or compressed on the way: each chunk must reach the caller as it is made.
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    try:
        async for _ in pieces:
            pass
    except InferenceError as failure:
        logger.warning("Gateway request %s failed (%s): %s", run.id, failure.code, failure.detail)
        failed = errors.inference_failed(failure.code, _inference_sentence(failure))
        await run.finish(error=failed)
        return failed.response()
    except asyncio.CancelledError:
        await run.finish(disconnected=True)
        raise
    await run.finish()
    return JsonResponse(run.body(), json_dumps_params={"ensure_ascii": False})
