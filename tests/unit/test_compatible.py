"""The OpenAI-compatible kind without a network: a service table read and checked, the
dialects of batch objects read alike, the service's line shape and limits at the door."""

from __future__ import annotations

from typing import Any

import pytest

from llmbatch.errors import ConfigError
from llmbatch.providers import describe, format_of, names
from llmbatch.providers.compatible import SHIPPED, service_of
from llmbatch.providers.compatible_transport import read_batch
from llmbatch.providers.configure import check_table
from llmbatch.requests import LineError, parse_obj


def test_the_shipped_services_are_registered_and_say_what_is_unconfirmed() -> None:
    assert {"groq", "together", "cerebras"} <= set(names())
    for name, service in SHIPPED.items():
        assert service.sources, name
        assert format_of(name).endpoints == frozenset(service.endpoints)
    assert describe("groq")["settings"]["base_url"] == "https://api.groq.com/openai/v1"
    assert describe("cerebras")["settings"]["min_requests"] == 10
    assert any("max_line_bytes" in fact for fact in describe("cerebras")["unconfirmed"])


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "groq",
            {"completion_window": "8d"},
            "completion_window '8d' is not one Groq takes (24h to 7d)",
        ),
        ("together", {"completion_window": "48h"}, "is not one Together AI takes (24h)"),
        (
            "groq",
            {"max_requests": 60_000},
            "max_requests = 60,000 is past what Groq takes (50,000)",
        ),
        ("cerebras", {"min_requests": 0}, "min_requests (0) must be between 1 and max_requests"),
        ("groq", {"line_shape": "csv"}, "line_shape 'csv' is not known"),
        ("groq", {"endpoints": ["/v1/files"]}, "'/v1/files' is not an endpoint llmbatch batches"),
        ("groq", {"output_expires_after": 60}, "outside 3600-2592000 seconds"),
        ("vllm", {"kind": "openai-compatible"}, "[providers.vllm] base_url is required"),
        ("groq", {"kind": "gemini"}, "kind 'gemini' is not known"),
    ],
)
def test_a_table_the_service_cannot_take_is_one_line(
    name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        service_of(name, options)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"[providers.{name}]")


def test_an_unknown_difference_is_refused_by_the_settings_check() -> None:
    with pytest.raises(ConfigError, match=r"\[providers.groq\] has no setting 'max_lines'"):
        check_table("groq", {"max_lines": 5})
    with pytest.raises(ConfigError, match="must be an integer"):
        check_table("groq", {"max_requests": "many"})


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "b1", "status": "in_progress", "created_at": 1_700_000_000, "model": "m",
         "request_counts": {"total": 4, "completed": 1, "failed": 0}},
        {"job": {"id": "b1", "status": "IN_PROGRESS", "created_at": "2023-11-14T22:13:20Z",
                 "model_id": "m", "request_counts": {"total": 4, "completed": 1, "failed": 0}},
         "warning": None},
        {"id": "b1", "status": "PROGRESS", "created_at": 1_700_000_000.0, "model": "m",
         "request_counts": {"total": 4, "completed": 1, "failed": 0}},
    ],
)  # fmt: skip
def test_every_dialect_of_a_batch_reads_alike(obj: dict[str, Any]) -> None:
    got = read_batch(obj)
    assert (got.provider_batch_id, got.state, got.total, got.completed) == (
        "b1",
        "in_progress",
        4,
        1,
    )
    assert (got.created_at, got.model) == (1_700_000_000.0, "m")


def test_a_failed_batch_with_a_bare_error_string_keeps_it() -> None:
    got = read_batch({"id": "b", "status": "FAILED", "error": "bad file", "created_at": 1})
    assert got.state == "failed" and got.ended
    assert got.errors == [{"code": "failed", "message": "bad file", "line": None}]


def test_the_door_takes_the_services_line_shape_and_refuses_what_it_does_not_batch() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    short = parse_obj({"custom_id": "a", "body": body}, "together")
    assert (short.provider, short.endpoint) == ("together", "/v1/chat/completions")
    line = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": body}
    with pytest.raises(LineError, match="not batched by Groq"):
        parse_obj(line, "groq")
    big = {**line, "url": "/v1/chat/completions"}
    big["body"] = {**body, "messages": [{"role": "user", "content": "x" * 1_100_000}]}
    with pytest.raises(LineError, match="Cerebras takes at most 1,048,576 bytes a line"):
        parse_obj(big, "cerebras")
    assert parse_obj(big, "groq").provider == "groq"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_python_apis_short_form_with_a_url_is_a_request(name: str, tmp_path: Any) -> None:
    """`Queue.add` sends `{"custom_id", "body", "url"}`: the short form, as for OpenAI. It was
    taken as a whole line without its method and refused ("method must be POST")."""
    from llmbatch import Queue

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with Queue(str(tmp_path / "q.db"), "q", provider=name) as q:
        report = q.add("a", body).report
        assert report is not None and report.added == 1
        with pytest.raises(LineError, match="not batched by"):
            format_of(name).item("b", body, "/v1/embeddings", name)
