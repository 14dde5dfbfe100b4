"""Why generation failed, as exceptions whose `code` the reply lifecycle saves and sends.

The customer's sentence for each code lives with the lifecycle, in `conversations.errors`.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Generation failed; `code` is what the client sees in `reply.error`."""

    code = "inference_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InferenceUnavailable(InferenceError):
    code = "inference_unavailable"


class InferenceTimeout(InferenceError):
    code = "inference_timeout"


class InferenceBadResponse(InferenceError):
    code = "inference_bad_response"


class InferenceRejected(InferenceError):
    """The server refused the request itself (a 4xx): retrying elsewhere would not help."""

    code = "inference_rejected"
