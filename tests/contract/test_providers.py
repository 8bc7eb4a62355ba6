"""The Provider contract: one suite, every registered provider, run unchanged against the emulator.

Each test gets a real provider from `make_provider` (the entry point group a plugin would use)
pointed at one emulator over real HTTP with its official SDK, and a fresh emulator state. A
plain client of the same SDK on the same account (`account`) looks at what the provider did,
and the emulator's call log counts the HTTP calls it made. The clock stands still
(`time_scale=0`) unless a test advances it.

What differs between providers is data, in `KINDS`: the endpoint and model, a body that runs
and one that fails when it runs, where a fault is injected, whether requests travel as an
upload. A case whose concept a provider lacks (Anthropic has no uploads, a compatible service
no enqueued-token quota) skips saying so; a provider registered later gets every case once
it has a kind (the suite fails for one that has none). Gemini runs twice where it matters:
`gemini` sends small batches inline, `gemini-file` always uploads.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import RefusingService, provider_params
from llmbatch.emulator import RunningEmulator, running
from llmbatch.errors import AuthError, ConfigError, RejectedError, TransientError
from llmbatch.export import jsonl_line
from llmbatch.ownership import attempt_prefix
from llmbatch.ownership import custom_id as custom_id_of
from llmbatch.providers import (
    BatchRef,
    Format,
    Intent,
    Provider,
    available,
    format_of,
    make_provider,
)
from llmbatch.providers.anthropic_format import AnthropicFormat
from llmbatch.providers.base import ResultsGone, read_lines
from llmbatch.providers.compatible import SHIPPED
from llmbatch.providers.openai_format import OpenAIFormat
from llmbatch.results import parse_line as parse_result_line
from llmbatch.store.base import ResultRow

KEY_ENV = "LLMBATCH_CONTRACT_TEST_KEY"
KEY = "sk-contract-0123456789-not-a-secret"
STORE = "lbc0ffee0001"
OTHER_STORE = "lbdeadbeef02"
NONCE = "0badf00d"
HOUR = 3600.0
STATES = {
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
    "cancelled",
}  # fmt: skip


# -- what differs between providers ----------------------------------------------------------


def _chat(model: str, i: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"question {i}: why?"}]
    return {"model": model, "messages": messages, "max_completion_tokens": 20}


def _message(model: str, i: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"question {i}: why?"}]
    return {"model": model, "max_tokens": 20, "messages": messages}


def _content(model: str, i: int) -> dict[str, Any]:
    return {"model": model, "contents": [{"role": "user", "parts": [{"text": f"question {i}"}]}]}


@dataclass(frozen=True)
class Kind:
    """How one provider's batches look at the emulator, for the contract cases."""

    endpoint: str
    model: str
    other_model: str | None  # another model it batches, another group (None: one may mix)
    body: Callable[[str, int], dict[str, Any]]  # model, i -> a request body that runs
    bad: Callable[[dict[str, Any]], dict[str, Any]]  # a body accepted at create, failing to run
    create_op: str  # the emulator's operation for a create (its fault rules)
    download_op: str  # ... for reading results
    seed_pages: int  # foreign batches that push ours off the list pages poll reads
    never: tuple[str, ...]  # ids of things that never existed, for delete
    # what a create refuses for good, and the status it answers
    refused: Callable[[Intent], Intent]
    refused_status: str
    error_file: bool = True  # failed requests come in a file of their own
    uploads: bool = True  # requests travel as an uploaded file (`upload_op`)
    upload_op: str = "files.create"
    fails_whole: bool = True  # a batch can fail validation as a whole, saying why
    quota: str | None = None  # the emulator's enqueued-token quota door, if it has one
    upload_ttl: float | None = None  # uploads the provider deletes by itself after this
    extra: tuple[str, str, str, str] | None = None  # SDK module, provider module, package, extra
    proves_running: bool = True  # a running batch says whose it is (else: once ended, read)
    archives_after: float | None = None  # results unreadable this long after the batch ended


def _openai_like(name: str) -> Kind:
    return Kind(
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",  # the emulator's default Azure deployments are named like models
        other_model="gpt-4.1-nano",
        body=_chat,
        bad=lambda b: {**b, "messages": "not a list"},
        create_op="batches.create",
        download_op="files.content",
        seed_pages=120,
        never=("file-never-existed",),
        refused=lambda it: dataclasses.replace(it, endpoint="/v1/fine_tuning/jobs"),
        refused_status="400",
        quota=name if name in ("openai", "azure") else None,
    )


KINDS: dict[str, Kind] = {
    "anthropic": Kind(
        endpoint="/v1/messages",
        model="claude-3-5-haiku-latest",
        other_model=None,  # a Message Batch may mix models
        body=_message,
        bad=lambda b: {**b, "messages": []},
        create_op="messages.batches.create",
        download_op="messages.batches.results",
        seed_pages=120,
        never=("msgbatch_never_existed",),
        refused=lambda it: dataclasses.replace(it, path=_one_custom_id(it.path)),
        refused_status="400",
        error_file=False,  # errored requests are lines of the one results stream
        uploads=False,  # the requests go inline in the create
        fails_whole=False,  # a bad request is an errored line; the batch still ends
        proves_running=False,  # its custom ids prove it, readable once it has ended
        archives_after=29 * 24 * HOUR,  # `archived_at` set, the results 404
    ),
    "gemini": Kind(
        endpoint="generateContent",
        model="gemini-2.5-flash",
        other_model="gemini-2.5-pro",
        body=_content,
        bad=lambda b: {**b, "contents": "not a list"},
        create_op="batches.create",
        download_op="files.download",
        seed_pages=320,
        never=("files/never-existed", "batches/never-existed"),
        refused=lambda it: dataclasses.replace(it, model="gemini-no-such-model"),
        refused_status="404",
        error_file=False,  # a failed request is a line with its error among the answers
        quota="gemini",
        upload_ttl=48 * HOUR,
        extra=("google.genai", "llmbatch.providers.gemini", "google-genai", "gemini"),
    ),
}


def kind(name: str) -> Kind:
    if name in KINDS:
        return KINDS[name]
    if isinstance(format_of(name), OpenAIFormat):
        return _openai_like(name)
    pytest.fail(f"provider {name!r} has no kind in the provider contract suite: add it to KINDS")


