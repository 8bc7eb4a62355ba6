"""The Provider contract: every registered provider, run unchanged against the emulator.

Each test gets a real provider from `make_provider` (the entry point group a plugin would use)
pointed at one emulator over real HTTP with the official SDK, and a fresh emulator state.
A separate plain SDK client (`sdk`) looks at what the provider did, and the emulator's call log
counts the HTTP calls it made. The clock stands still (`time_scale=0`) unless a test advances it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import RefusingService
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
from llmbatch.providers.base import read_lines
from llmbatch.providers.compatible import SHIPPED
from llmbatch.providers.openai_format import OpenAIFormat
from llmbatch.results import parse_line as parse_result_line
from llmbatch.store.base import ResultRow

KEY_ENV = "LLMBATCH_CONTRACT_TEST_KEY"
KEY = "sk-contract-0123456789-not-a-secret"
STORE = "lbc0ffee0001"
OTHER_STORE = "lbdeadbeef02"
ENDPOINT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"  # the emulator's default Azure deployments are named like the models
MODELS = {"gemini": "gemini-2.5-flash"}  # the model of an intent, where MODEL is not served
STATES = {
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
    "cancelled",
}  # fmt: skip


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


# The tests below that look at the provider's files and batches with a plain OpenAI SDK
# client (`sdk`), or fault its `files.*` calls, run on the providers with the OpenAI batch
# surface: Anthropic Message Batches have no files and no metadata (their proof runs in
# tests/contract/test_ownership.py, their format in tests/e2e/test_anthropic_engine.py), and
# Gemini's files and batches speak Google's shape (tests/contract/test_gemini_provider.py).
# What every provider has (a key, refused or missing) runs on every registered one (`any_name`).
@pytest.fixture(params=sorted(set(available()) - {"anthropic", "gemini"}))
def name(request: pytest.FixtureRequest, emu: RunningEmulator) -> str:
    emu.control.reset()
    return str(request.param)


@pytest.fixture(params=sorted(available()))
def any_name(request: pytest.FixtureRequest, emu: RunningEmulator) -> str:
    emu.control.reset()
    return str(request.param)


@pytest.fixture
def provider(name: str, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Provider:
    monkeypatch.setenv(KEY_ENV, KEY)
    return make_provider(name, **emulator_settings(name, emu.url))


@pytest.fixture
def sdk(name: str, emu: RunningEmulator) -> openai.OpenAI:
    """A plain SDK client on the same account, to see what the provider did."""
    if name == "azure":
        return openai.AzureOpenAI(azure_endpoint=emu.url, api_key="k", api_version="2024-10-21")
    if name in SHIPPED:
        return openai.OpenAI(base_url=f"{emu.url}/compatible/{name}/v1", api_key="k")
    return openai.OpenAI(base_url=emu.base_url, api_key="k")


def counts(provider: Provider) -> bool:
    """Whether the service reports request counts (a "job" object gives a percentage only)."""
    return not (provider.name in SHIPPED and SHIPPED[provider.name].job_object)


def padding(provider: Provider) -> int:
    """Requests added to a test's batch so that it reaches the service's minimum (Cerebras
    takes no batch under 10); they come after the test's own and all succeed."""
    return max(0, provider.limits(ENDPOINT, MODEL).min_requests - 4)


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


def chat(i: int, content: Any = None) -> bytes:
    messages = [{"role": "user", "content": f"question {i}: why?"}] if content is None else content
    return orjson.dumps({"model": MODEL, "messages": messages, "max_completion_tokens": 20})


def intent(
    provider: Provider,
    folder: Path,
    batch_id: int,
    *,
    store_id: str = STORE,
    n: int = 3,
    endpoint: str = ENDPOINT,
    bodies: list[bytes] | None = None,
) -> Intent:
    """A packed batch file written by hand, custom ids `<store_id>-<n>`, padded up to the
    service's smallest batch."""
    bodies = bodies or [chat(i) for i in range(n)]
    least = provider.limits(endpoint, MODEL).min_requests
    bodies += [chat(100 + i) for i in range(least - len(bodies))]
    path = folder / f"{store_id}-{batch_id}.jsonl"
    lines = [
        provider.request_line(f"{store_id}-{batch_id * 1000 + i}", endpoint, body)
        for i, body in enumerate(bodies)
    ]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    model = MODELS.get(provider.name, MODEL)
    return Intent(batch_id, store_id, endpoint, model, path, len(lines), created_at=0.0)


