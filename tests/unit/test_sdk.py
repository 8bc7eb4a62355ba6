"""sdk.py: a recorded outcome becomes the SDK's own object or error, naming the request."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anthropic
import openai
import orjson
import pytest
from anthropic.types import Message
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from helpers import chat_response
from llmbatch import BudgetHeld, RequestCancelled, RequestExpired, RequestFailed
from llmbatch.sdk import outcome
from llmbatch.store import ResultRow

OK = ResultRow(
    cursor=1, custom_id="c1", state="succeeded", provider="openai", status_code=200,
    provider_request_id="req_9", body=orjson.dumps(chat_response("hi")), error_code=None,
    error_message=None, input_tokens=12, output_tokens=3, model="gpt-4o-mini",
    endpoint="/v1/chat/completions",
)  # fmt: skip
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
           "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
           "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1}}  # fmt: skip
EMBEDDING = {"object": "list", "model": "text-embedding-3-small",
             "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
             "usage": {"prompt_tokens": 1, "total_tokens": 1}}  # fmt: skip
RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-4o-mini",
            "status": "completed", "output": [], "parallel_tool_calls": True, "tools": [],
            "tool_choice": "auto"}  # fmt: skip


def failed(**fields: Any) -> ResultRow:
    values: dict[str, Any] = {"state": "failed", "status_code": None, "body": None, **fields}
    return replace(OK, **values)


@pytest.mark.parametrize(
    ("endpoint", "provider", "body", "kind"),
    [
        ("/v1/chat/completions", "openai", chat_response("hi"), ChatCompletion),
        ("/v1/embeddings", "openai", EMBEDDING, CreateEmbeddingResponse),
        ("/v1/responses", "azure", RESPONSE, Response),
        ("/v1/messages", "anthropic", MESSAGE, Message),
    ],
)
def test_a_success_is_the_sdks_own_typed_object(
    endpoint: str, provider: str, body: dict[str, Any], kind: type
) -> None:
    got = outcome(replace(OK, endpoint=endpoint, provider=provider, body=orjson.dumps(body)))
    assert isinstance(got, kind)


def test_a_body_the_sdk_model_refuses_is_built_leniently_as_the_sdk_does() -> None:
    odd = {**chat_response("hi"), "choices": [{"index": 0, "message": {"role": "assistant",
           "content": "hi"}, "finish_reason": "not-a-reason"}], "extra_field": 1}  # fmt: skip
    got = outcome(replace(OK, body=orjson.dumps(odd)))
    assert isinstance(got, ChatCompletion)
    assert got.choices[0].message.content == "hi"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
def test_an_http_error_is_the_openai_sdks_status_error(status: int, kind: type[Any]) -> None:
    error = {"error": {"message": "bad things", "type": "invalid_request_error", "code": "x1",
                       "param": "messages"}}  # fmt: skip
    row = failed(status_code=status, body=orjson.dumps(error), error_code="x1",
                 provider_request_id="req_7")  # fmt: skip
    exc: Any = outcome(row, "tagging")
    assert type(exc) is kind
    assert exc.status_code == status and exc.request_id == "req_7"
    assert exc.code == "x1" and exc.param == "messages"
    assert "custom_id 'c1' (queue 'tagging')" in str(exc)
    assert exc.custom_id == "c1"


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("invalid_request_error", anthropic.BadRequestError),
        ("not_found_error", anthropic.NotFoundError),
        ("rate_limit_error", anthropic.RateLimitError),
        ("overloaded_error", anthropic.OverloadedError),
    ],
)
def test_an_errored_anthropic_result_is_the_anthropic_sdks_status_error(
    error_type: str, kind: type[Any]
) -> None:
    envelope = {"type": "error", "error": {"type": error_type, "message": "no"},
                "request_id": "req_a"}  # fmt: skip
    row = failed(provider="anthropic", endpoint="/v1/messages", body=orjson.dumps(envelope),
                 error_code=error_type, provider_request_id="req_a")  # fmt: skip
    exc: Any = outcome(row, "q")
    assert type(exc) is kind
    assert "custom_id 'c1'" in str(exc) and exc.request_id == "req_a"


def test_a_line_failed_at_validation_is_the_status_the_real_time_api_gives() -> None:
    exc: Any = outcome(failed(error_code="model_not_found", error_message="no model 'gpt-9'"))
    assert type(exc) is openai.NotFoundError
    assert exc.code == "model_not_found" and "no model 'gpt-9'" in str(exc)


@pytest.mark.parametrize(
    ("row", "kind", "words"),
    [
        (failed(state="cancelled", error_code="cancelled", error_message="by llmbatch cancel"),
         RequestCancelled, "was cancelled"),
        (failed(error_code="batch_expired", error_message="batch expired"), RequestExpired,
         "expired"),
        (failed(state="held", error_code="held", error_message="budget 1.00 USD"), BudgetHeld,
         "held by a budget: budget 1.00 USD"),
        (failed(error_code="too_large", error_message="no batch holds it"), RequestFailed,
         "too_large"),
    ],
)  # fmt: skip
def test_batch_level_outcomes_are_llmbatchs_errors_naming_the_request(
    row: ResultRow, kind: type[Any], words: str
) -> None:
    exc: Any = outcome(row, "q")
    assert type(exc) is kind
    assert words in str(exc) and "custom_id 'c1' (queue 'q')" in str(exc)
    assert (exc.custom_id, exc.queue) == ("c1", "q")
