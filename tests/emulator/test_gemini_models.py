"""The Gemini door's models come from the catalog, as the other doors' do: every model
`google-genai` names is accepted (read from the SDK's file here with a regex, independently
of the emulator's `ast` reading), embedding and live models only where their methods allow,
context windows, and models added by `--models FILE` and the control API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from gemini_helpers import FIXED, bid, inline, sdk, wait
from google import genai
from google.genai import errors

from llmbatch.emulator import RunningEmulator, running
from llmbatch.emulator.models import load_models_file
from llmbatch.errors import ConfigError


def genai_listed() -> set[str]:
    """The Gemini models of the installed SDK's tokenizer table (the only list it has)."""
    path = Path(genai.__file__).parent / "_local_tokenizer_loader.py"
    return set(re.findall(r'^\s*"([\w.-]+)":\s*"gemma\w*",$', path.read_text(), re.M))


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[RunningEmulator]:
    with running(tmp_path / "data", **FIXED) as e:
        yield e


def test_every_model_the_sdk_names_is_batched(emu: RunningEmulator) -> None:
    client = sdk(emu)
    listed = genai_listed()
    assert len(listed) >= 5 and "gemini-2.5-flash" in listed
    cards = {c["id"]: c for c in emu.control.models()["gemini"]}
    jobs = []
    for model in sorted(listed):
        assert model in cards, model
        if "live" in model:  # Live API models answer over a socket only, as at the service
            with pytest.raises(errors.ClientError, match="not supported for batchGenerate"):
                client.batches.create(model=model, src=[inline(0)])
            continue
        jobs.append(client.batches.create(model=model, src=[inline(0)]))
    emu.control.advance(1)
    for job in jobs:
        done = wait(client, job.name or "")
        assert done.state == "JOB_STATE_SUCCEEDED", (job.model, done.state)
        assert done.dest is not None and done.dest.inlined_responses is not None
        assert done.dest.inlined_responses[0].response is not None, job.model
    assert cards["gemini-2.5-flash"]["context_window"] == 1_048_576
    assert cards["gemini-embedding-001"]["endpoints"] == [
        "asyncBatchEmbedContent",
        "countTokens",
        "embedContent",
    ]


@pytest.mark.filterwarnings("ignore::google.genai._common.ExperimentalWarning")
def test_models_file_and_control_calls_add_gemini_models(tmp_path: Path) -> None:
    models = tmp_path / "models.json"
    entries = [
        {"id": "gemini-next", "context_window": 30},
        {"id": "my-embedder", "endpoints": ["asyncBatchEmbedContent"]},
    ]
    models.write_text(json.dumps({"gemini": entries}))
    with running(tmp_path / "data", models_file=str(models), **FIXED) as emu:
        client = sdk(emu)
        long = {"contents": [{"parts": [{"text": "word " * 40}]}], "metadata": {"key": "long"}}
        job = client.batches.create(model="gemini-next", src=[inline(0), long])
        emu.control.advance(1)
        done = wait(client, job.name or "")
        assert done.dest is not None and done.dest.inlined_responses is not None
        short, too_long = done.dest.inlined_responses
        assert short.response is not None and too_long.error is not None
        assert too_long.error.code == 400
        assert too_long.error.message == (
            "The input token count (40) exceeds the maximum number of tokens allowed (30)."
        )
        text = {"parts": [{"text": "embed me"}]}
        embedded = client.batches.create_embeddings(
            model="my-embedder", src={"inlined_requests": {"contents": [text]}}
        )
        assert embedded.name
        with pytest.raises(errors.ClientError, match="not supported for batchGenerateContent"):
            client.batches.create(model="my-embedder", src=[inline(0)])

        # At runtime, through the control API.
        with pytest.raises(errors.ClientError, match="models/gemini-x is not found"):
            client.batches.create(model="gemini-x", src=[inline(0)])
        cards = emu.control.add_models({"id": "gemini-x"}, door="gemini")["gemini"]
        assert next(c for c in cards if c["id"] == "gemini-x")["context_window"] == 1_048_576
        assert bid(client.batches.create(model="gemini-x", src=[inline(0)]))
        emu.control.remove_models("gemini-x", door="gemini")
        with pytest.raises(errors.ClientError, match="models/gemini-x is not found"):
            client.batches.create(model="gemini-x", src=[inline(0)])
        with pytest.raises(Exception, match="400"):
            emu.control.add_models({"id": "x", "endpoints": ["chat"]}, door="gemini")


def test_a_bad_gemini_entry_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_text('{"gemini": [{"id": "g", "endpoints": ["chat"]}]}')
    with pytest.raises(ConfigError, match=r"gemini\[0\]: 'endpoints' must be a list of"):
        load_models_file(path)
