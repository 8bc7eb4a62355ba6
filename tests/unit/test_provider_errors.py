"""The one SDK-error mapping (providers/errors.py) both SDKs go through: the issue's retry
policy by HTTP status and by error type, retry-after kept, the key never named."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from llmbatch.errors import AuthError, RejectedError, TransientError
from llmbatch.providers.errors import calling

SDKS = [anthropic, openai]


def status_error(
    sdk: ModuleType, status: int, kind: str | None, headers: dict[str, str] | None = None
) -> Any:
    """The exception the SDK raises for this answer (its own class for the status)."""
    request = httpx2.Request("POST", "http://service.test/v1/batches")
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": f"m {kind}"}}
    response = httpx2.Response(status, request=request, headers=headers or {}, json=body)
    client = (
        anthropic.Anthropic(api_key="k", base_url="http://service.test")
        if sdk is anthropic
        else openai.OpenAI(api_key="k", base_url="http://service.test")
    )
    payload = body if sdk is anthropic else body["error"]  # what each SDK hands over
    return client._make_status_error(f"HTTP {status}", body=payload, response=response)


def mapped(sdk: ModuleType, exc: Exception) -> Exception:
    with (
        pytest.raises(Exception) as info,
        calling(sdk, "p", "create", lambda: "http://service.test", "KEY_ENV"),
    ):
        raise exc
    return info.value


@pytest.mark.parametrize("sdk", SDKS, ids=lambda m: m.__name__)
@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (429, "rate_limit_error", TransientError),
        (529, "overloaded_error", TransientError),
        (503, "overloaded_error", TransientError),
        (500, "api_error", TransientError),
        (400, "invalid_request_error", RejectedError),
        (404, "not_found_error", RejectedError),
        (401, "authentication_error", AuthError),
        (403, "permission_error", AuthError),
        (409, None, TransientError),
        (418, "api_error", TransientError),  # the type decides when the status says nothing
        (400, "authentication_error", AuthError),
    ],
)
def test_policy(sdk: ModuleType, status: int, kind: str | None, expected: type[Exception]) -> None:
    err = mapped(sdk, status_error(sdk, status, kind))
    assert type(err) is expected
    assert "KEY_ENV" in str(err) if expected is AuthError else "create" in str(err)


@pytest.mark.parametrize("sdk", SDKS, ids=lambda m: m.__name__)
def test_retry_after_is_kept_and_should_retry_false_is_final(sdk: ModuleType) -> None:
    err = mapped(sdk, status_error(sdk, 429, "rate_limit_error", {"retry-after": "7"}))
    assert isinstance(err, TransientError) and err.retry_after == 7.0
    err = mapped(sdk, status_error(sdk, 409, None, {"x-should-retry": "false"}))
    assert isinstance(err, RejectedError)


def test_a_rejection_carries_the_service_message() -> None:
    err = mapped(anthropic, status_error(anthropic, 400, "invalid_request_error"))
    assert "m invalid_request_error" in str(err)


@pytest.mark.parametrize("sdk", SDKS)
def test_a_key_echoed_in_any_error_body_is_scrubbed(
    sdk: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway that echoes the key in a 400 body (not only a 401): the message keeps what
    it says, without the key; a password in the service's URL is blanked too."""
    key = "sk-echoed-secret-123456"
    monkeypatch.setenv("KEY_ENV", key)
    request = httpx2.Request("POST", "http://service.test/v1/files")
    said = f"invalid header Authorization: Bearer {key}"
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": said},
    }
    response = httpx2.Response(400, request=request, json=body)
    client = (
        anthropic.Anthropic(api_key="k", base_url="http://service.test")
        if sdk is anthropic
        else openai.OpenAI(api_key="k", base_url="http://service.test")
    )
    exc = client._make_status_error(
        "HTTP 400", body=body if sdk is anthropic else body["error"], response=response
    )
    with (
        pytest.raises(RejectedError) as info,
        calling(sdk, "p", "upload", lambda: "http://u:pw@service.test", "KEY_ENV"),
    ):
        raise exc
    assert key not in str(info.value) and "Bearer ***" in str(info.value)
    with (
        pytest.raises(TransientError) as down,
        calling(sdk, "p", "upload", lambda: "http://u:pw@service.test", "KEY_ENV"),
    ):
        raise client._make_status_error(
            "HTTP 503", body=None, response=httpx2.Response(503, request=request)
        )
    assert "pw" not in str(down.value) and "http://u:***@service.test" in str(down.value)
