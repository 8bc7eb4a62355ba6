"""SDK errors to llmbatch's, for every provider on a Stainless-generated SDK (`openai`,
`anthropic`): both raise the same exception classes, so one mapping serves them all.

| what the SDK raised                                                  | ours            |
|----------------------------------------------------------------------|-----------------|
| 401/403, `authentication_error`, `permission_error`                  | AuthError: stop |
| 429, `rate_limit_error`; 5xx, 529, `overloaded_error`, `api_error`;  | TransientError  |
| 408/409 unless `x-should-retry: false`; no connection, a timeout, a  | (retry-after    |
| connection broken mid-body; a 200 that is not JSON (an HTML page)    | kept)           |
| any other 4xx (`invalid_request_error`, `not_found_error`, ...)      | RejectedError   |

Every message raised from here is scrubbed of the key in use (and of a password in the
service's URL): a gateway that echoes the key in its error body (a 400 saying "invalid key
sk-...") must not put it in the database, a log line or the terminal.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import orjson

from llmbatch.errors import AuthError, ProviderError, RejectedError, TransientError

RETRY_STATUS = frozenset({408, 409})  # retried unless the service says x-should-retry: false
RETRY_TYPES = frozenset({"rate_limit_error", "overloaded_error", "api_error"})
AUTH_TYPES = frozenset({"authentication_error", "permission_error"})


def transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP library's transport errors (httpx2 in newer SDKs, httpx in older ones),
    of those already imported: read when an error is matched, and an error of a library
    that was never imported cannot have been raised. Importing both up front cost every
    sending process the one its SDK does not use (~0.1 CPU s, issue 23).

    The SDK wraps errors of making a request, but not those raised while a streamed body is
    read: a connection that dies mid-download surfaces as the library's own error."""
    return tuple(
        m.TransportError for name in ("httpx2", "httpx") if (m := sys.modules.get(name)) is not None
    )


def scrub(text: str, key_env: str) -> str:
    """`text` without the key held in `key_env`, nor a password written in a URL."""
    key = os.environ.get(key_env, "").strip()
    if len(key) >= 4:  # a shorter "key" would blank ordinary words
        text = text.replace(key, "***")
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


@contextmanager
def calling(
    sdk: ModuleType, provider: str, what: str, where: Callable[[], str], key_env: str
) -> Iterator[None]:
    """Translate `sdk`'s errors raised inside the block into ours, naming the call (`what`)
    and the service (`where()`, called only on an error), never the key."""
    try:
        with _mapped(sdk, provider, what, where, key_env):
            yield
    except ProviderError as exc:
        exc.args = (scrub(str(exc), key_env), *exc.args[1:])
        raise


@contextmanager
def _mapped(
    sdk: ModuleType, provider: str, what: str, where: Callable[[], str], key_env: str
) -> Iterator[None]:
    try:
        yield
    except (sdk.AuthenticationError, sdk.PermissionDeniedError) as exc:
        raise AuthError(
            f"{provider}: {what} refused at {where()} (HTTP {exc.status_code}): check the key in "
            f"${key_env} and its permissions"
        ) from None
    except sdk.RateLimitError as exc:
        raise TransientError(
            f"{provider}: {what}: rate limited (HTTP 429)", retry_after(exc.response)
        ) from None
    except (sdk.APIConnectionError, sdk.APITimeoutError) as exc:
        raise TransientError(
            f"{provider}: {what}: cannot reach {where()}: {type(exc).__name__}"
        ) from None
    except AttributeError as exc:
        # Where the SDK expects JSON but gets a page (an HTML 200 from a proxy or a login
        # portal), it hands back the text, and the first attribute read fails.
        if "'str' object" not in str(exc):
            raise
        raise TransientError(
            f"{provider}: {what}: {where()} answered with a page that is not JSON (a proxy or "
            "a login portal in the way?)"
        ) from None
    except transport_errors() as exc:
        raise TransientError(
            f"{provider}: {what}: the connection to {where()} broke mid-response: "
            f"{type(exc).__name__}"
        ) from None
    except sdk.APIStatusError as exc:
        kind = error_type(exc.body)
        if kind in AUTH_TYPES:
            raise AuthError(
                f"{provider}: {what} refused at {where()} (HTTP {exc.status_code}, {kind}): "
                f"check the key in ${key_env} and its permissions"
            ) from None
        if (
            exc.status_code >= 500
            or kind in RETRY_TYPES
            or (exc.status_code in RETRY_STATUS and should_retry(exc.response))
        ):
            raise TransientError(
                f"{provider}: {what}: HTTP {exc.status_code}{f' {kind}' if kind else ''} "
                f"from {where()}",
                retry_after(exc.response),
            ) from None
        raise RejectedError(
            f"{provider}: {what}: HTTP {exc.status_code}: {message(exc.body, exc)}"
        ) from None


def _error(body: object) -> dict[str, Any]:
    """The error object of a body: OpenAI's SDK hands over `error`, Anthropic's the envelope."""
    if not isinstance(body, dict):
        return {}
    err = body.get("error", body)
    return err if isinstance(err, dict) else {}


def error_type(body: object) -> str | None:
    kind = _error(body).get("type")
    return str(kind) if kind else None


def message(body: object, exc: Exception) -> str:
    err = _error(body)
    if err.get("message"):
        return str(err["message"])[:500]
    return orjson.dumps(body).decode()[:500] if body is not None else exc.__class__.__name__


def retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                return None
    return None


def should_retry(response: Any) -> bool:
    headers = getattr(response, "headers", None) or {}
    return str(headers.get("x-should-retry", "true")).lower() != "false"
