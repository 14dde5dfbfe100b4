"""Reading a /v1/chat/completions body: every mistake is a 400 naming the parameter, in OpenAI's shape."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from gateway.errors import GatewayError, bad_request

ROLES = ("system", "developer", "user", "assistant")
# Sampling options passed on to the model as they are, each checked for its type first.
NUMBER_OPTIONS = {"top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0), "frequency_penalty": (-2.0, 2.0)}
UNSUPPORTED = {
    "tools": "This gateway does not run tools or functions; leave out `tools`.",
    "functions": "This gateway does not run tools or functions; leave out `functions`.",
    "tool_choice": "This gateway does not run tools or functions; leave out `tool_choice`.",
    "function_call": "This gateway does not run tools or functions; leave out `function_call`.",
    "audio": "This gateway answers in text only; leave out `audio`.",
}


@dataclass
class ChatCall:
    """A chat completion request as the gateway understood it."""

    model: str
    # Each {"role": ..., "content": str | [parts]}, parts being {"type": "text", "text"} or
    # {"type": "image_url", "image_url": {"url"}} (the URL is replaced by the normalised image's).
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    user: str = ""

    def image_parts(self) -> list[dict[str, Any]]:
        """Every image part, in order, so that the caller can replace their URLs in place."""
        return [part for _, part in self.image_parts_where()]

    def image_parts_where(self) -> list[tuple[str, dict[str, Any]]]:
        """Every image part with where it is (`messages[0].content[1]`, a refusal's `param`)."""
        return [
            (f"messages[{index}].content[{position}]", part)
            for index, message in enumerate(self.messages)
            if isinstance(message["content"], list)
            for position, part in enumerate(message["content"])
            if part["type"] == "image_url"
        ]


def body_parse(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_request(f"We could not parse the JSON body of your request ({error}).") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _part_read(part: Any, *, where: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise bad_request(f"{where} must be an object with a `type`.", param=where)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise bad_request(f"{where}.text must be a string.", param=f"{where}.text")
        return {"type": "text", "text": text}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url.strip():
            raise bad_request(f"{where}.image_url.url must be a URL.", param=f"{where}.image_url")
        return {"type": "image_url", "image_url": {"url": url.strip()}}
    raise bad_request(
        f"{where}.type {kind!r} is not supported: use `text` or `image_url`.", param=f"{where}.type"
    )


def _message_read(message: Any, index: int) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad_request(f"{where} must be an object with `role` and `content`.", param=where)
    role = message.get("role")
    if role not in ROLES:
        raise bad_request(
            f"{where}.role {role!r} is not supported: use one of {', '.join(ROLES)}.", param=f"{where}.role"
        )
    content = message.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if isinstance(content, list) and content:
        parts = [_part_read(part, where=f"{where}.content[{n}]") for n, part in enumerate(content)]
        if role != "user" and any(part["type"] != "text" for part in parts):
            raise bad_request(f"{where}: only user messages may carry images.", param=f"{where}.content")
        return {"role": role, "content": parts}
    raise bad_request(
        f"{where}.content must be a string or a non-empty list of content parts.", param=f"{where}.content"
    )


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"`{name}` must be a number.", param=name)
    if not low <= value <= high:
        raise bad_request(f"`{name}` must be between {low:g} and {high:g}, not {value!r}.", param=name)
    return float(value)


def _positive_integer(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"`{name}` must be a positive integer, not {value!r}.", param=name)
    return value


def chat_call_read(body: dict[str, Any]) -> ChatCall:
    """The chat request in `body`, or a GatewayError (400) naming what is wrong."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("You must provide a model parameter (GET /v1/models lists them).", param="model")
    for name, sentence in UNSUPPORTED.items():
        # Given at all, even empty (OpenAI refuses `"tools": []` too); only "no tool" may be said.
        if body.get(name) is not None and not (name == "tool_choice" and body[name] == "none"):
            raise bad_request(sentence, param=name)
    if body.get("n") not in (None, 1):
        raise bad_request("Only one choice is generated: `n` must be 1.", param="n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` must be a non-empty list of messages.", param="messages")
    read = [_message_read(message, index) for index, message in enumerate(messages)]
    if not any(message["role"] == "user" for message in read):
        raise bad_request("`messages` must hold at least one user message.", param="messages")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("`stream` must be true or false.", param="stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise bad_request("`stream_options` must be an object.", param="stream_options")
    include_usage = bool((stream_options or {}).get("include_usage", False))
    max_tokens = _positive_integer(body, "max_completion_tokens") or _positive_integer(body, "max_tokens")
    options: dict[str, Any] = {}
    for name, (low, high) in NUMBER_OPTIONS.items():
        value = _number(body, name, low, high)
        if value is not None:
            options[name] = value
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise bad_request("`seed` must be an integer.", param="seed")
        options["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
            raise bad_request("`stop` must be a string or a list of up to 4 strings.", param="stop")
        options["stop"] = stop
    user = body.get("user") or ""
    if not isinstance(user, str):
        raise bad_request("`user` must be a string.", param="user")
    call = ChatCall(
        model=model.strip(),
        messages=read,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0),
        options=options,
        user=user[:200],
    )
    images = len(call.image_parts())
    if images and not settings.INFERENCE_VISION:
        raise bad_request(
            "The model behind this gateway does not see images (INFERENCE_VISION is off): send text only.",
            param="messages",
            code="images_not_supported",
        )
    if images > settings.GATEWAY_MAX_IMAGES_PER_REQUEST:
        raise bad_request(
            f"A request may carry at most {settings.GATEWAY_MAX_IMAGES_PER_REQUEST} images, not {images}.",
            param="messages",
            code="too_many_images",
        )
    return call


def text_of(content: str | list[dict[str, Any]]) -> str:
    """A message's text: its string, or its text parts joined."""
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part["type"] == "text")


__all__ = ["ChatCall", "GatewayError", "body_parse", "chat_call_read", "text_of"]
