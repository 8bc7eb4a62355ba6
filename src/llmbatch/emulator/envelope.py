"""The OpenAI error envelope and JSON responses, shared by every route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from starlette.responses import FileResponse, Response


class RequestError(Exception):
    """A request body its endpoint rejects: HTTP `status` (400) in real time, an error-file
    line in a batch; `param` and `code` as the service names them."""

    def __init__(
        self, message: str, param: str | None = None, code: str | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


class ApiError(Exception):
    """An error answered as `{"error": {message, type, param, code}}`.

    `retryable=False` adds `x-should-retry: false`, which stops the official SDKs from
    retrying an error a retry cannot fix (they retry 409 and 5xx by default)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retryable: bool | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, dict(headers or {})
        self.retryable = status >= 500 or status in (408, 429) if retryable is None else retryable

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> Response:
        headers = dict(self.headers)
        if not self.retryable:
            headers["x-should-retry"] = "false"
        return json_response(self.body(), self.status, headers)


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code, retryable=False)


def not_found(message: str) -> ApiError:
    return ApiError(404, message, retryable=False)


class AnthropicApiError(ApiError):
    """An error answered in Anthropic's envelope:
    `{"type": "error", "error": {"type", "message"}, "request_id"}`."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        *,
        retryable: bool | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, type=type, retryable=retryable, headers=headers)

    def body(self) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": self.type, "message": self.message},
            "request_id": "req_emulator",
        }


def anthropic_error_type(status: int) -> str:
    """The Anthropic error type the service pairs with an HTTP status."""
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        503: "overloaded_error",
        529: "overloaded_error",
    }.get(status, "api_error" if status >= 500 else "invalid_request_error")


class GoogleApiError(ApiError):
    """An error answered in Google's envelope: `{"error": {"code", "message", "status"}}`
    (plus `details` when given, such as a RetryInfo or an ErrorInfo)."""

    def __init__(
        self,
        status: int,
        message: str,
        grpc_status: str | None = None,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, type=grpc_status or google_status(status))
        self.headers = dict(headers or {})
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.status, "message": self.message, "status": self.type}
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def response(self) -> Response:
        return json_response(self.body(), self.status, self.headers)


def google_status(status: int) -> str:
    """The gRPC status name Google pairs with an HTTP status."""
    return {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ALREADY_EXISTS",
        429: "RESOURCE_EXHAUSTED",
        499: "CANCELLED",
        500: "INTERNAL",
        501: "NOT_IMPLEMENTED",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }.get(status, "UNAVAILABLE" if status >= 500 else "FAILED_PRECONDITION")


class _ContentFile(FileResponse):
    """A file's content in 1 MB pieces, not starlette's 64 KB: each piece is read on a
    worker thread, and result files run to tens of MB."""

    chunk_size = 1 << 20


def file_response(path: Path, media_type: str | None) -> FileResponse:
    """A stored file's content as a download."""
    return _ContentFile(path, media_type=media_type, stat_result=path.stat())