def _one_custom_id(path: Path) -> Path:
    """The same requests, all under the first one's custom id (a create refuses them)."""
    out = path.with_suffix(".refused.jsonl")
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for line in lines:
        line["custom_id"] = lines[0]["custom_id"]
    out.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return out


# -- where the provider is, and a plain client beside it --------------------------------------


@dataclass(frozen=True)
class Target:
    """A provider as a test runs it: its registered name and settings of its own."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def uploads(self) -> bool:
        return kind(self.name).uploads and self.options.get("inline_max_bytes") != 1 << 20


def targets() -> dict[str, Target]:
    out = {name: Target(name) for name in available()}
    if "gemini" in out:  # small batches inline (the default), or always a file
        out["gemini"] = Target("gemini", {"inline_max_bytes": 1 << 20})
        out["gemini-file"] = Target("gemini", {"inline_max_bytes": 0})
    return dict(sorted(out.items()))


def emulator_settings(name: str, root: str) -> dict[str, Any]:
    """How to point each registered provider at the emulator whose root URL is `root`."""
    if name == "openai":
        return {"base_url": root + "/v1", "api_key_env": KEY_ENV}
    if name == "azure":
        return {"endpoint": root, "api_key_env": KEY_ENV}
    if name in ("anthropic", "gemini"):
        return {"base_url": root, "api_key_env": KEY_ENV}
    if name in SHIPPED:  # each OpenAI-compatible service has its own door, its differences on
        return {"base_url": f"{root}/compatible/{name}/v1", "api_key_env": KEY_ENV}
    raise ConfigError(
        f"the provider contract suite does not know how to point {name!r} at the emulator"
    )


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with running(time_scale=0.0, seed=11) as e:
        yield e


@pytest.fixture(params=provider_params(list(targets())))
def target(request: pytest.FixtureRequest, emu: RunningEmulator) -> Target:
    emu.control.reset()
    return targets()[request.param]


@pytest.fixture(params=provider_params(sorted(available())))
def any_name(request: pytest.FixtureRequest, emu: RunningEmulator) -> str:
    """Each registered provider once (a case where sending inline or a file makes no odds)."""
    emu.control.reset()
    return str(request.param)


@pytest.fixture
def provider(target: Target, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Provider:
    monkeypatch.setenv(KEY_ENV, KEY)
    return make_provider(target.name, **emulator_settings(target.name, emu.url), **target.options)


class Account:
    """A plain client of the provider's own SDK on the same account: what it sees."""

    def upload(self, it: Intent) -> str:
        """An upload made as the provider makes one, without the batch (a crash after it)."""
        raise NotImplementedError

    def input_file(self, batch_id: str) -> str | None:
        raise NotImplementedError

    def file_name(self, file_id: str) -> str:
        raise NotImplementedError

    def exists(self, object_id: str) -> bool:
        """Whether a file (or, where results are the batch, a batch) is still there."""
        raise NotImplementedError


class OpenAIAccount(Account):
    def __init__(self, name: str, root: str) -> None:
        self.name = name
        if name == "azure":
            self.sdk: openai.OpenAI = openai.AzureOpenAI(
                azure_endpoint=root, api_key="k", api_version="2024-10-21"
            )
        elif name in SHIPPED:
            self.sdk = openai.OpenAI(base_url=f"{root}/compatible/{name}/v1", api_key="k")
        else:
            self.sdk = openai.OpenAI(base_url=root + "/v1", api_key="k")

    def upload(self, it: Intent) -> str:
        purpose: Any = SHIPPED[self.name].file_purpose if self.name in SHIPPED else "batch"
        with open(it.path, "rb") as fh:
            return self.sdk.files.create(
                file=(it.file_name, fh, "application/jsonl"), purpose=purpose
            ).id

    def input_file(self, batch_id: str) -> str | None:
        return self.sdk.batches.retrieve(batch_id).input_file_id

    def metadata(self, batch_id: str) -> dict[str, str] | None:
        return self.sdk.batches.retrieve(batch_id).metadata

    def file_name(self, file_id: str) -> str:
        return self.sdk.files.retrieve(file_id).filename

    def exists(self, object_id: str) -> bool:
        try:
            self.sdk.files.retrieve(object_id)
        except openai.NotFoundError:
            return False
        return True


class AnthropicAccount(Account):
    def __init__(self, root: str) -> None:
        self.sdk = anthropic.Anthropic(base_url=root, api_key="k", max_retries=0)

    def upload(self, it: Intent) -> str:
        pytest.skip("anthropic: requests go inline in the create, there are no uploads")

    def input_file(self, batch_id: str) -> str | None:
        return None

    def exists(self, object_id: str) -> bool:
        try:
            self.sdk.messages.batches.retrieve(object_id)
        except anthropic.NotFoundError:
            return False
        return True


class GeminiAccount(Account):
    def __init__(self, root: str) -> None:
        from google import genai

        self.root = root
        self.sdk = genai.Client(
            api_key="k", http_options={"base_url": root, "api_version": "v1beta"}
        )

    def upload(self, it: Intent) -> str:
        from google.genai import types

        config = types.UploadFileConfig(mime_type="application/jsonl", display_name=it.file_name)
        return str(self.sdk.files.upload(file=io.BytesIO(it.path.read_bytes()), config=config).name)

    def input_file(self, batch_id: str) -> str | None:
        """The REST resource's `metadata.inputConfig.fileName` (the SDK reads it on Vertex
        only)."""
        got = httpx.get(f"{self.root}/v1beta/batches/{batch_id}", params={"key": "k"})
        config = got.raise_for_status().json()["metadata"].get("inputConfig", {})
        return config.get("fileName")

    def display_name(self, batch_id: str) -> str | None:
        return self.sdk.batches.get(name="batches/" + batch_id).display_name

    def file_name(self, file_id: str) -> str:
        return str(self.sdk.files.get(name=file_id).display_name)

    def exists(self, object_id: str) -> bool:
        from google.genai import errors

        try:
            if object_id.startswith("batches/"):
                self.sdk.batches.get(name=object_id)
            else:
                self.sdk.files.get(name=object_id)
        except errors.ClientError as exc:
            if exc.code in (403, 404):  # Google answers 403 for a file that is not there
                return False
            raise
        return True


