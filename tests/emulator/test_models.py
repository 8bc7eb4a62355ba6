"""Models: every id the installed official SDKs list is accepted (read from the SDKs' type
literals here, independently of how the emulator reads them), dated snapshots and aliases,
context windows, the `--models` file and the control API's model calls."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from click.testing import CliRunner

from emu_helpers import chat_line, read_jsonl, upload, wait
from llmbatch.cli import main as cli
from llmbatch.emulator import RunningEmulator, running
from llmbatch.emulator.models import load_models_file
from llmbatch.errors import ConfigError


def literal_ids(tp: Any) -> set[str]:
    """Every string in the `Literal`s of a type (through `Union`s and aliases)."""
    out: set[str] = set()
    for arg in typing.get_args(tp):
        if isinstance(arg, str):
            out.add(arg)
        elif arg is not str:
            out |= literal_ids(arg)
    return out


def openai_lists() -> dict[str, set[str]]:
    """The installed `openai` SDK's model ids, by the endpoint kind that takes them."""
    from openai.types import (
        AudioModel,
        ChatModel,
        EmbeddingModel,
        ImageModel,
        ModerationModel,
        VideoModel,
    )
    from openai.types.audio import SpeechModel
    from openai.types.completion_create_params import CompletionCreateParamsBase
    from openai.types.shared import ResponsesModel

    chat = literal_ids(ChatModel)
    return {
        "chat": chat,
        "responses": literal_ids(ResponsesModel) - chat,
        "completions": literal_ids(typing.get_type_hints(CompletionCreateParamsBase)["model"]),
        "embeddings": literal_ids(EmbeddingModel),
        "moderations": literal_ids(ModerationModel),
        "images": literal_ids(ImageModel),
        "videos": literal_ids(VideoModel),
        "audio": literal_ids(AudioModel) | literal_ids(SpeechModel),
    }


def anthropic_list() -> set[str]:
    return literal_ids(anthropic.types.Model)


def test_the_sdks_list_models_at_all() -> None:
    lists = openai_lists()
    assert len(lists["chat"]) > 20 and lists["embeddings"] and len(anthropic_list()) > 3


@pytest.mark.slow
def test_every_openai_sdk_model_is_listed_and_answers(
    emu: RunningEmulator, client: openai.OpenAI
) -> None:
    listed = {m.id: m for m in client.models.list()}
    lists = openai_lists()
    for kind, ids in lists.items():
        for model in sorted(ids):
            assert model in listed, (kind, model)
            assert client.models.retrieve(model).id == model
            messages = [{"role": "user", "content": "hi"}]
            if kind == "chat":
                reply: Any = client.chat.completions.create(model=model, messages=messages)
            elif kind == "responses":
                reply = client.responses.create(model=model, input="hi")
            elif kind == "completions":
                reply = client.completions.create(model=model, prompt="Once")
            elif kind == "embeddings":
                reply = client.embeddings.create(model=model, input="hi")
            elif kind == "moderations":
                reply = client.moderations.create(model=model, input="hi")
            else:
                continue  # images and videos: batch only (below); audio: listed only
            assert reply.model in listed, (model, reply.model)  # itself, or its snapshot
    # Images through batches: one file, one model each; videos no longer (the Videos API
    # shut down on 2026-09-24).
    for model in sorted(lists["videos"])[:1]:
        line = {"custom_id": "a", "method": "POST", "url": "/v1/videos"}
        line["body"] = {"model": model, "prompt": "a red square"}
        f = upload(client, [line])
        with pytest.raises(openai.BadRequestError, match="shut down on 2026-09-24"):
            client.batches.create(
                input_file_id=f.id, endpoint="/v1/videos", completion_window="24h"
            )
    for endpoint, kind in (("/v1/images/generations", "images"), ("/v1/images/edits", "images")):
        for model in sorted(lists[kind]):
            line = {"custom_id": "a", "method": "POST", "url": endpoint}
            line["body"] = {"model": model, "prompt": "a red square"}
            f = upload(client, [line])
            done = wait(
                client,
                client.batches.create(
                    input_file_id=f.id, endpoint=endpoint, completion_window="24h"
                ).id,
            )
            assert done.status == "completed" and done.request_counts.completed == 1, model


def test_dated_snapshot_in_a_batch_and_the_reply_names_it(client: openai.OpenAI) -> None:
    # The case: a dated name the SDK lists failed the whole batch (model_not_found).
    for model in ("gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14", "o3-2025-04-16"):
        f = upload(client, [chat_line(i, model=model) for i in range(3)])
        done = wait(
            client,
            client.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id,
        )
        assert done.status == "completed" and done.request_counts.completed == 3, done.errors
        assert {
            x["response"]["body"]["model"] for x in read_jsonl(client, done.output_file_id)
        } == {model}
    alias = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    assert alias.model == "gpt-4o-2024-08-06"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK warns on old models
def test_every_anthropic_sdk_model_answers_in_one_batch(emu: RunningEmulator) -> None:
    client = anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0)
    ids = sorted(anthropic_list())
    listed = {m.id for m in client.models.list(limit=1000)}
    requests = []
    for i, model in enumerate(ids):
        assert model in listed or client.models.retrieve(model).id in listed, model
        params = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        assert client.messages.create(**params).content  # type: ignore[call-overload]
        requests.append({"custom_id": f"m{i}", "params": params})
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    emu.control.advance(5)
    assert emu.control.wait(batch.id)["request_counts"]["succeeded"] == len(ids)


