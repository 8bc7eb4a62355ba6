"""The provider registry: names without imports, formats on first use, and bad names or
settings said in one line before anything is enqueued."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import request_states
from llmbatch import Queue
from llmbatch.errors import ConfigError
from llmbatch.providers import Format, check_settings, format_of, format_or_base, names, plugin
from llmbatch.requests import LineError, make_request, parse_obj


def test_every_builtin_has_a_format_and_lazy_transport() -> None:
    for name in ("openai", "azure", "anthropic"):
        p = plugin(name)
        assert p.name == name == format_of(name).name
        assert isinstance(p.transport, str)  # imported only when the engine needs it
    assert names() == sorted(names())


def test_an_unknown_provider_through_the_python_api_enqueues_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "q.db")
    item = {"custom_id": "a", "body": {"model": "gpt-4o-mini", "messages": []}}
    with Queue(db, "q") as q:
        q.add_many([item])
        with pytest.raises(ConfigError) as caught:
            q.add_many([{**item, "custom_id": "b"}], provider="mistral")
    assert str(caught.value) == (
        f"unknown provider 'mistral' (known: {', '.join(names())}); "
        "install its plugin package or use one of those"
    )
    assert request_states(db) == {"queued": 1}
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        make_request("a", {"model": "m"}, provider="nope")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"base_urll": "x"},
            "[providers.openai] has no setting 'base_urll'; its settings: api_key_env",
        ),
        ({"timeout": "soon"}, "[providers.openai] timeout must be a number, got 'soon'"),
        ({"base_url": 3}, "[providers.openai] base_url must be a string, got 3"),
        ("sk-not-a-table", "[providers.openai] must be a table, got a str"),
    ],
)
def test_a_provider_table_is_checked_against_its_settings(options: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_settings("openai", options)
    assert str(caught.value).startswith(message)
    assert "sk-not-a-table" not in str(caught.value)


def test_a_row_of_a_provider_no_longer_installed_reads_with_the_base_format() -> None:
    f = format_or_base("uninstalled")
    assert type(f) is Format
    assert f.status_code(None) == 200 and f.status_code("boom") is None
    assert f.output_text({"choices": [{"message": {"content": "hi"}}]}) == "hi"


def test_a_line_for_another_providers_endpoint_names_that_provider() -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/messages", "body": {"model": "c"}}
    with pytest.raises(LineError) as caught:
        parse_obj(line, "azure")
    assert str(caught.value) == (
        "url /v1/messages is batched by anthropic, not azure: enqueue these lines with "
        "--provider anthropic, in its line shape"
    )


def test_an_entry_point_that_still_names_a_transport_class_loads() -> None:
    """An install made before formats were plugins names the transport class: it still works."""
    from importlib.metadata import EntryPoint

    from llmbatch.providers import _import

    for name, value in (
        ("openai", "llmbatch.providers.openai:OpenAIProvider"),
        ("azure", "llmbatch.providers.openai:AzureProvider"),
        ("anthropic", "llmbatch.providers.anthropic:AnthropicProvider"),
    ):
        got = _import(name, EntryPoint(name, value, "llmbatch.providers"))
        assert got is plugin(name)
    with pytest.raises(ConfigError, match=r"not an llmbatch Plugin; see docs/providers\.md"):
        _import("x", EntryPoint("x", "llmbatch.errors:ConfigError", "llmbatch.providers"))