@pytest.fixture
def account(target: Target, emu: RunningEmulator) -> Account:
    if target.name == "anthropic":
        return AnthropicAccount(emu.url)
    if target.name == "gemini":
        return GeminiAccount(emu.url)
    return OpenAIAccount(target.name, emu.url)


def counts(provider: Provider) -> bool:
    """Whether the service reports request counts (a "job" object gives a percentage only)."""
    return not (provider.name in SHIPPED and SHIPPED[provider.name].job_object)


def padding(provider: Provider, n: int) -> int:
    """Requests added to a test's `n` so that it reaches the service's smallest batch
    (Cerebras takes no batch under 10); they come after the test's own and all succeed."""
    k = kind(provider.name)
    return max(0, provider.limits(k.endpoint, k.model).min_requests - n)


class Journal:
    """Records the steps a provider announces, in order."""

    call_timeout = 30.0

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def uploading(self) -> None:
        self.steps.append("uploading")

    def uploaded(self, file_id: str) -> None:
        self.steps.append(("uploaded", file_id))

    def creating(self) -> None:
        self.steps.append("creating")

    def sending(self) -> None:
        self.steps.append("sending")


def body(provider: Provider, i: int) -> bytes:
    k = kind(provider.name)
    return orjson.dumps(k.body(k.model, i))


def intent(
    provider: Provider,
    folder: Path,
    batch_id: int,
    *,
    store_id: str = STORE,
    nonce: str | None = NONCE,
    n: int = 3,
    bodies: list[bytes] | None = None,
) -> Intent:
    """A packed batch file written by hand, custom ids `<store>-<nonce>-<attempt>`, padded up
    to the service's smallest batch."""
    k = kind(provider.name)
    bodies = bodies or [body(provider, i) for i in range(n)]
    bodies += [body(provider, 100 + i) for i in range(padding(provider, len(bodies)))]
    path = folder / f"{store_id}-{batch_id}-{nonce}.jsonl"
    lines = [
        provider.request_line(custom_id_of(store_id, nonce, batch_id * 1000 + i), k.endpoint, b)
        for i, b in enumerate(bodies)
    ]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    span = (batch_id * 1000, batch_id * 1000 + len(lines) - 1)
    return Intent(batch_id, store_id, k.endpoint, k.model, path, len(lines), 0.0, None, span, nonce)


def submit(provider: Provider, it: Intent) -> BatchRef:
    return provider.submit(it, Journal())


def finish(emu: RunningEmulator, batch_id: str) -> dict[str, Any]:
    emu.control.advance(HOUR)
    return emu.control.wait(batch_id, timeout=30)


def steps(emu: RunningEmulator) -> list[str]:
    """What each API call since the log was cleared did: upload, create, list, get, or
    the call itself. An upload in several calls (Gemini's resumable one) is one step."""
    out: list[str] = []
    for c in emu.control.calls():
        method, path = c["method"], c["path"].rstrip("/")
        parts = path.split("/")
        if method == "POST" and parts[-1] == "files":
            step = "upload"
        elif method == "POST" and (parts[-1] == "batches" or ":batch" in parts[-1]):
            step = "create"
        elif method == "GET" and parts[-1] == "batches":
            step = "list"
        elif method == "GET" and parts[-2] == "batches":
            step = "get"
        else:
            step = f"{method} {path}"
        if not (step == "upload" and out[-1:] == ["upload"]):
            out.append(step)
    return out


def findings(provider: Provider, files: list[Any], nonce: str = NONCE) -> dict[int, Any]:
    """attempt id -> what the provider's format reads from its result line."""
    out = {}
    fmt = format_of(provider.name)
    for _kind, raw in read_lines(files):
        found = parse_result_line(
            raw, attempt_prefix(STORE, nonce), kind(provider.name).endpoint, fmt
        )
        assert found.attempt_id not in out, "one line per attempt"
        out[found.attempt_id] = found
    return out


# -- limits, grouping, request lines, results -------------------------------------------------


def test_every_built_in_provider_is_registered() -> None:
    assert {"openai", "azure", "anthropic", "gemini", *SHIPPED} <= set(available())
    for name in available():
        kind(name)  # the suite knows how each one looks


def test_limits_and_group_key_are_sane(provider: Provider) -> None:
    k = kind(provider.name)
    endpoints = sorted(format_of(provider.name).endpoints)
    for endpoint in endpoints:
        limits = provider.limits(endpoint, k.model)
        assert 1_000 <= limits.max_requests <= 100_000
        assert 1024 * 1024 <= limits.max_bytes <= 2 * 1024**3  # Gemini's file cap is 2 GB
        assert limits.max_inputs is None or 1 <= limits.max_inputs <= 50_000
    key = provider.group_key(k.endpoint, k.model)
    assert key == provider.group_key(k.endpoint, k.model)
    assert all(isinstance(part, str) for part in key) and provider.name in key
    if k.other_model is not None:
        assert key != provider.group_key(k.endpoint, k.other_model)
    for other in set(endpoints) - {k.endpoint}:
        assert key != provider.group_key(other, k.model)
    line = orjson.loads(provider.request_line("s-1", k.endpoint, body(provider, 0)))
    assert line[getattr(format_of(provider.name), "id_field", "custom_id")] == "s-1"


