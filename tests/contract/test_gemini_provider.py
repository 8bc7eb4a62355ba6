"""The Provider contract for Gemini: the provider from `make_provider("gemini")` (the entry point
a plugin would use) against the emulator's Gemini door over real HTTP through the official
`google-genai` SDK, unmodified. test_providers.py runs the same contract on the OpenAI shape;
Gemini's files, batches and proof (displayName, result keys) are Google's own, so the cases
are written here in its terms. A plain SDK client (`sdk`) looks at what the provider did; the
emulator's call log counts its calls. The clock stands still unless a test advances it.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from google import genai
from google.genai import types

from helpers import RefusingService
from llmbatch.emulator import RunningEmulator, running
from llmbatch.errors import AuthError, ConfigError, RejectedError, TransientError
from llmbatch.providers import BatchRef, Intent, Provider, format_of, make_provider
from llmbatch.providers.base import read_lines
from llmbatch.results import parse_line

KEY_ENV = "LLMBATCH_CONTRACT_TEST_KEY"
KEY = "AIza-contract-0123456789-not-a-secret"
STORE = "lbc0ffee0001"
OTHER_STORE = "lbdeadbeef02"
ENDPOINT = "generateContent"
MODEL = "gemini-2.5-flash"
NONCE = "0badf00d"
HOUR = 3600.0


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with running(time_scale=0.0, seed=21) as e:
        yield e


@pytest.fixture(params=["file", "inline"])
def how(request: pytest.FixtureRequest, emu: RunningEmulator) -> str:
    emu.control.reset()
    return str(request.param)


def settings(root: str, how: str = "file") -> dict[str, Any]:
    inline = 1024 * 1024 if how == "inline" else 0
    return {"base_url": root, "api_key_env": KEY_ENV, "inline_max_bytes": inline}


@pytest.fixture
def provider(how: str, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Provider:
    monkeypatch.setenv(KEY_ENV, KEY)
    return make_provider("gemini", **settings(emu.url, how))


@pytest.fixture
def sdk(emu: RunningEmulator) -> genai.Client:
    return genai.Client(api_key="k", http_options={"base_url": emu.url, "api_version": "v1beta"})


class Journal:
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


def body(i: int, model: str = MODEL, **extra: Any) -> bytes:
    text = f"question {i}: why?"
    request = {"model": model, "contents": [{"role": "user", "parts": [{"text": text}]}]}
    return orjson.dumps(request | extra)


def intent(
    provider: Provider,
    folder: Path,
    batch_id: int,
    *,
    store_id: str = STORE,
    n: int = 3,
    bodies: list[bytes] | None = None,
    nonce: str | None = NONCE,
) -> Intent:
    """A packed batch file written by hand, keys `<store>-<nonce>-<attempt>`."""
    bodies = bodies or [body(i) for i in range(n)]
    path = folder / f"{store_id}-{batch_id}.jsonl"
    lines = [
        provider.request_line(f"{store_id}-{nonce}-{batch_id * 1000 + i}", ENDPOINT, b)
        for i, b in enumerate(bodies)
    ]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return Intent(
        batch_id, store_id, ENDPOINT, MODEL, path, len(lines), created_at=0.0, nonce=nonce
    )


def upload(sdk: genai.Client, it: Intent) -> str:
    """An upload made as the provider makes one, without the batch (a crash after upload)."""
    config = types.UploadFileConfig(mime_type="application/jsonl", display_name=it.file_name)
    got = sdk.files.upload(file=io.BytesIO(it.path.read_bytes()), config=config)
    return str(got.name)


def submit(provider: Provider, it: Intent) -> BatchRef:
    return provider.submit(it, Journal())


def finish(emu: RunningEmulator, batch_id: str) -> dict[str, Any]:
    emu.control.advance(HOUR)
    return emu.control.wait(batch_id, timeout=10)


def calls(emu: RunningEmulator) -> list[str]:
    return [f"{c['method']} {c['path']}" for c in emu.control.calls()]


# -- lines, limits, results ------------------------------------------------------------------


def test_limits_group_key_and_lines(provider: Provider) -> None:
    limits = provider.limits(ENDPOINT, MODEL)
    assert 1_000 <= limits.max_requests <= 100_000 and limits.max_bytes <= 2 * 1024**3
    key = provider.group_key(ENDPOINT, MODEL)
    assert "gemini" in key and key != provider.group_key(ENDPOINT, "gemini-2.5-pro")
    line = orjson.loads(provider.request_line("s-1", ENDPOINT, body(0)))
    assert line == {"key": "s-1", "request": orjson.loads(body(0))}


def test_results_download_and_map_by_key_in_any_order(
    provider: Provider, how: str, emu: RunningEmulator, tmp_path: Path
) -> None:
    emu.control.set_config(gemini_shuffle_results=True)
    bad = body(9, contents="not a list")  # the request fails when it runs: an error line
    it = intent(provider, tmp_path, 1, bodies=[*(body(i) for i in range(20)), bad])
    ref = submit(provider, it)
    assert (ref.input_file_id is None) == (how == "inline")
    assert finish(emu, ref.provider_batch_id)["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert (status.state, status.total, status.completed, status.failed) == (
        "completed", 21, 20, 1,
    )  # fmt: skip
    assert status.ended and status.output_file_id
    out = tmp_path / "results"
    out.mkdir()
    files = provider.download(status, out)
    assert [f.kind for f in files] == ["output"] and files[0].path.parent == out
    keys = []
    for _kind, raw in read_lines(files):
        finding = parse_line(raw, f"{STORE}-{NONCE}", ENDPOINT, format_of("gemini"))
        keys.append(finding.attempt_id)
        sent = orjson.loads(it.path.read_bytes().splitlines()[finding.attempt_id - 1000])
        if finding.ok:  # the answer to its own prompt, whatever order the lines came in
            assert finding.usage is not None and finding.usage.input
            assert finding.input_tokens and finding.output_tokens
        else:
            assert sent["request"]["contents"] == "not a list"
            assert finding.status_code == 400 and finding.error_code == "INVALID_ARGUMENT"
    assert sorted(keys) == list(range(1000, 1021))
    assert keys != sorted(keys)  # they did come shuffled


def test_a_dropped_cut_or_failed_download_is_transient(
    emu: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.control.reset()
    monkeypatch.setenv(KEY_ENV, KEY)
    provider = make_provider("gemini", **settings(emu.url))
    ref = submit(provider, intent(provider, tmp_path, 1, n=40))
    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    for kind in ("drop", "truncate", "503"):
        emu.control.add_fault("files.download", kind, count=1, flavor="gemini")
        with pytest.raises(TransientError):
            provider.download(status, tmp_path)
    [output] = provider.download(status, tmp_path)  # fetched again, whole
    assert len(list(read_lines([output]))) == 40


# -- submit ----------------------------------------------------------------------------------


def test_submit_journals_each_step_and_tags_the_batch(
    provider: Provider, how: str, emu: RunningEmulator, sdk: genai.Client, tmp_path: Path
) -> None:
    it = intent(provider, tmp_path, 42)
    journal = Journal()
    emu.control.clear_calls()
    ref = provider.submit(it, journal)
    log = calls(emu)
    job = sdk.batches.get(name="batches/" + ref.provider_batch_id)
    assert job.display_name == f"llmbatch-{STORE}-42-{NONCE}"
    create = f"POST /v1beta/models/{MODEL}:batchGenerateContent"
    if how == "inline":
        assert journal.steps == ["creating", "sending"] and ref.input_file_id is None
        assert log == [create]
        return
    file_id = ref.input_file_id
    assert file_id and journal.steps == ["uploading", ("uploaded", file_id), "creating", "sending"]
    assert log[0] == "POST /upload/v1beta/files" and log[-1] == create
    assert sdk.files.get(name=file_id).display_name == f"llmbatch-{STORE}-42-{NONCE}.jsonl"


def test_a_recorded_upload_is_created_once_and_an_expired_one_uploaded_again(
    emu: RunningEmulator, sdk: genai.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.control.reset()
    monkeypatch.setenv(KEY_ENV, KEY)
    provider = make_provider("gemini", **settings(emu.url, "inline"))  # recorded: never inline
    it = intent(provider, tmp_path, 7)
    file_id = upload(sdk, it)
    journal = Journal()
    ref = provider.submit(dataclasses.replace(it, input_file_id=file_id), journal)
    assert journal.steps == ["creating", "sending"] and ref.input_file_id == file_id

    later = intent(provider, tmp_path, 8)
    old = upload(sdk, later)
    emu.control.advance(49 * HOUR)  # uploads are kept 48 hours
    journal = Journal()
    ref = provider.submit(dataclasses.replace(later, input_file_id=old), journal)
    assert ref.input_file_id and ref.input_file_id != old
    assert journal.steps == ["uploading", ("uploaded", ref.input_file_id), "creating", "sending"]
    assert finish(emu, ref.provider_batch_id)["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    # Expired with its file gone (the engine always writes it): nothing to upload, said so.
    gone = dataclasses.replace(later, input_file_id=old, path=tmp_path / "gone.jsonl")
    with pytest.raises(RejectedError, match="expired"):
        provider.submit(gone, Journal())


def test_a_full_queue_at_create_is_a_token_limit_not_a_fault_of_the_requests(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    emu.control.set_quotas(gemini={MODEL: 10})
    with pytest.raises(RejectedError, match="token_limit_exceeded"):
        submit(provider, intent(provider, tmp_path, 1))
    emu.control.set_quotas(gemini={})


# -- reconcile, sweep ------------------------------------------------------------------------


def test_reconcile_finds_our_batches_and_uploads_and_nothing_else(
    provider: Provider, how: str, emu: RunningEmulator, sdk: genai.Client, tmp_path: Path
) -> None:
    since = emu.control.now() - 1
    emu.control.seed("gemini", batches=3)  # another app on the same key
    by_tag, uploaded, never_sent, copied = (
        dataclasses.replace(it, created_at=since)
        for it in (
            intent(provider, tmp_path, 2),
            intent(provider, tmp_path, 3),
            intent(provider, tmp_path, 4),
            intent(provider, tmp_path, 5, nonce="feedf00d"),  # a copy's intent 5
        )
    )
    ref = submit(provider, by_tag)
    upload_id = upload(sdk, uploaded)
    submit(provider, intent(provider, tmp_path, 2, store_id=OTHER_STORE))
    submit(provider, dataclasses.replace(copied, nonce=NONCE))  # ours would carry NONCE
    emu.control.seed("gemini", batches=3)

    found = provider.reconcile([by_tag, uploaded, never_sent, copied], since)
    assert found[2] == BatchRef(ref.provider_batch_id, ref.input_file_id)
    assert found[3] == BatchRef("", upload_id)  # uploaded, never created
    assert set(found) == {2, 3}
    assert provider.reconcile([by_tag], since, frozenset({ref.provider_batch_id})) == {}
    assert provider.reconcile([], since) == {}

    tagged = provider.list_tagged(STORE, since)
    assert {s.provider_batch_id for s in tagged} >= {ref.provider_batch_id}
    assert all(s.metadata and s.metadata["llmbatch_store"] == STORE for s in tagged)
    strays = provider.stray_uploads(STORE, since)
    assert (upload_id, 3, NONCE) in strays
    assert all(intent_id != 2 or how == "file" for _f, intent_id, _n in strays)


def test_reconcile_looks_no_further_back_than_since(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    it = intent(provider, tmp_path, 1)
    submit(provider, it)
    later = emu.control.advance(1000)  # beyond the 300 s the provider's clock may lag ours
    assert provider.reconcile([dataclasses.replace(it, created_at=later)], since=later - 10) == {}
    earlier = dataclasses.replace(it, created_at=later - 2000)
    assert set(provider.reconcile([earlier], since=later - 2000)) == {1}


# -- poll ------------------------------------------------------------------------------------


def test_poll_normalises_statuses_in_one_list_call(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    emu.control.seed("gemini", batches=5)
    refs = [submit(provider, intent(provider, tmp_path, i, n=2 + i)) for i in range(3)]
    ids = [r.provider_batch_id for r in refs]
    emu.control.clear_calls()
    statuses = provider.poll(ids, retrieve_budget=2)
    assert calls(emu) == ["GET /v1beta/batches"]
    assert sorted(s.provider_batch_id for s in statuses) == sorted(ids)
    assert all(s.state in ("validating", "in_progress") and not s.ended for s in statuses)
    finish(emu, ids[2])
    done = {s.provider_batch_id: s for s in provider.poll(ids, retrieve_budget=2)}[ids[2]]
    assert (done.state, done.provider_status, done.total, done.completed) == (
        "completed", "BATCH_STATE_SUCCEEDED", 4, 4,
    )  # fmt: skip
    assert done.ended and done.output_file_id and isinstance(done.created_at, float)


def test_poll_finds_a_batch_pushed_off_the_list_pages_within_budget(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    ref = submit(provider, intent(provider, tmp_path, 1))
    emu.control.seed("gemini", batches=320)  # newer: they fill the pages polling reads
    emu.control.clear_calls()
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert status.provider_batch_id == ref.provider_batch_id
    log = calls(emu)
    assert log.count("GET /v1beta/batches") == 3
    assert log[-1] == f"GET /v1beta/batches/{ref.provider_batch_id}" and len(log) == 4


def test_a_failed_batch_says_why(provider: Provider, emu: RunningEmulator, tmp_path: Path) -> None:
    bad = {"code": "invalid_request", "message": "files/x line 2 is bad", "line": 2}
    emu.control.next_batches(1, fail_validation=bad)
    ref = submit(provider, intent(provider, tmp_path, 1))
    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert status.state == "failed" and "line 2" in status.errors[0]["message"]


# -- cancel and clean-up ---------------------------------------------------------------------


def test_cancel_winds_a_held_batch_down(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    emu.control.next_batches(1, hold="validating")
    ref = submit(provider, intent(provider, tmp_path, 1))
    provider.cancel(ref.provider_batch_id)
    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    assert status.state == "cancelled" and status.ended
    assert provider.download(status, tmp_path) == []  # nothing ran: nothing to read
    with pytest.raises(RejectedError, match="400"):  # nothing left to cancel
        provider.cancel(ref.provider_batch_id)


def test_clean_up_deletes_ended_batches_and_files_and_tolerates_them_gone(
    provider: Provider, how: str, emu: RunningEmulator, sdk: genai.Client, tmp_path: Path
) -> None:
    ref = submit(provider, intent(provider, tmp_path, 1))
    finish(emu, ref.provider_batch_id)
    [status] = provider.poll([ref.provider_batch_id], retrieve_budget=1)
    ids = [f for f in (status.input_file_id, status.output_file_id, status.error_file_id) if f]
    assert f"batches/{ref.provider_batch_id}" in ids
    provider.delete_files(ids)
    assert list(sdk.batches.list()) == []
    assert [f.name for f in sdk.files.list()] == []
    provider.delete_files([*ids, "files/never-existed", "batches/never-existed"])


# -- errors ----------------------------------------------------------------------------------


def test_a_missing_key_is_an_auth_error_before_any_call(
    emu: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.control.reset()
    for env in (KEY_ENV, "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(env, raising=False)
    provider = make_provider("gemini", **settings(emu.url))
    with pytest.raises(AuthError, match=KEY_ENV):
        provider.poll(["x"], retrieve_budget=1)
    with pytest.raises(AuthError, match=KEY_ENV):
        submit(provider, intent(provider, tmp_path, 1))
    assert emu.control.calls() == []
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)  # the default variables: GEMINI_, then GOOGLE_
    default = make_provider("gemini", base_url=emu.url)
    assert default.poll(["x"], retrieve_budget=0) == []


def test_a_refused_key_is_an_auth_error_that_never_shows_the_key(
    refusing: RefusingService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    provider = make_provider("gemini", **settings(refusing.url))
    for call in (
        lambda: submit(provider, intent(provider, tmp_path, 1)),
        lambda: provider.poll(["x"], retrieve_budget=1),
        lambda: provider.cancel("x"),
    ):
        with pytest.raises(AuthError, match=rf"401.*\${KEY_ENV}") as caught:
            call()
        shown = f"{caught.value} {caught.value!r} {caught.value.__cause__!r} {caught.value.args}"
        assert KEY not in shown and KEY[:12] not in shown
    assert len(refusing.seen) == 3  # refused once each, never retried


@pytest.mark.parametrize(
    ("op", "kind", "retry_after"),
    [
        ("files.create", "503", None),
        ("batches.create", "500", None),
        ("batches.create", "429", 7.0),
    ],
)
def test_outages_and_rate_limits_are_transient(
    emu: RunningEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    op: str,
    kind: str,
    retry_after: float | None,
) -> None:
    emu.control.reset()
    monkeypatch.setenv(KEY_ENV, KEY)
    provider = make_provider("gemini", **settings(emu.url))
    fields = {"retry_after": retry_after} if retry_after else {}
    emu.control.add_fault(op, kind, count=1, flavor="gemini", **fields)
    with pytest.raises(TransientError, match=kind) as caught:
        submit(provider, intent(provider, tmp_path, 1))
    assert caught.value.retry_after == retry_after
    assert KEY not in str(caught.value)


def test_a_model_gemini_does_not_batch_is_rejected_at_create(
    provider: Provider, emu: RunningEmulator, tmp_path: Path
) -> None:
    it = dataclasses.replace(intent(provider, tmp_path, 1), model="gemini-no-such-model")
    with pytest.raises(RejectedError, match="404"):
        submit(provider, it)
    with pytest.raises(RejectedError, match="404"):
        provider.cancel("does-not-exist")


def test_without_google_genai_the_provider_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "google.genai", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "llmbatch.providers.gemini", raising=False)
    with pytest.raises(ConfigError) as caught:
        importlib.import_module("llmbatch.providers.gemini")
    assert str(caught.value) == (
        "provider 'gemini' needs the google-genai package: pip install 'llmbatch[gemini]'"
    )


def test_lists_in_either_order_are_read_back_to_since() -> None:
    """Google does not document the lists' order: an oldest-first list is read to its end
    (newest first, paging stops at the first page that ends before `since`)."""
    from llmbatch.providers.gemini import _since

    def op(t: int) -> dict[str, Any]:
        return {"name": f"batches/b{t}", "metadata": {"createTime": f"2026-12-07T10:00:{t:02d}Z"}}

    def lister(pages: list[list[int]]) -> Any:
        def rest(method: str, path: str, **query: Any) -> dict[str, Any]:
            i = int(query.get("pageToken") or 0)
            page: dict[str, Any] = {"operations": [op(t) for t in pages[i]]}
            if i + 1 < len(pages):
                page["nextPageToken"] = str(i + 1)
            return page

        return rest

    since = datetime(2026, 12, 7, 10, 0, 30, tzinfo=UTC).timestamp()
    oldest_first = lister([[10, 20], [25, 29], [31, 40]])
    assert [o["name"] for o in _since(oldest_first, "batches", "operations", since)] == [
        "batches/b31", "batches/b40",
    ]  # fmt: skip
    calls = []
    newest_first = lister([[40, 31], [29, 25], [20, 10]])
    for o in _since(newest_first, "batches", "operations", since):
        calls.append(o["name"])
    assert calls == ["batches/b40", "batches/b31"]