def upload(sdk: openai.OpenAI, it: Intent, name: str) -> str:
    """An upload made as the provider would, without the batch (a crash after upload)."""
    purpose: Any = SHIPPED[name].file_purpose if name in SHIPPED else "batch"
    with open(it.path, "rb") as fh:
        return sdk.files.create(file=(it.file_name, fh, "application/jsonl"), purpose=purpose).id


def submit(provider: Provider, it: Intent) -> BatchRef:
    return provider.submit(it, Journal())


def finish(emu: RunningEmulator, batch_id: str) -> dict[str, Any]:
    emu.control.advance(3600)
    return emu.control.wait(batch_id, timeout=10)


def api_calls(emu: RunningEmulator) -> list[tuple[str, str]]:
    """(operation, path) of every API call since the log was cleared."""
    out = []
    for c in emu.control.calls():
        path = c["path"].rstrip("/")
        tail = path.split("/")
        kind = tail[-1] if tail[-1] in ("batches", "files") else tail[-2] + "/id"
        out.append((f"{c['method']} {kind}", path))
    return out


# -- limits, grouping, request lines ---------------------------------------------------------


def test_every_built_in_provider_is_registered() -> None:
    assert {"openai", "azure", "anthropic"} <= set(available())


def test_limits_and_group_key_are_sane(provider: Provider, emu: RunningEmulator) -> None:
    for endpoint, model in ((ENDPOINT, MODEL), ("/v1/embeddings", "text-embedding-3-small")):
        limits = provider.limits(endpoint, model)
        assert 1_000 <= limits.max_requests <= 100_000
        assert 1024 * 1024 <= limits.max_bytes <= 200 * 1024 * 1024  # the emulator's file cap
        assert limits.max_inputs is None or 1 <= limits.max_inputs <= 50_000
    key = provider.group_key(ENDPOINT, MODEL)
    assert key == provider.group_key(ENDPOINT, MODEL)
    assert all(isinstance(part, str) for part in key) and provider.name in key
    assert key != provider.group_key(ENDPOINT, "gpt-4.1-nano")
    assert key != provider.group_key("/v1/embeddings", MODEL)


