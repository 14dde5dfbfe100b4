"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with OpenAI's statuses.

The official clients read `type` and `code` to raise the right exception (AuthenticationError for
401, RateLimitError for 429, BadRequestError for 400), so callers' retry logic works unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse


class GatewayError(Exception):
    """A request the gateway answers with an error; the fields are what the caller is shown."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> HttpResponse:
        response = HttpResponse(
            json.dumps(self.body(), ensure_ascii=False), status=self.status, content_type="application/json"
        )
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


def bad_request(
    message: str, *, param: str | None = None, code: str = "invalid_request_error"
) -> GatewayError:
    return GatewayError(400, message, code=code, param=param)


def invalid_api_key(message: str) -> GatewayError:
    return GatewayError(401, message, code="invalid_api_key")


def rate_limit_exceeded(message: str, *, retry_after: int) -> GatewayError:
    return GatewayError(
        429, message, code="rate_limit_exceeded", error_type="requests", retry_after=retry_after
    )


def insufficient_quota(message: str) -> GatewayError:
    return GatewayError(429, message, code="insufficient_quota", error_type="insufficient_quota")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or this API key may not use it (GET /v1/models lists them).",
        code="model_not_found",
        param="model",
    )


# What each inference failure is to the caller: the widget's codes, as OpenAI-shaped server errors.
INFERENCE_STATUS = {
    "inference_timeout": 504,
    "inference_unavailable": 503,
    "inference_bad_response": 502,
    "inference_rejected": 400,
}


def inference_failed(code: str, message: str) -> GatewayError:
    status = INFERENCE_STATUS.get(code, 502)
    error_type = "invalid_request_error" if status == 400 else "server_error"
    return GatewayError(status, message, code=code, error_type=error_type)
