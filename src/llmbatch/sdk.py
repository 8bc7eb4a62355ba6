"""The official SDKs' own types for what llmbatch recorded: a finished request becomes the
object the real-time call would have returned, or the exception it would have raised.

| the request ended                              | an awaited call gives                     |
|------------------------------------------------|-------------------------------------------|
| succeeded                                      | `ChatCompletion`, `CreateEmbeddingResponse`, `Response`, `Completion`, `ModerationCreateResponse`, `anthropic.types.Message` |
| failed with the provider's HTTP error          | the SDK's status error for that code (`openai.BadRequestError`, `anthropic.OverloadedError`, ...) |
| failed a batch's validation on its line        | the same, with the status the real-time API gives that fault (`model_not_found`: 404) |
| expired more often than the retry policy takes | `llmbatch.RequestExpired`                 |
| cancelled (itself, its batch, its queue)       | `llmbatch.RequestCancelled`               |
| held by a budget                               | `llmbatch.BudgetHeld`                     |
| failed for any other reason (too large, ...)   | `llmbatch.RequestFailed`                  |

Every error names the request (`custom_id`, also an attribute). Typed objects are validated
(fast) and, should a body not match the SDK's model, built leniently as the SDK itself does.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import Any, Final

import orjson

from llmbatch.errors import BudgetHeld, RequestCancelled, RequestExpired, RequestFailed
from llmbatch.providers import format_or_base
from llmbatch.store.types import ResultRow

# endpoint -> (module, class) of the SDK object a successful call returns
TYPES: Final = {
    "/v1/chat/completions": ("openai.types.chat", "ChatCompletion"),
    "/v1/embeddings": ("openai.types", "CreateEmbeddingResponse"),
    "/v1/responses": ("openai.types.responses", "Response"),
    "/v1/completions": ("openai.types", "Completion"),
    "/v1/moderations": ("openai.types", "ModerationCreateResponse"),
    "/v1/messages": ("anthropic.types", "Message"),
}
# Codes a batch's validation gives one line, and the status the real-time API answers the
# same fault with (Azure's names; PROVIDERS.md).
LINE_STATUS: Final = {
    "model_not_found": 404,
    "invalid_request": 400,
    "invalid_json_line": 400,
    "url_mismatch": 400,
    "model_mismatch": 400,
    "invalid_request_error": 400,
}


def typed(endpoint: str, body: bytes | Mapping[str, Any]) -> Any:
    """The SDK object for a successful response body of `endpoint`."""
    cls = _type(endpoint)
    data = orjson.loads(body) if isinstance(body, bytes | bytearray | memoryview) else body
    try:
        return cls.model_validate(data)
    except ValueError:  # pydantic's ValidationError: build it as the SDK does, leniently
        return cls.construct(**data)


@cache
def _type(endpoint: str) -> Any:
    module, name = TYPES[endpoint]
    return getattr(importlib.import_module(module), name)


def outcome(row: ResultRow, queue: str = "") -> Any:
    """What waiting on a finished request gives: the typed response, or the exception to
    raise (returned, not raised). `row.endpoint` says which SDK type."""
    cid = row.custom_id
    where = f"custom_id {cid!r}" + (f" (queue {queue!r})" if queue else "")
    if row.state == "succeeded" and row.body is not None:
        try:
            return typed(row.endpoint, row.body)
        except (orjson.JSONDecodeError, TypeError) as exc:
            return RequestFailed(
                f"{where}: its response body cannot be read as {TYPES[row.endpoint][1]}: {exc}",
                custom_id=cid,
                queue=queue,
                code="unreadable",
            )
    code, message = row.error_code, row.error_message or ""
    if row.state == "cancelled":
        return RequestCancelled(
            f"{where} was cancelled ({code or 'cancelled'}): {message}".rstrip(": "),
            custom_id=cid,
            queue=queue,
            code=code,
        )
    if row.state == "held":
        return BudgetHeld(
            f"{where} is held by a budget: {message or 'over budget'}; it stays queued and is "
            "sent when the budget allows (wait on it again then)",
            custom_id=cid,
            queue=queue,
            code="held",
        )
    if row.body is not None:
        status = status_code(row)
        if status is not None and status >= 400:
            return status_error(row.provider, row.endpoint, status, row.body, row, queue)
    if code in LINE_STATUS and format_or_base(row.provider).line_errors_have_status:
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "code": code,
                "param": None,
            }
        }
        return status_error(row.provider, row.endpoint, LINE_STATUS[code], body, row, queue)
    if code == "batch_expired":
        return RequestExpired(
            f"{where}: its batches expired at the provider more often than the retry policy "
            f"allows ({message})",
            custom_id=cid,
            queue=queue,
            code=code,
        )
    return RequestFailed(
        f"{where} failed: {code or 'failed'}: {message}".rstrip(": "),
        custom_id=cid,
        queue=queue,
        code=code,
    )


def status_error(
    provider: str,
    endpoint: str,
    status: int,
    body: bytes | Mapping[str, Any],
    row: ResultRow,
    queue: str,
) -> Exception:
    """The SDK's own status error (class by status code, as the SDK maps a real response),
    carrying the provider's error body and request id, its message naming the request."""
    fmt = format_or_base(provider)
    if fmt.sdk is None:  # no SDK to build its error with: ours, with the status said
        return RequestFailed(
            f"custom_id {row.custom_id!r} failed: HTTP {status}",
            custom_id=row.custom_id,
            queue=queue,
            code=row.error_code,
        )
    content = (
        bytes(body) if isinstance(body, bytes | bytearray | memoryview) else orjson.dumps(body)
    )
    try:
        data: Any = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = content.decode("utf-8", "replace")
    client, http = _client(fmt.sdk)
    headers = {"content-type": "application/json"}
    if row.provider_request_id:
        headers[fmt.request_id_header] = row.provider_request_id
    request = http.Request("POST", f"batch://{provider}{endpoint}")
    response = http.Response(status, headers=headers, content=content, request=request)
    where = f"custom_id {row.custom_id!r}" + (f" (queue {queue!r})" if queue else "")
    message = f"{where}: Error code: {status} - {data}"
    exc: Exception = client._make_status_error(message, body=data, response=response)
    if where not in str(exc):  # an SDK that writes its own message: name the request in it
        exc.args = (f"{where}: {exc}", *exc.args[1:])
        if isinstance(getattr(exc, "message", None), str):
            vars(exc)["message"] = exc.args[0]
    vars(exc)["custom_id"] = row.custom_id
    return exc


@cache
def _client(sdk: str) -> tuple[Any, Any]:
    """An SDK client (`sdk` is "module:ClientClass") that never sends anything (its
    status-error mapping is what we use) and the HTTP library the SDK builds its responses
    with (httpx, or its successor)."""
    name, _, cls = sdk.partition(":")
    module = importlib.import_module(name)
    errors = importlib.import_module(f"{name}._exceptions")
    http = next(v for k, v in vars(errors).items() if k in ("httpx2", "httpx"))
    client = getattr(module, cls)(api_key="unused")
    return client, http


def status_code(r: ResultRow) -> int | None:
    """The HTTP status of a result that has a provider body (export.py's module docstring says which)."""
    if r.status_code is not None:
        return r.status_code
    return format_or_base(r.provider).status_code(r.error_code)