def test_request_lines_are_accepted_and_results_download_in_any_order(
    provider: Provider, target: Target, emu: RunningEmulator, tmp_path: Path
) -> None:
    """20 requests that run and one that fails when it runs: each result line maps back to
    its own attempt, whatever order the lines come in (Gemini's emulator door shuffles them,
    as Google documents no order)."""
    k = kind(provider.name)
    emu.control.set_config(gemini_shuffle_results=True)
    bad = orjson.dumps(k.bad(k.body(k.model, 99)))
    it = intent(provider, tmp_path, 1, bodies=[*(body(provider, i) for i in range(20)), bad])
    first = orjson.loads(it.path.read_bytes().splitlines()[0])
    if isinstance(format_of(provider.name), OpenAIFormat):
        assert first["custom_id"] == f"{STORE}-{NONCE}-1000" and first["body"]["model"] == k.model
        if provider.name in SHIPPED and SHIPPED[provider.name].line_shape == "custom_id_body":
            assert set(first) == {"custom_id", "body"}
        else:
            assert first["method"] == "POST"
            assert first["url"] == ("/chat/completions" if provider.name == "azure" else k.endpoint)
    pad = padding(provider, 21)
    ref = submit(provider, it)
    assert (ref.input_file_id is not None) == target.uploads

    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert status.state == "completed" and status.ended and status.output_file_id
    if counts(provider):
        assert (status.total, status.completed, status.failed) == (21 + pad, 20 + pad, 1)

    out = tmp_path / "results"
    out.mkdir()
    files = provider.download(status, out)
    assert [f.kind for f in files] == (["output", "error"] if k.error_file else ["output"])
    for f in files:
        assert f.path.parent == out and f.size == f.path.stat().st_size > 0
    found = findings(provider, files)
    assert sorted(found) == list(range(1000, 1021 + pad))
    assert [a for a, f in found.items() if not f.ok] == [1020]
    failed = found[1020]
    assert failed.error_code and failed.status_code in (None, *range(400, 500))
    for f in found.values():
        if f.ok:
            assert f.body is not None and f.input_tokens and f.output_tokens
    if provider.name == "gemini":
        keys = [f.attempt_id for f in findings(provider, files).values()]
        assert keys != sorted(keys)  # they did come shuffled


def test_a_dropped_cut_or_failed_download_is_transient(
    provider: Provider, target: Target, emu: RunningEmulator, tmp_path: Path
) -> None:
    k = kind(provider.name)
    if k.uploads and not target.uploads:
        pytest.skip(f"{target.name}: answers to inline requests come in the batch, not a file")
    ref = submit(provider, intent(provider, tmp_path, 1, n=40))
    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    for fault, times in (("drop", 1), ("truncate", 1), ("503", 3)):  # 3: past the SDK's retries
        emu.control.add_fault(k.download_op, fault, count=times, flavor=provider.name)
        with pytest.raises(TransientError):
            provider.download(status, tmp_path)
        emu.control.clear_faults()
    [output, *_] = provider.download(status, tmp_path)  # fetched again, whole
    assert output.kind == "output" and len(list(read_lines([output]))) == 40 + padding(provider, 40)


# -- submit ----------------------------------------------------------------------------------


def test_submit_journals_each_step_and_creates_a_batch_it_can_prove(
    provider: Provider, target: Target, emu: RunningEmulator, account: Account, tmp_path: Path
) -> None:
    it = intent(provider, tmp_path, 42)
    journal = Journal()
    emu.control.clear_calls()
    ref = provider.submit(it, journal)

    if not target.uploads:
        assert journal.steps == ["creating", "sending"] and ref.input_file_id is None
        assert steps(emu) == ["create"]
    else:
        file_id = ref.input_file_id
        assert file_id and journal.steps == [
            "uploading",
            ("uploaded", file_id),
            "creating",
            "sending",
        ]
        assert steps(emu) == ["upload", "create"]
        assert account.input_file(ref.provider_batch_id) == file_id
        assert account.file_name(file_id) == f"llmbatch-{STORE}-42-{NONCE}.jsonl"
    # how the batch proves itself ours: its metadata, its name, or its custom ids
    if isinstance(account, OpenAIAccount):
        meta = account.metadata(ref.provider_batch_id)
        assert meta in (None, {}, it.metadata)  # kept where the provider keeps metadata
        if provider.name == "openai":
            assert meta == {
                "llmbatch_store": STORE,
                "llmbatch_intent": "42",
                "llmbatch_nonce": NONCE,
            }
    elif isinstance(account, GeminiAccount):
        assert account.display_name(ref.provider_batch_id) == f"llmbatch-{STORE}-42-{NONCE}"
    else:
        assert isinstance(account, AnthropicAccount)
        finish(emu, ref.provider_batch_id)
        first = next(iter(account.sdk.messages.batches.results(ref.provider_batch_id)))
        assert first.custom_id.startswith(f"{STORE}-{NONCE}-42")


def test_submit_with_a_recorded_upload_only_creates(
    provider: Provider, target: Target, emu: RunningEmulator, account: Account, tmp_path: Path
) -> None:
    """A recorded upload is used, never sent again (nor inline instead)."""
    it = intent(provider, tmp_path, 7)
    file_id = account.upload(it)
    journal = Journal()
    emu.control.clear_calls()
    ref = provider.submit(dataclasses.replace(it, input_file_id=file_id), journal)
    assert journal.steps == ["creating", "sending"]
    assert [s for s in steps(emu) if s in ("upload", "create")] == ["create"]
    assert ref.input_file_id == file_id
    assert account.input_file(ref.provider_batch_id) == file_id


def test_a_recorded_upload_the_provider_let_expire_is_uploaded_again(
    provider: Provider, emu: RunningEmulator, account: Account, tmp_path: Path
) -> None:
    ttl = kind(provider.name).upload_ttl
    if ttl is None:
        pytest.skip(f"{provider.name}: uploads are kept until deleted")
    later = intent(provider, tmp_path, 8)
    old = account.upload(later)
    emu.control.advance(ttl + HOUR)
    journal = Journal()
    ref = provider.submit(dataclasses.replace(later, input_file_id=old), journal)
    assert ref.input_file_id and ref.input_file_id != old
    assert journal.steps == ["uploading", ("uploaded", ref.input_file_id), "creating", "sending"]
    assert finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert status.state == "completed"
    # Expired with its file gone (the engine always writes it): nothing to upload, said so.
    gone = dataclasses.replace(later, input_file_id=old, path=tmp_path / "gone.jsonl")
    with pytest.raises(RejectedError, match="expired"):
        provider.submit(gone, Journal())