def test_limits_of_a_model_card(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.add_models({"id": "tiny-model", "context_window": 50, "max_output_tokens": 20})
    say = [{"role": "user", "content": "word " * 60}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-model", messages=say)
    assert info.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert "maximum context length is 50 tokens" in info.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], max_tokens=100_000
        )
    assert info.value.body["param"] == "max_tokens"  # type: ignore[index]
    assert "at most 16384 completion tokens" in info.value.body["message"]  # type: ignore[index]
    # A model on an endpoint it does not serve: the service's own 404s.
    with pytest.raises(openai.NotFoundError, match="only supported in v1/responses"):
        client.chat.completions.create(model="o1-pro", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError, match="not a chat model"):
        client.chat.completions.create(
            model="gpt-3.5-turbo-instruct", messages=[{"role": "user", "content": "x"}]
        )
    # Anthropic: a prompt over the window, max_tokens over the model's largest output.
    claude = anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0)
    emu.control.add_models({"id": "claude-tiny", "context_window": 30}, door="anthropic")
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        claude.messages.create(model="claude-tiny", max_tokens=5, messages=say)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError, match="maximum allowed number of output"):
        claude.messages.create(
            model="claude-3-haiku-20240307",
            max_tokens=9000,
            messages=[{"role": "user", "content": "x"}],
        )


def test_models_control_calls_add_remove_and_persist(tmp_path: Path) -> None:
    with running(tmp_path / "data", time_scale=0.0) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        # PATCH /config {"models": ...} answered 400 before; now it replaces the list.
        emu.control.set_config(models=["gpt-4o-mini", {"id": "ft:gpt-4o-mini:acme::x1"}])
        assert {m.id for m in client.models.list()} == {"gpt-4o-mini", "ft:gpt-4o-mini:acme::x1"}
        cards = emu.control.add_models("my-model", {"id": "big", "context_window": 9})["openai"]
        assert {c["id"] for c in cards} == {
            "gpt-4o-mini",
            "ft:gpt-4o-mini:acme::x1",
            "my-model",
            "big",
        }
        assert next(c for c in cards if c["id"] == "big")["context_window"] == 9
        emu.control.remove_models("my-model")
        with pytest.raises(Exception, match="404"):
            emu.control.remove_models("never-there")
        with pytest.raises(Exception, match="400"):
            emu.control.add_models({"id": "x", "context_window": "wide"})
    with running(tmp_path / "data", time_scale=0.0) as emu:
        assert {c["id"] for c in emu.control.models()["openai"]} == {
            "gpt-4o-mini",
            "ft:gpt-4o-mini:acme::x1",
            "big",
        }


def test_models_file_json_and_toml(tmp_path: Path) -> None:
    js = tmp_path / "models.json"
    js.write_text(
        json.dumps(
            {
                "openai": ["ft:gpt-4o-mini:acme::abc", {"id": "mini-window", "context_window": 40}],
                "anthropic": [{"id": "claude-next-20270101"}],
            }
        )
    )
    toml = tmp_path / "models.toml"
    toml.write_text('replace = true\nopenai = ["only-this"]\n')
    with running(time_scale=0.0, models_file=str(js)) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        ids = {m.id for m in client.models.list()}
        assert {"ft:gpt-4o-mini:acme::abc", "mini-window", "gpt-4o-mini"} <= ids
        claude = anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0)
        assert claude.models.retrieve("claude-next-20270101").display_name == "Claude Next"
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="mini-window", messages=[{"role": "user", "content": "w " * 50}]
            )
    with running(time_scale=0.0, models_file=str(toml)) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        assert [m.id for m in client.models.list()] == ["only-this"]


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("bad.json", '{"openai": ["a",\n  ]}', "bad.json:2: not valid JSON"),
        ("bad.toml", "openai = [\n", "bad.toml: not valid TOML"),
        ("wrong.json", '{"openia": ["a"]}', "unknown key(s) ['openia']"),
        (
            "entry.json",
            '{"openai": [{"id": "a", "context_window": -1}]}',
            "openai[0]: 'context_window'",
        ),
        ("kind.json", '{"openai": [{"id": "a", "endpoints": ["fax"]}]}', "openai[0]: 'endpoints'"),
        ("empty.json", "{}", "no models"),
    ],
)
def test_invalid_models_file_is_one_clear_error(
    tmp_path: Path, name: str, text: str, says: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_models_file(path)
    assert says in str(info.value) and str(path) in str(info.value)
    result = CliRunner().invoke(cli, ["emulator", "--port", "0", "--models", str(path)])
    assert result.exit_code == 2 and says in result.output  # a usage error (README)
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_models_file(tmp_path: Path) -> None:
    with (
        pytest.raises(ConfigError, match="cannot read the models file"),
        running(time_scale=0.0, models_file=str(tmp_path / "nope.json")),
    ):
        pass


def test_azure_deployment_runs_a_dated_model(emu: RunningEmulator) -> None:
    emu.control.set_config(deployments={"prod": "gpt-4o-mini-2024-07-18"})
    azure = openai.AzureOpenAI(
        azure_endpoint=emu.url, api_key="k", api_version="2024-10-21", max_retries=0
    )
    reply = azure.chat.completions.create(model="prod", messages=[{"role": "user", "content": "x"}])
    assert reply.model == "gpt-4o-mini-2024-07-18"
