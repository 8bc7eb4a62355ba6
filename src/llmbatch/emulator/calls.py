"""What happens around every API call: the key check, Azure's `api-version`, injected
faults, and the call log (method, path, query, status, SHA-256 of the body — never a
header, and never a `key` query parameter, so never a key — when the call arrived and when
it was answered, and the id of the file or batch a create made, even when its answer was a
fault: the ground truth a harness judges double creates by, after the files are deleted)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from llmbatch.emulator.envelope import (
    AnthropicApiError,
    ApiError,
    GoogleApiError,
    anthropic_error_type,
    google_status,
)
from llmbatch.emulator.faults import REWRITES, Rule
from llmbatch.emulator.surfaces import Flavor

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator


@dataclass(frozen=True)
class Surface:
    """One door into the API: a flavour, whether it is Azure's legacy
    (`api-version`-required) door, and whether its calls carry no key (Gemini's upload URL
    is itself the credential)."""

    flavor: Flavor
    legacy: bool = False
    keyless: bool = False


Handler = Callable[[Request, "Emulator", Surface], Awaitable[Response]]


class ConnectionDropped(Exception):
    """Raised mid-response to make the server cut the connection (the `drop` fault)."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def quiet_drop_logs() -> None:
    """Keep uvicorn from printing a traceback for every deliberately dropped connection."""
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class DroppingResponse(Response):
    """Sends the headers and about half of `inner`'s body, then drops the connection."""

    def __init__(self, inner: Response) -> None:
        self.inner = inner
        self.status_code = inner.status_code
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent, limit = 0, 0

        async def cut(message: Message) -> None:
            nonlocal sent, limit
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                limit = max(1, int(headers.get(b"content-length", b"2")) // 2)
                await send(message)
                return
            body = message.get("body", b"")
            if sent + len(body) >= limit:
                await send(
                    {"type": "http.response.body", "body": body[: limit - sent], "more_body": True}
                )
                raise ConnectionDropped("connection dropped by an emulator fault")
            sent += len(body)
            await send(message)

        await self.inner(scope, receive, cut)


_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_MISSING_AZURE_KEY = (
    "Access denied due to missing subscription key. Make sure to include the key in the "
    "'api-key' header (or an 'Authorization: Bearer' token)."
)


def _check_access(request: Request, surface: Surface) -> None:
    if surface.keyless:
        return
    if surface.flavor.gemini:
        key = request.headers.get("x-goog-api-key", "") or request.query_params.get("key", "")
        if not key.strip():
            raise GoogleApiError(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        return
    auth = request.headers.get("authorization", "")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if surface.flavor.anthropic:
        # `x-api-key` is the documented header; SDK 2.x sends the key as a Bearer token.
        if not (request.headers.get("x-api-key", "").strip() or bearer):
            raise AnthropicApiError(
                401, "x-api-key header is required", "authentication_error", retryable=False
            )
        if not request.headers.get("anthropic-version"):
            raise AnthropicApiError(400, "anthropic-version: header is required", retryable=False)
        return
    if surface.flavor.azure:
        if not (request.headers.get("api-key", "").strip() or bearer):
            raise ApiError(401, _MISSING_AZURE_KEY, code="401", retryable=False)
        if surface.legacy and not request.query_params.get("api-version"):
            raise ApiError(
                404,
                "Resource not found: legacy Azure OpenAI routes need an 'api-version' query "
                "parameter (e.g. ?api-version=2024-10-21).",
                code="404",
                retryable=False,
            )
    elif not bearer:
        raise ApiError(401, _MISSING_KEY, retryable=False)


def _anthropic_fault(rule: Rule) -> Response:
    status = rule.status
    messages = {
        401: "invalid x-api-key",
        429: "Number of requests has exceeded your rate limit. Please try again later.",
        503: "Overloaded",
        529: "Overloaded",
    }
    headers = {"retry-after": f"{rule.retry_after:g}"} if status == 429 else None
    return AnthropicApiError(
        status,
        messages.get(status, "Internal server error"),
        anthropic_error_type(status),
        retryable=status != 401,
        headers=headers,
    ).response()


_HTML_PAGES = {
    502: b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n",
    200: b"<!DOCTYPE html><html><head><title>Sign in to continue</title></head>"
    b"<body><form action='/login'><input name='user'></form></body></html>\n",
}


def _google_fault(rule: Rule) -> Response:
    status = rule.status
    if status == 401:  # Google answers a wrong or revoked API key with a 400
        return GoogleApiError(
            400,
            "API key not valid. Please pass a valid API key.",
            details=[
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            ],
        ).response()
    messages = {
        429: "Resource has been exhausted (e.g. check quota).",
        500: "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        503: "The model is overloaded. Please try again later.",
    }
    details = None
    if status == 429:
        retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo"}
        details = [retry | {"retryDelay": f"{rule.retry_after:g}s"}]
    return GoogleApiError(
        status,
        messages.get(status, "The service is currently unavailable."),
        google_status(status) if status != 502 else "UNAVAILABLE",
        details=details,
    ).response()


def _fault_response(rule: Rule, flavor: str) -> Response:
    if rule.kind.endswith("_html"):  # not the API answering, but something in front of it
        return Response(_HTML_PAGES[rule.status], rule.status, media_type="text/html")
    if flavor == "anthropic":
        return _anthropic_fault(rule)
    if flavor == "gemini":
        return _google_fault(rule)
    if rule.status == 401:
        return ApiError(
            401,
            "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
            retryable=False,
        ).response()
    if rule.status == 429:
        return ApiError(
            429,
            "Rate limit reached for requests. Please try again later.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": f"{rule.retry_after:g}"},
        ).response()
    messages = {
        500: "The server had an error while processing your request.",
        502: "Bad gateway.",
        503: "The engine is currently overloaded, please try again later.",
        529: "The engine is currently overloaded, please try again later.",
    }
    return ApiError(
        rule.status, messages.get(rule.status, "Server error."), type="server_error"
    ).response()


def operation(
    emu: Emulator, name: str, surface: Surface, handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler into a Starlette endpoint that applies access checks, faults and the
    call log."""
    flavor = surface.flavor.name

    async def endpoint(request: Request) -> Response:
        emu.start()
        started = emu.now()
        request.state.body_sha256 = None
        request.state.made = None
        response = await _run(request)
        emu.state.log_call(
            emu.now(),
            request.method,
            request.url.path,
            _without_key(request.url.query),
            response.status_code,
            request.state.body_sha256,
            started=started,
            made=request.state.made,
        )
        return response

    async def _run(request: Request) -> Response:
        try:
            _check_access(request, surface)
            if request.method in ("POST", "PUT", "PATCH") and not request.headers.get(
                "content-type", ""
            ).startswith("multipart/"):
                body = await request.body()
                request.state.body_sha256 = hashlib.sha256(body).hexdigest()
            rule = emu.faults.pick(name, flavor)
            if rule is not None:
                emu.save_faults()
            if rule is not None and rule.delay_before:
                await asyncio.sleep(rule.delay_before)  # slow before acting, whatever follows
            if rule is not None and rule.kind == "latency" and rule.mode == "before":
                await asyncio.sleep(rule.seconds)
            if rule is not None and rule.kind == "drop" and request.method == "GET":
                rule = Rule(rule.op, rule.kind, "after")  # a read has no side effect to skip
            if rule is not None and rule.mode == "before" and rule.kind != "latency":
                if rule.kind == "drop":
                    return DroppingResponse(
                        Response(
                            b'{"error": {"message": "dropped"}}' * 4,
                            200,
                            media_type="application/json",
                        )
                    )
                return _fault_response(rule, flavor)
            response = await handler(request, emu, surface)
            if request.method == "POST" and name in MAKERS:
                request.state.made = _made(response)
        except ApiError as e:
            return e.response()
        if rule is not None and rule.mode == "after":
            if rule.kind == "latency":
                await asyncio.sleep(rule.seconds)
            elif rule.kind == "drop":
                return DroppingResponse(response)
            elif rule.kind in REWRITES:
                return await _rewrite(rule.kind, response)
            else:
                return _fault_response(rule, flavor)
        return response

    return endpoint


#: Operations whose success creates a file or a batch (the call log's `made`).
MAKERS = frozenset(
    {"files.create", "batches.create", "messages.batches.create", "batches.create_embeddings"}
)


def _made(response: Response) -> str | None:
    """The id (Gemini: the name) of what a successful create answered with."""
    if response.status_code >= 300 or not isinstance(response.body, bytes | memoryview):
        return None
    try:
        obj = orjson.loads(bytes(response.body))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    made = obj.get("id") or obj.get("name")
    return made if isinstance(made, str) else None


def _without_key(query: str) -> str:
    """The query to log: a `key` parameter (Gemini's other way to send the API key) is
    dropped."""
    if "key=" not in query:
        return query
    return "&".join(p for p in query.split("&") if p.split("=", 1)[0] != "key")


async def _body_of(response: Response) -> bytes:
    if isinstance(response, FileResponse):
        return await asyncio.to_thread(Path(response.path).read_bytes)
    if isinstance(response, StreamingResponse):
        parts = [p async for p in response.body_iterator]
        return b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in parts)
    return bytes(response.body)


async def _rewrite(kind: str, response: Response) -> Response:
    """The operation's real answer, made wrong in shape by a rewriting fault (faults.py)."""
    if response.status_code != 200:
        return response
    body = await _body_of(response)
    if kind == "no_output_file":
        obj = orjson.loads(body)
        for batch in obj.get("data", []) if obj.get("object") == "list" else [obj]:
            if isinstance(batch, dict) and "output_file_id" in batch:
                batch["output_file_id"] = batch["error_file_id"] = None
        for op in obj.get("operations", [obj]):  # Gemini: an Operation, or a page of them
            if isinstance(op, dict) and isinstance(op.get("metadata"), dict):
                op["metadata"].pop("output", None)
                op.pop("response", None)
        body = orjson.dumps(obj)
    elif kind == "truncate":
        body = body[: len(body) // 2]
    elif body.strip():
        body = _rewrite_lines(kind, body.splitlines(keepends=True))
    return Response(body, 200, media_type=response.media_type)


def _rewrite_lines(kind: str, lines: list[bytes]) -> bytes:
    """Keep the file's size where the change allows it, so a client's size check passes and
    it is the lines themselves that are wrong."""
    first = lines[0].rstrip(b"\r\n")
    ending = lines[0][len(first) :]
    if kind == "garble_line":
        lines[0] = b"#" * len(first) + ending
    elif kind == "foreign_line":  # another app's id, as long as ours
        obj = orjson.loads(first)
        custom_id = str(obj["custom_id"] if "custom_id" in obj else obj["key"])  # Gemini: key
        lines[0] = first.replace(custom_id.encode(), b"z" * len(custom_id.encode())) + ending
    elif len(lines) > 1:  # duplicate_line: the longest line becomes the shortest, padded
        size = [len(ln.rstrip(b"\r\n")) for ln in lines]
        short = min(range(len(lines)), key=size.__getitem__)
        long = max((i for i in range(len(lines)) if i != short), key=size.__getitem__)
        copy = lines[short].rstrip(b"\r\n") + b" " * (size[long] - size[short])
        lines[long] = copy + lines[long][size[long] :]
    return b"".join(lines)
