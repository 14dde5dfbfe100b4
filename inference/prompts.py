"""Build the prompt for a reply: the assistant profile's instructions and the history that fits."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from conversations import selectors
from conversations.models import Attachment, Message
from inference.client import ChatRequest
from inference.models import AssistantProfile

DEFAULT_INSTRUCTIONS = (
    "You are a friendly, accurate customer-service assistant. Answer briefly and concretely. "
    "If you do not know the answer or cannot help, say so and offer to connect the customer with a person. "
    "Never invent order details, prices or policies."
)

LANGUAGE_POLICY_SENTENCES: dict[str, str] = {
    AssistantProfile.LanguagePolicy.MATCH_CUSTOMER: (
        "Always answer in the language of the customer's latest message (Simplified Chinese or English)."
    ),
    AssistantProfile.LanguagePolicy.ALWAYS_ZH_HANS: "Always answer in Simplified Chinese.",
    AssistantProfile.LanguagePolicy.ALWAYS_EN: "Always answer in English.",
}

# Room left for the chat template's own tokens around each message.
TOKENS_PER_MESSAGE_OVERHEAD = 6
_WIDE_CHARACTERS = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def estimate_tokens(text: str) -> int:
    """A conservative token estimate: one per CJK character, one per three other characters.

    Exact counts need the model's own tokenizer; this errs on the high side so the prompt fits.
    """
    wide = len(_WIDE_CHARACTERS.findall(text))
    return wide + (len(text) - wide + 2) // 3


@dataclass(frozen=True)
class ProfileSettings:
    name: str
    instructions: str
    language_policy: str
    temperature: float
    max_tokens: int


def active_profile() -> ProfileSettings:
    """The assistant profile in force, or built-in defaults when none is active."""
    profile = AssistantProfile.objects.filter(is_active=True).first()
    if profile is None:
        return ProfileSettings(
            name="Support assistant",
            instructions=DEFAULT_INSTRUCTIONS,
            language_policy=AssistantProfile.LanguagePolicy.MATCH_CUSTOMER,
            temperature=0.3,
            max_tokens=512,
        )
    return ProfileSettings(
        name=profile.name,
        instructions=profile.system_instructions,
        language_policy=profile.language_policy,
        temperature=profile.temperature,
        max_tokens=profile.max_tokens,
    )


def system_prompt(*, profile: ProfileSettings, locale: str) -> str:
    """The system message: who the assistant is, which language it answers in."""
    if profile.language_policy == AssistantProfile.LanguagePolicy.CONVERSATION_LOCALE:
        language = "Simplified Chinese" if locale == "zh-Hans" else "English"
        policy = f"Always answer in {language}."
    else:
        policy = LANGUAGE_POLICY_SENTENCES.get(profile.language_policy, "")
    return f"Your name is {profile.name}.\n{profile.instructions.strip()}\n{policy}".strip()


def _image_placeholder(attachment: Attachment) -> str:
    """What a prompt says in place of an image the model will not see."""
    if settings.INFERENCE_VISION:
        return "[An earlier image from the customer, no longer shown.]"
    text = f"[The customer attached an image ({attachment.width}×{attachment.height}) that you cannot see."
    # What OCR stored when the image was uploaded; prompt building never runs OCR itself.
    if attachment.ocr_status == Attachment.OcrStatus.READ and attachment.ocr_text:
        text += f" Text read from it by OCR:\n{attachment.ocr_text}\n"
    elif attachment.ocr_status == Attachment.OcrStatus.FAILED:
        text += " Its text could not be read."
    elif attachment.ocr_status == Attachment.OcrStatus.NOT_READ:
        text += " Its text has not been read yet."
    return text + "]"


def _data_url(attachment: Attachment) -> str:
    with attachment.image.open("rb") as image_file:
        encoded = base64.b64encode(image_file.read()).decode()
    return f"data:{attachment.content_type};base64,{encoded}"


def prompt_build(*, reply_id: int, reply: Message | None = None) -> ChatRequest:
    """The chat request for a reply: instructions, then as much recent history as the budget allows.

    `reply`, when the caller has already read it with its conversation (the generator's claim), is
    not read again.
    """
    if reply is None or reply.pk != reply_id:
        reply = selectors.reply_get_for_prompt(reply_id=reply_id)
    profile = active_profile()
    system = system_prompt(profile=profile, locale=reply.conversation.locale)
    budget = (
        settings.INFERENCE_CONTEXT_TOKENS
        - profile.max_tokens
        - estimate_tokens(system)
        - TOKENS_PER_MESSAGE_OVERHEAD
    )
    images_left = settings.INFERENCE_MAX_IMAGES_PER_PROMPT if settings.INFERENCE_VISION else 0
    history: list[dict[str, Any]] = []
    for message in selectors.prompt_history_list(reply=reply):
        allowance = images_left
        entry, cost, images_left = _message_entry(message, images_left=allowance)
        if entry is None:
            continue
        if cost > budget:
            if history:
                break
            # The newest customer message alone is over the budget: show it fewer of its images (the
            # others become placeholders) rather than none, then keep the most recent part of its text.
            while cost > budget and allowance > 0:
                allowance -= 1
                fewer, cost, images_left = _message_entry(message, images_left=allowance)
                entry = fewer or entry
            if cost > budget:
                entry = {"role": entry["role"], "content": _truncate_to_tokens(_entry_text(entry), budget)}
                cost = budget
        history.append(entry)
        budget -= cost
    history = _merge_adjacent_turns(list(reversed(history)))
    # Chat templates expect the first turn after the system message to be the user's.
    while history and history[0]["role"] == "assistant":
        history.pop(0)
    messages: list[dict[str, Any]]
    if settings.INFERENCE_SYSTEM_PROMPT_IN_USER_TURN and history:
        # Some templates (gemma) drop system messages: put the instructions into the first user turn.
        first = dict(history[0])
        first["content"] = _prepend_text(first["content"], f"{system}\n\n")
        messages = [first, *history[1:]]
    else:
        messages = [{"role": "system", "content": system}, *history]
    return ChatRequest(messages=messages, max_tokens=profile.max_tokens, temperature=profile.temperature)


def _message_entry(message: Message, *, images_left: int) -> tuple[dict[str, Any] | None, int, int]:
    """A history message as a chat entry, its estimated cost, and the image allowance left after it."""
    if message.role == Message.Role.CUSTOMER:
        attachments = list(message.attachments.all())
        if not attachments:
            text = message.text
            return (
                {"role": "user", "content": text},
                estimate_tokens(text) + TOKENS_PER_MESSAGE_OVERHEAD,
                images_left,
            )
        parts: list[dict[str, Any]] = []
        cost = TOKENS_PER_MESSAGE_OVERHEAD
        for attachment in attachments:  # in the order the customer sent them
            if images_left > 0:
                parts.append({"type": "image_url", "image_url": {"url": _data_url(attachment)}})
                cost += (attachment.width // 28 + 1) * (attachment.height // 28 + 1)
                images_left -= 1
            else:
                placeholder = _image_placeholder(attachment)
                parts.append({"type": "text", "text": placeholder})
                cost += estimate_tokens(placeholder)
        if message.text:
            parts.append({"type": "text", "text": message.text})
            cost += estimate_tokens(message.text)
        if all(part["type"] == "text" for part in parts):
            text = "\n".join(part["text"] for part in parts)
            return {"role": "user", "content": text}, cost, images_left
        return {"role": "user", "content": parts}, cost, images_left
    text = message.text.strip()
    if not text:
        return None, 0, images_left
    if message.role == Message.Role.AGENT:
        text = f"[A human agent wrote:] {text}"
    return (
        {"role": "assistant", "content": text},
        estimate_tokens(text) + TOKENS_PER_MESSAGE_OVERHEAD,
        images_left,
    )


def _merge_adjacent_turns(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join consecutive turns of one role: strict chat templates require user and assistant to alternate
    (two customer messages in a row, or a failed reply left out, would otherwise break that)."""
    merged: list[dict[str, Any]] = []
    for entry in history:
        if merged and merged[-1]["role"] == entry["role"]:
            previous = merged[-1]["content"]
            current = entry["content"]
            if isinstance(previous, str) and isinstance(current, str):
                merged[-1] = {"role": entry["role"], "content": f"{previous}\n\n{current}"}
            else:
                merged[-1] = {"role": entry["role"], "content": [*_as_parts(previous), *_as_parts(current)]}
        else:
            merged.append(entry)
    return merged


def _as_parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _entry_text(entry: dict[str, Any]) -> str:
    content = entry["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part["type"] == "text")


def _truncate_to_tokens(text: str, budget: int) -> str:
    while text and estimate_tokens(text) > budget:
        text = text[len(text) // 10 + 1 :]
    return text


def _prepend_text(content: str | list[dict[str, Any]], prefix: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return prefix + content
    return [{"type": "text", "text": prefix.strip()}, *content]