def test_request_lines_are_accepted_and_results_download(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    bad = chat(9, content="not a list")  # the endpoint rejects it: an error line
    it = intent(provider, tmp_path, 1, bodies=[chat(0), chat(1), chat(2), bad])
    first = orjson.loads(it.path.read_bytes().splitlines()[0])
    assert first["custom_id"] == f"{STORE}-1000" and first["body"]["model"] == MODEL
    if provider.name in SHIPPED and SHIPPED[provider.name].line_shape == "custom_id_body":
        assert set(first) == {"custom_id", "body"}
    else:
        assert first["method"] == "POST"
        assert first["url"] == ("/chat/completions" if provider.name == "azure" else ENDPOINT)
    pad = padding(provider)
    ref = submit(provider, it)

    batch = finish(emu, ref.provider_batch_id)
    assert batch["status"] == "completed", batch["errors"]
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert status.state == "completed"
    if counts(provider):
        assert (status.total, status.completed, status.failed) == (4 + pad, 3 + pad, 1)
    assert status.output_file_id and status.error_file_id and status.ended

    out = tmp_path / "results"
    out.mkdir()
    files = provider.download(status, out)
    assert {f.kind for f in files} == {"output", "error"}
    for f in files:
        assert f.path.parent == out and f.size == f.path.stat().st_size > 0
    lines = [(kind, orjson.loads(line)) for kind, line in read_lines(files)]
    by_kind = {k: sorted(obj["custom_id"] for kk, obj in lines if kk == k) for k, _ in lines}
    ok = sorted([f"{STORE}-100{i}" for i in range(3)] + [f"{STORE}-{1004 + i}" for i in range(pad)])
    assert by_kind == {"output": ok, "error": [f"{STORE}-1003"]}


def test_a_dropped_or_failed_download_is_transient(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    ref = submit(provider, intent(provider, tmp_path, 1, n=40))
    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    emu.control.add_fault("files.content", "drop", count=1, flavor=provider.name)
    with pytest.raises(TransientError, match=status.provider_batch_id + "|broke"):
        provider.download(status, tmp_path)
    emu.control.add_fault("files.content", "503", count=3, flavor=provider.name)
    with pytest.raises(TransientError, match="503"):
        provider.download(status, tmp_path)
    emu.control.clear_faults()
    [output, *_] = provider.download(status, tmp_path)  # fetched again, whole
    assert output.kind == "output" and len(list(read_lines([output]))) == 40


# -- submit ----------------------------------------------------------------------------------


def test_submit_journals_each_step_and_creates_a_batch_we_recognise(
    provider: Provider, emu: RunningEmulator, sdk: openai.OpenAI, tmp_path: Path
) -> None:
    it = intent(provider, tmp_path, 42)
    journal = Journal()
    emu.control.clear_calls()
    ref = provider.submit(it, journal)

    file_id = ref.input_file_id
    assert file_id and journal.steps == ["uploading", ("uploaded", file_id), "creating", "sending"]
    assert [op for op, _ in api_calls(emu)] == ["POST files", "POST batches"]
    batch = sdk.batches.retrieve(ref.provider_batch_id)
    assert batch.input_file_id == file_id
    assert batch.metadata in (None, {}, it.metadata)  # kept where the provider keeps metadata
    if provider.name == "openai":
        assert batch.metadata == {"llmbatch_store": STORE, "llmbatch_intent": "42"}
    assert sdk.files.retrieve(file_id).filename == f"llmbatch-{STORE}-42.jsonl"


def test_submit_with_a_recorded_upload_only_creates(
    provider: Provider, emu: RunningEmulator, sdk: openai.OpenAI, tmp_path: Path
) -> None:
    it = intent(provider, tmp_path, 7)
    file_id = upload(sdk, it, provider.name)
    journal = Journal()
    emu.control.clear_calls()
    ref = provider.submit(dataclasses.replace(it, input_file_id=file_id), journal)
    assert journal.steps == ["creating", "sending"]
    assert [op for op, _ in api_calls(emu)] == ["POST batches"]
    assert ref.input_file_id == file_id
    assert sdk.batches.retrieve(ref.provider_batch_id).input_file_id == file_id


# -- reconcile -------------------------------------------------------------------------------


def test_reconcile_finds_our_batches_and_uploads_and_nothing_else(
    provider: Provider, emu: RunningEmulator, sdk: openai.OpenAI, tmp_path: Path
) -> None:
    since = emu.control.now() - 1
    emu.control.seed(provider.name, files=3, batches=3)  # another app in the same org
    by_file = intent(provider, tmp_path, 1)
    by_meta = intent(provider, tmp_path, 2)
    uploaded = intent(provider, tmp_path, 3)
    never_sent = intent(provider, tmp_path, 4)
    ref_file = submit(provider, by_file)
    ref_meta = submit(provider, by_meta)
    upload_id = upload(sdk, uploaded, provider.name)
    # Another store's intents with the same local ids: its batch, and its lone upload.
    submit(provider, intent(provider, tmp_path, 2, store_id=OTHER_STORE))
    upload(sdk, intent(provider, tmp_path, 4, store_id=OTHER_STORE), provider.name)
    emu.control.seed(provider.name, files=3, batches=3)

    asked = [
        dataclasses.replace(by_file, input_file_id=ref_file.input_file_id),
        by_meta,  # the crash came before its upload was recorded
        uploaded,
        never_sent,
    ]
    found = provider.reconcile(asked, since)

    assert found[1] == BatchRef(ref_file.provider_batch_id, ref_file.input_file_id)
    assert found[3] == BatchRef("", upload_id)  # uploaded, never created
    assert 4 not in found
    if sdk.batches.retrieve(ref_meta.provider_batch_id).metadata:
        assert found[2] == BatchRef(ref_meta.provider_batch_id, ref_meta.input_file_id)
    else:  # no metadata kept: its upload is recognised by name (and its batch by that upload)
        assert found[2] in (
            BatchRef(ref_meta.provider_batch_id, ref_meta.input_file_id),
            BatchRef("", ref_meta.input_file_id),
        )
    assert set(found) == {1, 2, 3}
    assert provider.reconcile([], since) == {}


def test_reconcile_looks_no_further_back_than_since(
    provider: Provider, emu: RunningEmulator, sdk: openai.OpenAI, tmp_path: Path
) -> None:
    created = intent(provider, tmp_path, 1)
    ref = submit(provider, created)
    uploaded = intent(provider, tmp_path, 2)
    upload(sdk, uploaded, provider.name)
    later = emu.control.advance(60)
    asked = [dataclasses.replace(created, input_file_id=ref.input_file_id), uploaded]
    assert provider.reconcile(asked, since=later - 10) == {}
    assert set(provider.reconcile(asked, since=later - 120)) == {1, 2}


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
    assert [op for op, _ in api_calls(emu)] == ["GET batches"]
    assert sorted(s.provider_batch_id for s in statuses) == sorted(ids)
    files = {r.provider_batch_id: r.input_file_id for r in refs}
    for s in statuses:
        assert s.state in STATES and not s.ended
        assert s.input_file_id == files[s.provider_batch_id] and s.output_file_id is None

    finish(emu, ids[2])
    by_id = {s.provider_batch_id: s for s in provider.poll(ids, retrieve_budget=2)}
    done = by_id[ids[2]]
    size = 4 + padding(provider) if counts(provider) else 0
    assert (done.state, done.provider_status.lower(), done.total, done.completed) == (
        "completed", "completed", size, size,
    )  # fmt: skip
    assert done.ended and done.output_file_id and done.errors == []
    assert isinstance(done.created_at, float)


def test_poll_finds_a_batch_pushed_off_the_first_page_within_budget(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    ref = submit(provider, intent(provider, tmp_path, 1))
    emu.control.seed(provider.name, batches=120)  # newer: they fill the first list page
    budget = 1

    emu.control.clear_calls()
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=budget)
    log = api_calls(emu)
    assert status.provider_batch_id == ref.provider_batch_id and status.state in STATES
    assert {op for op, _ in log} <= {"GET batches", "GET batches/id"}
    assert [op for op, _ in log].count("GET batches/id") <= budget
    assert 1 <= len(log) <= 1 + budget, log
    assert all(ref.provider_batch_id in path for op, path in log if op == "GET batches/id")


# -- cancel and clean-up ---------------------------------------------------------------------


def test_cancel_winds_a_held_batch_down(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    emu.control.next_batches(1, hold="validating")
    ref = submit(provider, intent(provider, tmp_path, 1))
    provider.cancel(ref.provider_batch_id)
    assert emu.control.batch(ref.provider_batch_id)["batch"]["status"] in (
        "cancelling",
        "cancelled",
    )
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert status.state in ("cancelling", "cancelled")
    finish(emu, ref.provider_batch_id)
    with pytest.raises(RejectedError, match="409"):  # nothing left to cancel
        provider.cancel(ref.provider_batch_id)


def test_delete_files_tolerates_files_already_gone(
    provider: Provider, emu: RunningEmulator, sdk: openai.OpenAI, tmp_path: Path
) -> None:
    ids = [upload(sdk, intent(provider, tmp_path, i), provider.name) for i in range(2)]
    provider.delete_files(ids)
    for file_id in ids:
        with pytest.raises(openai.NotFoundError):
            sdk.files.retrieve(file_id)
    provider.delete_files([*ids, "file-never-existed"])


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


# Each provider's emulator operation for a step, where it has the step.
STEP_OPS: dict[str, dict[str, str]] = {
    "anthropic": {"create": "messages.batches.create"},  # requests go inline: no upload
    # A 503 to Gemini's upload is retried below the provider (one fault is absorbed and the
    # submit goes through), so it never reaches the engine as transient: not checked here.
    "gemini": {"create": "batches.create"},
}
DEFAULT_OPS = {"upload": "files.create", "create": "batches.create"}


@pytest.mark.parametrize(
    ("step", "kind", "retry_after"),
    [
        ("upload", "503", None),
        ("create", "500", None),
        ("create", "429", 7.0),
    ],
)
def test_outages_and_rate_limits_are_transient(
    any_name: str,
    emu: RunningEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    kind: str,
    retry_after: float | None,
) -> None:
    op = STEP_OPS.get(any_name, DEFAULT_OPS).get(step)
    if op is None:
        pytest.skip(f"{any_name}: no {step} step whose fault reaches the provider (STEP_OPS)")
    monkeypatch.setenv(KEY_ENV, KEY)
    provider = make_provider(any_name, **emulator_settings(any_name, emu.url))
    fields = {"retry_after": retry_after} if retry_after else {}
    emu.control.add_fault(op, kind, count=1, flavor=provider.name, **fields)
    with pytest.raises(TransientError, match=kind) as caught:
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
    uploaded = dict(s for s in frozen.steps if isinstance(s, tuple)).get("uploaded")
    retried = dataclasses.replace(it, input_file_id=uploaded)
    journal = Journal()
    ref = provider.submit(retried, journal)  # in time: sent, once
    assert ref.provider_batch_id and journal.steps[-2:] == ["creating", "sending"]
    assert creates_seen(emu) == 1


def test_a_request_refused_for_good_is_rejected(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    with pytest.raises(RejectedError, match="400"):
        submit(provider, intent(provider, tmp_path, 1, endpoint="/v1/fine_tuning/jobs"))
    with pytest.raises(RejectedError, match="404"):
        provider.cancel("batch_does_not_exist")


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
