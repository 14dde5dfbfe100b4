"""What the conversations app refuses, and why a reply failed, in words for the customer.

The reply error codes belong to the reply lifecycle (the sweeper's `worker_lost` as much as the
inference server's faults), so their sentences live here, beside the lifecycle, not in `inference`.
"""

from __future__ import annotations

__all__ = ["REPLY_ERROR_CODES", "ServiceError", "customer_error_detail"]


class ServiceError(Exception):
    """A request the service refuses, with a code for the client and a readable detail."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


CUSTOMER_ERROR_DETAILS: dict[str, dict[str, str]] = {
    "inference_unavailable": {
        "en": "The assistant is unavailable right now. Please try again in a moment, or ask for a person.",
        "zh-Hans": "智能助手暂时无法使用，请稍后重试，或转接人工客服。",
    },
    "inference_timeout": {
        "en": "The assistant took too long to answer. Please try again, or ask for a person.",
        "zh-Hans": "智能助手响应超时，请重试，或转接人工客服。",
    },
    "inference_bad_response": {
        "en": "The assistant sent an answer we could not read. Please try again, or ask for a person.",
        "zh-Hans": "智能助手的回复无法识别，请重试，或转接人工客服。",
    },
    "inference_rejected": {
        "en": "The assistant could not handle this message. Please rephrase it, or ask for a person.",
        "zh-Hans": "智能助手无法处理这条消息，请换个说法，或转接人工客服。",
    },
    "worker_lost": {
        "en": "The assistant stopped while answering. Please try again, or ask for a person.",
        "zh-Hans": "智能助手在回复过程中中断了，请重试，或转接人工客服。",
    },
    "inference_error": {
        "en": "Something went wrong while answering. Please try again, or ask for a person.",
        "zh-Hans": "回复时出现问题，请重试，或转接人工客服。",
    },
}

# Every code a `reply.error` frame can carry (README, "Error codes").
REPLY_ERROR_CODES = frozenset(CUSTOMER_ERROR_DETAILS)


def customer_error_detail(code: str, locale: str) -> str:
    """A sentence for the customer about a failed reply, in the conversation's language."""
    details = CUSTOMER_ERROR_DETAILS.get(code, CUSTOMER_ERROR_DETAILS["inference_error"])
    return details["zh-Hans" if locale == "zh-Hans" else "en"]
