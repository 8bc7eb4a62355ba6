"""The one output format: OpenAI's batch output shape for every provider, and CSV text."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from llmbatch.export import csv_rows, jsonl_line, output_text, result_id
from llmbatch.store import ResultRow

STORE = "lb0123456789"
MESSAGE = {
    "id": "msg_01abc",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "x"},
        {"type": "text", "text": "Bon"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {}},
        {"type": "text", "text": "jour"},
    ],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 5, "output_tokens": 2},
}
ENVELOPE = {
    "type": "error",
    "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    "request_id": "req_011",
}
CHAT = {"object": "chat.completion", "choices": [{"message": {"content": "hello"}}]}
RESPONSES = {
    "object": "response",
    "output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "content": [{"type": "output_text", "text": "a"},
                                        {"type": "refusal", "refusal": "no"},
                                        {"type": "output_text", "text": "b"}]},
    ],
}  # fmt: skip


def row(cursor: int = 7, provider: str = "anthropic", **kw: Any) -> ResultRow:
    values: dict[str, Any] = {
        "cursor": cursor, "custom_id": "c/1 ü", "state": "succeeded", "provider": provider,
        "status_code": None, "provider_request_id": None, "body": None, "error_code": None,
        "error_message": None, "input_tokens": None, "output_tokens": None,
    }  # fmt: skip
    values.update(kw)
    return ResultRow(**values)


def test_a_succeeded_anthropic_result_in_the_openai_shape() -> None:
    r = row(status_code=200, provider_request_id="msg_01abc", body=orjson.dumps(MESSAGE))
    assert orjson.loads(jsonl_line(r, STORE)) == {
        "id": result_id(STORE, 0),
        "custom_id": "c/1 ü",
        "provider": "anthropic",
        "response": {"status_code": 200, "request_id": "msg_01abc", "body": MESSAGE},
        "error": None,
    }


def test_an_errored_anthropic_result_carries_its_whole_envelope() -> None:
    r = row(
        state="failed", provider_request_id="req_011", body=orjson.dumps(ENVELOPE),
        error_code="invalid_request_error", error_message="max_tokens: Field required (not retryable)",
    )  # fmt: skip
    line = orjson.loads(jsonl_line(r, STORE))
    assert line["response"] == {"status_code": 400, "request_id": "req_011", "body": ENVELOPE}
    assert line["error"] == {
        "code": "invalid_request_error",
        "message": "max_tokens: Field required (not retryable)",
    }
    overloaded = row(body=orjson.dumps(ENVELOPE), error_code="overloaded_error", error_message="x")
    assert orjson.loads(jsonl_line(overloaded, STORE))["response"]["status_code"] == 529


def test_an_unrun_request_has_no_response() -> None:
    r = row(state="failed", error_code="batch_expired", error_message="request expired")
    line = orjson.loads(jsonl_line(r, STORE))
    assert line["response"] is None
    assert line["error"] == {"code": "batch_expired", "message": "request expired"}


def test_an_openai_error_response_keeps_its_status_and_body() -> None:
    body = {"error": {"message": "bad", "type": "invalid_request_error", "code": None}}
    r = row(provider="openai", state="failed", status_code=400, provider_request_id="req_9",
            body=orjson.dumps(body), error_code="http_400", error_message="bad")  # fmt: skip
    line = orjson.loads(jsonl_line(r, STORE))
    assert line["provider"] == "openai" and line["response"]["status_code"] == 400
    assert line["response"]["body"] == body and line["error"]["code"] == "http_400"


def test_a_row_is_judged_by_its_own_outcome_not_its_request_state() -> None:
    # an earlier failure of a request that later succeeded stays a failure
    r = row(state="succeeded", body=orjson.dumps(ENVELOPE), error_code="api_error",
            error_message="boom")  # fmt: skip
    assert orjson.loads(jsonl_line(r, STORE))["error"]["code"] == "api_error"


def test_output_text_per_provider_and_endpoint() -> None:
    assert output_text("anthropic", MESSAGE) == "Bonjour"
    assert output_text("anthropic", {"content": []}) == ""
    assert output_text("openai", CHAT) == "hello"
    assert output_text("azure", {"choices": [{"message": {"content": None}}]}) == ""
    assert output_text("openai", {"choices": [{"text": "legacy"}]}) == "legacy"
    assert output_text("openai", RESPONSES) == "ab"
    assert output_text("openai", {"object": "list", "data": [{"embedding": [0.1]}]}) == ""


def test_csv_extracts_text_for_each_provider() -> None:
    rows = [
        row(1, body=orjson.dumps(MESSAGE), input_tokens=5, output_tokens=2),
        row(2, provider="openai", status_code=200, body=orjson.dumps(CHAT)),
        row(3, provider="openai", status_code=200, body=orjson.dumps(RESPONSES)),
        row(4, state="failed", body=orjson.dumps(ENVELOPE), error_code="invalid_request_error",
            error_message="max_tokens: Field required"),
    ]  # fmt: skip
    got = list(csv.reader(io.StringIO("".join(csv_rows(rows, STORE)))))
    assert [g[3] for g in got[1:]] == ["Bonjour", "hello", "ab", ""]
    assert got[1][2] == "200" and got[1][4:6] == ["5", "2"]
    assert got[4][2] == "400" and got[4][6] == "invalid_request_error"


def test_ids_look_like_openais_and_are_the_same_in_every_export_of_one_store() -> None:
    a, b = result_id(STORE, 42), result_id(STORE, 42)
    assert a == b and a.startswith("batch_req_") and len(a) == len("batch_req_") + 32
    assert all(c in "0123456789abcdef" for c in a.removeprefix("batch_req_"))
    assert result_id(STORE, 43) != a and result_id("lbother", 42) != a
    line = orjson.loads(jsonl_line(row(attempt_id=42, body=orjson.dumps(MESSAGE)), STORE))
    assert line["id"] == a


def test_a_cancelled_request_has_a_line_with_no_response() -> None:
    r = row(state="cancelled", error_code="cancelled", error_message="cancelled by llmbatch cancel")
    line = orjson.loads(jsonl_line(r, STORE))
    assert line["response"] is None
    assert line["error"] == {"code": "cancelled", "message": "cancelled by llmbatch cancel"}
    # a cancel decided after the provider answered with an error keeps that answer
    r = row(state="cancelled", body=orjson.dumps(ENVELOPE), error_code=None)
    line = orjson.loads(jsonl_line(r, STORE))
    assert line["response"]["body"] == ENVELOPE and line["error"]["code"] == "cancelled"


def test_csv_ends_with_the_envelope_id_and_the_provider() -> None:
    got = list(csv.reader(io.StringIO("".join(csv_rows([row(attempt_id=5)], STORE)))))
    assert got[0][-2:] == ["id", "provider"]
    assert got[1][-2:] == [result_id(STORE, 5), "anthropic"]