def test_a_full_queue_is_a_token_limit_not_a_fault_of_the_requests(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    """The enqueued-token quota is full: the create is refused (Gemini), or the batch fails
    validation (OpenAI, Azure), saying token_limit_exceeded either way."""
    door = kind(provider.name).quota
    if door is None:
        pytest.skip(f"{provider.name}: no enqueued-token quota at the emulator")
    emu.control.set_quotas(**{door: {kind(provider.name).model: 1}})
    try:
        ref = submit(provider, intent(provider, tmp_path, 1))
    except RejectedError as exc:
        assert "token_limit_exceeded" in str(exc)
    else:
        finish(emu, ref.provider_batch_id)
        [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
        assert status.state == "failed"
        assert "token_limit_exceeded" in str(status.errors)
    finally:
        emu.control.set_quotas(**{door: {}})


# -- reconcile -------------------------------------------------------------------------------


def test_reconcile_finds_our_batches_and_uploads_and_nothing_else(
    provider: Provider, target: Target, emu: RunningEmulator, account: Account, tmp_path: Path
) -> None:
    since = emu.control.now() - 1
    uploads = target.uploads
    files = 3 if uploads and provider.name != "gemini" else 0  # Gemini seeds batches only
    emu.control.seed(provider.name, files=files, batches=3)  # another app's
    by_file, by_tag, uploaded, never_sent, copied = (
        dataclasses.replace(it, created_at=since)
        for it in (
            intent(provider, tmp_path, 1),
            intent(provider, tmp_path, 2),
            intent(provider, tmp_path, 3),
            intent(provider, tmp_path, 4),
            intent(provider, tmp_path, 5, nonce="feedf00d"),  # a copy's intent 5
        )
    )
    ref_file = submit(provider, by_file)
    ref_tag = submit(provider, by_tag)
    upload_id = account.upload(uploaded) if uploads else None
    # Another store's intents with the same local ids: its batch, and its lone upload; and a
    # batch carrying our store id and intent 5 under another nonce (the original of a copy).
    submit(provider, intent(provider, tmp_path, 2, store_id=OTHER_STORE))
    if uploads:
        account.upload(intent(provider, tmp_path, 4, store_id=OTHER_STORE))
    submit(provider, intent(provider, tmp_path, 5))  # its custom ids carry NONCE too
    emu.control.seed(provider.name, files=files, batches=3)
    if provider.name == "anthropic":  # a running Message Batch proves nothing until it ends
        emu.control.advance(HOUR)
        for ref in (ref_file, ref_tag):
            emu.control.wait(ref.provider_batch_id, timeout=30)

    asked = [
        dataclasses.replace(by_file, input_file_id=ref_file.input_file_id),
        by_tag,  # the crash came before its upload was recorded
        uploaded,
        never_sent,
        copied,
    ]
    found = provider.reconcile(asked, since)

    assert found[1] == BatchRef(ref_file.provider_batch_id, ref_file.input_file_id)
    assert found[2] in (
        BatchRef(ref_tag.provider_batch_id, ref_tag.input_file_id),
        BatchRef("", ref_tag.input_file_id),  # no metadata kept: its upload, by its name
    )
    if uploads:
        assert found[3] == BatchRef("", upload_id)  # uploaded, never created
    mine = {1, 2, 3} if uploads else {1, 2}
    assert set(found) >= mine
    # an intent nothing proves yet may wait (a running Message Batch of its size), never
    # take a batch that is not its own
    assert all(found[i] == BatchRef("", pending=True) for i in set(found) - mine)
    assert provider.reconcile(asked[:1], since, frozenset({ref_file.provider_batch_id})) == {}
    assert provider.reconcile([], since) == {}

    # what each batch it could judge carries: our tag, or nothing (judged foreign)
    tagged = {s.provider_batch_id: s.metadata for s in provider.list_tagged(STORE, since)}
    assert tagged[ref_file.provider_batch_id] and tagged[ref_tag.provider_batch_id]
    assert all(meta["llmbatch_store"] == STORE for meta in tagged.values() if meta)
    if uploads:
        assert (upload_id, 3, NONCE) in provider.stray_uploads(STORE, since)


def test_reconcile_looks_no_further_back_than_since(
    provider: Provider, target: Target, emu: RunningEmulator, account: Account, tmp_path: Path
) -> None:
    created = intent(provider, tmp_path, 1)
    ref = submit(provider, created)
    uploaded = intent(provider, tmp_path, 2)
    if target.uploads:
        account.upload(uploaded)
    later = emu.control.advance(1000)  # beyond the 300 s a provider's clock may lag ours
    if provider.name == "anthropic":
        emu.control.wait(ref.provider_batch_id, timeout=30)
    asked = [dataclasses.replace(created, input_file_id=ref.input_file_id), uploaded]
    now = [dataclasses.replace(it, created_at=later) for it in asked]
    assert provider.reconcile(now, since=later - 10) == {}
    earlier = [dataclasses.replace(it, created_at=later - 2000) for it in asked]
    want = {1, 2} if target.uploads else {1}
    assert set(provider.reconcile(earlier, since=later - 2000)) == want


def test_reconcile_takes_a_batch_only_once_it_is_proven_ours(
    provider: Provider, target: Target, emu: RunningEmulator, tmp_path: Path
) -> None:
    """A batch whose create answer was lost, at a provider that cannot tell whose a running
    batch is (a running Message Batch): reconcile answers pending, to the intent and to a
    copy of the store's same intent alike, never adopting it on its size (which took another
    store's batch: issue 15). Ended, the batch is the intent's; never the copy's (another
    nonce), nor another intent's, nor one already recorded. A provider whose running batch
    says whose it is does all this in test_reconcile_finds_our_batches_and_uploads_and_
    nothing_else. (Folded from tests/e2e/test_anthropic_engine.py.)"""
    if kind(provider.name).proves_running:
        pytest.skip(f"{target.name}: a running batch proves itself (the reconcile case above)")
    since = emu.control.now() - 1
    it = dataclasses.replace(intent(provider, tmp_path, 1), created_at=since)
    ref = submit(provider, it)
    it = dataclasses.replace(it, input_file_id=ref.input_file_id)  # as the engine records it
    # the same intent in a copy of the store, by its proof alone (a recorded upload is the
    # store's own: a copy holding one is frozen until told, test_ownership.py)
    copy = dataclasses.replace(it, nonce="ffffffff", input_file_id=None)
    mine = BatchRef(ref.provider_batch_id, ref.input_file_id)
    assert provider.reconcile([it], since)[1] == BatchRef("", pending=True)
    assert provider.reconcile([copy], since)[1] == BatchRef("", pending=True)
    finish(emu, ref.provider_batch_id)
    assert provider.reconcile([it], since)[1] == mine
    fresh = make_provider(target.name, **emulator_settings(target.name, emu.url), **target.options)
    assert fresh.reconcile([copy], since) == {}  # ended and read: not the copy's, no wait
    other = dataclasses.replace(intent(provider, tmp_path, 2, n=4), created_at=since)
    assert provider.reconcile([other], since) == {}
    assert provider.reconcile([it], since, frozenset({ref.provider_batch_id})) == {}


# -- poll ------------------------------------------------------------------------------------


def test_poll_normalises_statuses_in_one_list_call(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    emu.control.seed(provider.name, batches=5)
    refs = [submit(provider, intent(provider, tmp_path, i, n=2 + i)) for i in range(3)]
    emu.control.seed(provider.name, batches=5)
    ids = [r.provider_batch_id for r in refs]

    emu.control.clear_calls()
    statuses = provider.poll(ids, retrieve_budget=2)
    assert steps(emu) == ["list"]
    assert sorted(s.provider_batch_id for s in statuses) == sorted(ids)
    files = {r.provider_batch_id: r.input_file_id for r in refs}
    for s in statuses:
        assert s.state in STATES and not s.ended and s.output_file_id is None
        assert s.input_file_id == files[s.provider_batch_id]

    finish(emu, ids[2])
    by_id = {s.provider_batch_id: s for s in provider.poll(ids, retrieve_budget=2)}
    done = by_id[ids[2]]
    size = 4 + padding(provider, 4) if counts(provider) else 0
    assert (done.state, done.total, done.completed) == ("completed", size, size)
    assert done.provider_status and done.ended and done.output_file_id and done.errors == []
    assert isinstance(done.created_at, float)


def test_poll_finds_a_batch_pushed_off_the_list_pages_within_budget(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    ref = submit(provider, intent(provider, tmp_path, 1))
    emu.control.seed(provider.name, batches=kind(provider.name).seed_pages)  # newer: they fill
    budget = 1  # the pages poll reads

    emu.control.clear_calls()
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=budget)
    log = steps(emu)
    assert status.provider_batch_id == ref.provider_batch_id and status.state in STATES
    assert set(log) <= {"list", "get"} and log.count("get") <= budget
    assert log.count("list") <= 3, log
    paths = [c["path"] for c in emu.control.calls() if c["method"] == "GET"]
    assert all(ref.provider_batch_id in p for p, s in zip(paths, log, strict=True) if s == "get")


def test_a_batch_that_failed_says_why(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    if not kind(provider.name).fails_whole:
        pytest.skip(f"{provider.name}: a batch never fails as a whole (a bad request errors)")
    bad = {"code": "invalid_request", "message": "the input's line 2 is bad", "line": 2}
    emu.control.next_batches(1, fail_validation=bad)
    ref = submit(provider, intent(provider, tmp_path, 1))
    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert status.state == "failed" and status.ended
    assert "line 2" in status.errors[0]["message"]


def test_results_the_provider_archived_are_gone_for_good(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    """A provider that archives results some time after the batch ended (Anthropic: 29 days,
    the batch kept with `archived_at` set) says so: ResultsGone, which the engine decides by
    its `archived` setting (test_engine_kinds.py). (Folded from
    tests/e2e/test_anthropic_engine.py.)"""
    after = kind(provider.name).archives_after
    if after is None:
        pytest.skip(f"{provider.name}: results are kept while their batch or files are")
    ref = submit(provider, intent(provider, tmp_path, 1))
    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert status.ended
    emu.control.advance(after + HOUR)
    with pytest.raises(ResultsGone, match="archived"):
        provider.download(status, tmp_path)


# -- cancel and clean-up ---------------------------------------------------------------------


def test_cancel_winds_a_held_batch_down(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    emu.control.next_batches(1, hold="validating")
    ref = submit(provider, intent(provider, tmp_path, 1))
    provider.cancel(ref.provider_batch_id)
    # Gemini's cancel is asynchronous (the batch keeps its state until the service acts on
    # it; the emulator's worker thread does, a moment later on a loaded machine): wait for it.
    deadline = time.monotonic() + 30
    while True:
        [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
        if status.state in ("cancelling", "cancelled") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status.state in ("cancelling", "cancelled")
    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert status.state == "cancelled" and status.ended
    files = provider.download(status, tmp_path)
    assert [f for f in findings(provider, files).values() if f.ok] == []  # nothing ran
    with pytest.raises(RejectedError, match=r"40[09]"):  # nothing left to cancel
        provider.cancel(ref.provider_batch_id)


def test_clean_up_deletes_what_it_is_given_and_tolerates_it_gone(
    provider: Provider, emu: RunningEmulator, account: Account, tmp_path: Path
) -> None:
    """The engine's clean-up of an ingested batch: its input, output and error files (where
    the results are the batch, the batch)."""
    ref = submit(provider, intent(provider, tmp_path, 1))
    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    ids = [f for f in (status.input_file_id, status.output_file_id, status.error_file_id) if f]
    assert ids and all(account.exists(i) for i in ids)
    provider.delete_files(ids)
    assert not any(account.exists(i) for i in ids)
    provider.delete_files([*ids, *kind(provider.name).never])


# -- errors ----------------------------------------------------------------------------------


def test_a_missing_key_is_an_auth_error_before_any_call(
    any_name: str, emu: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = any_name
    monkeypatch.setenv(KEY_ENV, "  ")
    provider = make_provider(name, **emulator_settings(name, emu.url))
    emu.control.clear_calls()
    with pytest.raises(AuthError, match=KEY_ENV):
        provider.poll(["batch_x"], retrieve_budget=1)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(AuthError, match=KEY_ENV):
        submit(provider, intent(provider, tmp_path, 1))
    assert emu.control.calls() == []


# A provider's key variable when its settings name none, and any it falls back to.
FALLBACK_KEY_ENVS = {"gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY")}


def test_without_api_key_env_the_providers_own_variable_is_read(
    any_name: str, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = {k: v for k, v in emulator_settings(any_name, emu.url).items() if k != "api_key_env"}
    default: Any = make_provider(any_name, **where)
    envs = FALLBACK_KEY_ENVS.get(any_name, (default.settings.api_key_env,))
    assert envs[0] == default.settings.api_key_env and envs[0].endswith("_API_KEY")
    for env in envs:
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(AuthError, match=envs[0]):
        default.poll(["x"], retrieve_budget=1)
    monkeypatch.setenv(envs[-1], KEY)  # the last one it falls back to
    assert make_provider(any_name, **where).poll([], retrieve_budget=0) == []


def test_a_refused_key_is_an_auth_error_that_never_shows_the_key(
    any_name: str, refusing: RefusingService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = any_name
    monkeypatch.setenv(KEY_ENV, KEY)
    provider = make_provider(name, **emulator_settings(name, refusing.url))
    calls: list[Any] = [
        lambda: submit(provider, intent(provider, tmp_path, 1)),
        lambda: provider.poll(["batch_x"], retrieve_budget=1),
        lambda: provider.cancel("batch_x"),
    ]
    for call in calls:
        with pytest.raises(AuthError, match=rf"401.*\${KEY_ENV}") as caught:
            call()
        shown = f"{caught.value} {caught.value!r} {caught.value.__cause__!r} {caught.value.args}"
        assert KEY not in shown and KEY[:12] not in shown
    assert len(refusing.seen) == 3  # refused once each, never retried


@pytest.mark.parametrize(
    ("step", "fault", "retry_after"),
    [
        ("upload", "503", None),
        ("create", "500", None),
        ("create", "429", 7.0),
    ],
)
def test_outages_and_rate_limits_are_transient(
    provider: Provider,
    target: Target,
    emu: RunningEmulator,
    tmp_path: Path,
    step: str,
    fault: str,
    retry_after: float | None,
) -> None:
    k = kind(provider.name)
    if step == "upload" and not target.uploads:
        pytest.skip(f"{target.name}: these requests go inline, there is no upload to fail")
    op = k.upload_op if step == "upload" else k.create_op
    fields = {"retry_after": retry_after} if retry_after else {}
    emu.control.add_fault(op, fault, count=1, flavor=provider.name, **fields)
    with pytest.raises(TransientError, match=fault) as caught:
        submit(provider, intent(provider, tmp_path, 1))
    assert caught.value.retry_after == retry_after
    assert KEY not in str(caught.value)


class FrozenJournal(Journal):
    """A worker frozen for 1,000 s right after journaling its create and checking its lease
    (SIGSTOP, a GC pause): judged as the engine does (submission.py), on a clock that jumped."""

    send_within = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def creating(self) -> None:
        super().creating()
        self.stamped_at, self.now = self.now, self.now + 1000.0

    def sending(self) -> None:
        super().sending()
        if self.now - self.stamped_at > self.send_within:
            raise TransientError("create not sent: held past its send window")


def creates_seen(emu: RunningEmulator) -> int:
    """Every create the service saw (OpenAI's shape, Anthropic's, Gemini's), answered or not."""
    return sum(
        1
        for c in emu.control.calls()
        if c["method"] == "POST"
        and (
            c["path"].rstrip("/").endswith("/batches")
            or c["path"].endswith(":batchGenerateContent")
        )
    )


def test_a_create_held_past_its_send_window_is_never_sent(
    any_name: str, emu: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker held between journaling a create and sending it may have lost its lease to a
    standby that, the answer unseen in a lagging list, created the batch already: the
    journal refuses it from the request hook and the create never reaches the service (it
    did, on OpenAI-shaped and Anthropic providers: a double create in the crash matrix).
    The intent is then sent once, as the engine's retry would after reconciling."""
    monkeypatch.setenv(KEY_ENV, KEY)
    provider = make_provider(any_name, **emulator_settings(any_name, emu.url))
    it = intent(provider, tmp_path, 1)
    emu.control.clear_calls()
    frozen = FrozenJournal()
    with pytest.raises(TransientError, match="create not sent") as caught:
        provider.submit(it, frozen)
    assert KEY not in str(caught.value)
    assert frozen.steps[-2:] == ["creating", "sending"]  # asked right before it would leave
    assert creates_seen(emu) == 0, "a create held past its send window reached the service"
    uploaded = next((s[1] for s in frozen.steps if isinstance(s, tuple)), None)
    retried = dataclasses.replace(it, input_file_id=uploaded)
    journal = Journal()
    ref = provider.submit(retried, journal)  # in time: sent, once
    assert ref.provider_batch_id and journal.steps[-2:] == ["creating", "sending"]
    assert creates_seen(emu) == 1


def test_a_request_refused_for_good_is_rejected(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    k = kind(provider.name)
    with pytest.raises(RejectedError, match=k.refused_status):
        submit(provider, k.refused(intent(provider, tmp_path, 1)))
    with pytest.raises(RejectedError, match="404"):
        provider.cancel(k.never[-1])


def test_without_its_sdk_the_provider_is_one_line_naming_the_extra(
    any_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = kind(any_name).extra
    if extra is None:
        pytest.skip(f"{any_name}: its SDK is a dependency of llmbatch itself, not an extra")
    sdk_module, provider_module, package, name = extra
    monkeypatch.setitem(sys.modules, sdk_module, None)  # as if not installed
    monkeypatch.delitem(sys.modules, provider_module, raising=False)
    with pytest.raises(ConfigError) as caught:
        importlib.import_module(provider_module)
    assert str(caught.value) == (
        f"provider {any_name!r} needs the {package} package: pip install 'llmbatch[{name}]'"
    )


# -- format round trips ----------------------------------------------------------------------
# Every registered provider's format, at unit speed: a request made from the Python API's
# item, packed into its batch line, read back as the provider reads it; a result line for
# that attempt read into a Finding, then written as the results envelope. The custom id, the
# body and the usage must come through unchanged. A format speaking the OpenAI or Anthropic
# shape is covered by what it subclasses; any other names its shape in SHAPES (the test fails
# for a registered provider that has none).


@dataclass(frozen=True)
class Shape:
    """How a provider's request bodies and result lines look, for the round trips."""

    model: str
    body: Callable[[str, str, int], dict[str, Any]]  # model, prompt, max tokens -> body
    response: Callable[[str, str, int, int], dict[str, Any]]  # model, text, in, out -> body
    result: Callable[[str, dict[str, Any]], dict[str, Any]]  # custom id, response -> line
    # custom id, transient (a retry may succeed) or not, message -> an error result line
    error: Callable[[str, bool, str], dict[str, Any]]

    def text_of(self, fmt: Format, response: dict[str, Any]) -> str:
        return fmt.output_text(response)


OPENAI_SHAPE = Shape(
    "gpt-4o-mini",
    lambda model, prompt, n: {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_completion_tokens": n,
    },
    lambda model, text, i, o: {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o},
    },
    lambda cid, response: {
        "id": "batch_req_1",
        "custom_id": cid,
        "response": {"status_code": 200, "request_id": "req_1", "body": response},
        "error": None,
    },
    lambda cid, transient, message: {
        "id": "batch_req_1",
        "custom_id": cid,
        "response": {
            "status_code": 500 if transient else 400,
            "request_id": "req_1",
            "body": {
                "error": {
                    "message": message,
                    "type": "server_error" if transient else "invalid_request_error",
                    "param": None,
                    "code": "server_error" if transient else "invalid_request_error",
                }
            },
        },
        "error": None,
    },
)
ANTHROPIC_SHAPE = Shape(
    "claude-3-5-haiku-latest",
    lambda model, prompt, n: {
        "model": model,
        "max_tokens": n,
        "messages": [{"role": "user", "content": prompt}],
    },
    lambda model, text, i, o: {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": i, "output_tokens": o},
    },
    lambda cid, response: {
        "custom_id": cid,
        "result": {"type": "succeeded", "message": response},
    },
    lambda cid, transient, message: {
        "custom_id": cid,
        "result": {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {
                    "type": "overloaded_error" if transient else "not_found_error",
                    "message": message,
                },
            },
        },
    },
)
SHAPES: dict[str, Shape] = {
    "gemini": Shape(  # {"key", "request"} lines, `usageMetadata`
        "gemini-2.5-flash",
        lambda model, prompt, n: {
            "model": model,
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": {"maxOutputTokens": n},
        },
        lambda model, text, i, o: {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
            ],
            "usageMetadata": {
                "promptTokenCount": i,
                "candidatesTokenCount": o,
                "totalTokenCount": i + o,
            },
            "modelVersion": model,
            "responseId": "resp-1",
        },
        lambda cid, response: {"key": cid, "response": response},
        lambda cid, transient, message: {
            "key": cid,
            "error": {
                "code": 500 if transient else 400,
                "message": message,
                "status": "INTERNAL" if transient else "INVALID_ARGUMENT",
            },
        },
    ),
}


def shape_of(name: str) -> Shape:
    fmt = format_of(name)
    if isinstance(fmt, OpenAIFormat):
        return OPENAI_SHAPE
    if isinstance(fmt, AnthropicFormat):
        return ANTHROPIC_SHAPE
    if name not in SHAPES:
        pytest.fail(f"provider {name!r} has no shape in the format round trips: add it to SHAPES")
    return SHAPES[name]


PROMPTS = st.text(min_size=1, max_size=300)  # any Unicode: quotes, escapes, emoji, NUL
USER_IDS = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)


@pytest.mark.parametrize("name", sorted(available()))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    custom_id=USER_IDS,
    prompt=PROMPTS,
    reply=PROMPTS,
    max_tokens=st.integers(1, 8192),
    attempt=st.integers(1, 10**15),
    nonce=st.none() | st.from_regex(r"[0-9a-f]{8}", fullmatch=True),
    tokens_in=st.integers(0, 2_000_000),
    tokens_out=st.integers(0, 200_000),
)
def test_a_request_and_its_result_come_back_whole_through_the_format(
    name: str,
    custom_id: str,
    prompt: str,
    reply: str,
    max_tokens: int,
    attempt: int,
    nonce: str | None,
    tokens_in: int,
    tokens_out: int,
) -> None:
    fmt, shape, provider = format_of(name), shape_of(name), make_provider(name)
    id_field = getattr(fmt, "id_field", "custom_id")
    body = shape.body(shape.model, prompt, max_tokens)

    # the Python API's item -> a request
    request = fmt.item(custom_id, body, None, name)
    assert request.custom_id == custom_id and request.provider == name
    assert orjson.loads(request.body) == body

    # -> the line packed into the batch, read back as an input line in the provider's shape
    sent_as = custom_id_of(STORE, nonce, attempt)
    line = orjson.loads(provider.request_line(sent_as, request.endpoint, request.body))
    assert line[id_field] == sent_as
    again = fmt.parse(sent_as, line, name)
    assert (again.body, again.endpoint, again.model) == (
        request.body,
        request.endpoint,
        request.model,
    )

    # a result line for that attempt -> a finding
    response = shape.response(shape.model, reply, tokens_in, tokens_out)
    result_line = orjson.dumps(shape.result(sent_as, response))
    found = parse_result_line(result_line, attempt_prefix(STORE, nonce), request.endpoint, fmt)
    assert found.attempt_id == attempt and found.ok and found.body is not None
    assert orjson.loads(found.body) == response
    assert (found.input_tokens, found.output_tokens) == (tokens_in, tokens_out)
    assert found.usage is not None
    assert (found.usage.input, found.usage.output) == (tokens_in, tokens_out)
    assert shape.text_of(fmt, orjson.loads(found.body)) == reply

    # -> the results envelope, under the user's custom id
    row = ResultRow(
        1, custom_id, "succeeded", name, found.status_code, found.provider_request_id,
        found.body, None, None, found.input_tokens, found.output_tokens, attempt,
    )  # fmt: skip
    envelope = orjson.loads(jsonl_line(row, STORE))
    assert envelope["custom_id"] == custom_id and envelope["provider"] == name
    assert envelope["response"]["status_code"] == 200 and envelope["error"] is None
    assert envelope["response"]["body"] == response
