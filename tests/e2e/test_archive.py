"""Archives on a real S3-compatible server (moto's server mode over HTTP, through boto3) and
on a folder, with faults injected by a proxy in front of the server: each batch's files and
manifest written before the provider's copies are deleted, every result read back from the
archive alone, and a target that is down, storming 503s or cut mid-upload costing no result
and stopping no other work."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from helpers import E2E_KEY_ENV, cli, fast_settings, request_states, sql
from llmbatch import Queue
from llmbatch.archive import (
    SPOOL_ATTEMPTS,
    Archiver,
    ArchiveSettings,
    _attempt_line,
    _digest,
    _taken,
    from_archive,
)
from llmbatch.archived import _rebuilt
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.export import export, jsonl_head, jsonl_line, jsonl_tail, result_id
from llmbatch.ownership import attempt_prefix
from llmbatch.retry import RetryPolicy
from llmbatch.sdk import status_code
from llmbatch.store import open_store
from llmbatch.store.base import ResultRow
from llmbatch.targets import ArchiveUnavailable, FileTarget
from s3 import SECRET_KEY, FaultProxy, aws_env, moto_server, s3_client

pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def moto() -> Any:
    with moto_server() as url:
        yield url


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in aws_env().items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def bucket(moto: str, request: pytest.FixtureRequest) -> str:
    name = "arch-" + hashlib.blake2b(request.node.nodeid.encode(), digest_size=6).hexdigest()
    s3_client(moto).create_bucket(Bucket=name)
    return name


def enqueue(db: str, n: int, queue: str = "q", model: str = "gpt-4o-mini") -> None:
    with Queue(db, queue) as q:
        q.add_many(
            [
                {
                    "custom_id": f"r{i}",
                    "body": {"model": model, "messages": [{"role": "user", "content": f"q {i}"}]},
                }
                for i in range(n)
            ]
        )


def tick_until(engine: Engine, done: Any, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    notes: list[str] = []
    while not done():
        assert time.monotonic() < deadline, f"timed out: {notes[-5:]}"
        notes += engine.tick(time.time()).notes
        time.sleep(0.02)


def archives(db: str) -> list[tuple[Any, ...]]:
    return sql(db, "SELECT batch_id, state, tries, from_store, last_error FROM archives ORDER BY 1")


def store_envelope(db: str) -> list[dict[str, Any]]:
    store = open_store(db)
    try:
        return sorted(export(store).dicts(), key=lambda e: e["id"])
    finally:
        store.close()


def provider_files(emu: Any) -> set[str]:
    client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
    return {f.id for f in client.files.list()}


def test_each_batch_is_archived_with_its_manifest_before_its_files_are_deleted(
    db: str, moto: str, bucket: str, tmp_path: Path
) -> None:
    enqueue(db, 30)
    enqueue(db, 12, queue="other", model="gpt-4o")
    archive = ArchiveSettings(url=f"s3://{bucket}/team/llm", endpoint_url=moto)
    with running(seed=3) as emu:
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=20, archive=archive))
        try:
            tick_until(
                engine,
                lambda: (
                    not engine.store.unfinished_count()
                    and all(s == "done" for _b, s, *_ in archives(db))
                ),
            )
        finally:
            engine.close()
        left = provider_files(emu)
    rows = archives(db)
    batches = sql(db, "SELECT id, provider_batch_id, input_file_id, output_file_id FROM batches")
    assert [r[0] for r in rows] == sorted(b[0] for b in batches) and len(rows) >= 3
    assert all(r[1] == "done" and r[3] == 0 for r in rows)
    # the provider's copies were deleted only after (here: at all) the archive was written
    assert not left & {f for b in batches for f in b[2:] if f}
    s3 = s3_client(moto)
    store_id = sql(db, "SELECT value FROM meta WHERE key = 'store_id'")[0][0]
    total_lines = 0
    for batch_id, provider_batch_id, _i, _o in batches:
        prefix = f"team/llm/{store_id}/batch-{batch_id:08d}/"
        manifest = json.loads(
            s3.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read()
        )
        assert manifest["provider_batch_id"] == provider_batch_id
        assert set(manifest["files"]) >= {
            "input.jsonl",
            "output.jsonl",
            "results.jsonl",
            "attempts.jsonl",
        }
        for name, info in manifest["files"].items():
            data = s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
            assert hashlib.sha256(data).hexdigest() == info["sha256"]
            assert len(data) == info["bytes"] and data.count(b"\n") == info["lines"]
        attempts = [
            orjson.loads(x)
            for x in s3.get_object(Bucket=bucket, Key=prefix + "attempts.jsonl")["Body"]
            .read()
            .splitlines()
        ]
        assert {a["queue"] for a in attempts} <= {"q", "other"}
        (nonce,) = sql(db, f"SELECT nonce FROM batches WHERE id = {batch_id}")[0]
        assert all(a["sent_as"] == f"{store_id}-{nonce}-{a['attempt']}" for a in attempts)
        sent = s3.get_object(Bucket=bucket, Key=prefix + "input.jsonl")["Body"].read()
        assert sent.count(f'"{store_id}-{nonce}-'.encode()) == len(attempts)
        # each success is left to output.jsonl (manifest version 2), the rest written whole
        assert manifest["version"] == 2 and manifest["rebuilt"]["from"][0] == "output.jsonl"
        runs = manifest["rebuilt"]["attempts"]
        total_lines += manifest["files"]["results.jsonl"]["lines"]
        total_lines += sum(last - first + 1 for first, last in runs)
    assert total_lines == 42
    # every result back from the archive alone, as `llmbatch results` gives it from the store
    want = store_envelope(db)
    got = sorted(
        (orjson.loads(x) for x in from_archive(f"s3://{bucket}/team/llm", endpoint_url=moto)),
        key=lambda e: e["id"],
    )
    assert got == want and len(got) == 42
    only_other = list(from_archive(f"s3://{bucket}/team/llm", endpoint_url=moto, queue="other"))
    assert len(only_other) == 12


def test_results_from_archive_with_the_database_lost(
    sqlite_db: str, moto: str, bucket: str, tmp_path: Path
) -> None:
    db = sqlite_db
    enqueue(db, 8)
    config = tmp_path / "llmbatch.toml"
    config.write_text(f'[archive]\nurl = "s3://{bucket}/x"\nendpoint_url = "{moto}"\n')
    archive = ArchiveSettings(url=f"s3://{bucket}/x", endpoint_url=moto)
    with running(seed=4) as emu:
        engine = Engine(open_store(db), fast_settings(emu, archive=archive))
        try:
            tick_until(engine, lambda: archives(db) and archives(db)[0][1] == "done")
        finally:
            engine.close()
    want = store_envelope(db)
    Path(db).unlink()
    out = tmp_path / "back.jsonl"
    r = cli(
        "--config", str(config), "results", "--from-archive", f"s3://{bucket}/x", "-o", str(out)
    )
    assert r.exit_code == 0, r.output
    got = sorted((orjson.loads(x) for x in out.read_bytes().splitlines()), key=lambda e: e["id"])
    assert got == want and len(got) == 8


def test_a_file_archive(db: str, tmp_path: Path) -> None:
    enqueue(db, 10)
    root = tmp_path / "archive"
    with running(seed=5) as emu:
        engine = Engine(
            open_store(db), fast_settings(emu, archive=ArchiveSettings(url=f"file://{root}"))
        )
        try:
            tick_until(engine, lambda: archives(db) and archives(db)[0][1] == "done")
        finally:
            engine.close()
    names = sorted(p.name for p in root.rglob("*") if p.is_file())
    assert names == sorted(
        ["attempts.jsonl", "input.jsonl", "manifest.json", "output.jsonl", "results.jsonl"]
    )
    got = sorted((orjson.loads(x) for x in from_archive(f"file://{root}")), key=lambda e: e["id"])
    assert got == store_envelope(db)


def test_an_engine_closed_after_its_last_ingest_leaves_every_archive_written(
    db: str, tmp_path: Path
) -> None:
    """Archives are written by a thread of the engine's (the tick goes on meanwhile): a
    process that ticks until its requests are done and closes, as a cron `run` does, waits
    for the archives the last tick set going, and the provider's files are then deleted."""
    enqueue(db, 30)
    root = tmp_path / "archive"
    with running(seed=6) as emu:
        settings = fast_settings(
            emu, max_batch_requests=10, archive=ArchiveSettings(url=f"file://{root}")
        )
        engine = Engine(open_store(db), settings)
        try:
            tick_until(engine, lambda: not engine.store.unfinished_count())
        finally:
            engine.close()
        left = provider_files(emu)
    assert [r[1] for r in archives(db)] == ["done"] * 3
    assert len(list(root.rglob("manifest.json"))) == 3
    assert not left  # every provider file deleted once its archive was written


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["down", "503", "slow"])
def test_a_failing_target_loses_no_result_and_stops_no_work(
    db: str, moto: str, bucket: str, fault: str
) -> None:
    """The target fails while batches finish: every request is still ingested, the archive
    waits (its error in the store, its provider files kept), and once the target is back the
    archive is written and the files deleted."""
    enqueue(db, 20)
    with FaultProxy(moto) as proxy, running(seed=6) as emu:
        archive = ArchiveSettings(
            url=f"s3://{bucket}/f", endpoint_url=proxy.url, backoff_seconds=0.2, timeout=1.0
        )
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=10, archive=archive))
        try:
            assert engine.archiver is not None
            engine.archiver.check()  # the bucket is checked while the target is up
            if fault == "down":
                proxy.faults.down = True
            elif fault == "503":
                proxy.faults.status = 503
            else:
                proxy.faults.delay = 2.0  # longer than the client's read timeout
            started = time.monotonic()
            tick_until(
                engine, lambda: not engine.store.unfinished_count() and len(archives(db)) == 2
            )
            tick_until(engine, lambda: all(r[2] >= 1 for r in archives(db)))
            assert time.monotonic() - started < 40
            assert request_states(db) == {"succeeded": 20}
            rows = archives(db)
            assert all(r[1] == "pending" and r[4] for r in rows), rows
            assert SECRET_KEY not in str(rows)
            said = cli("--db", db, "status", "--wide").output
            assert "archive: 2 batches waiting; batch " in said and "failed" in said, said
            assert SECRET_KEY not in said
            files = {
                f for b in sql(db, "SELECT input_file_id, output_file_id FROM batches") for f in b
            }
            assert files <= provider_files(emu)  # kept until archived
            # no archive (a manifest) while the target fails; a file sent early whose
            # answer was too slow may be there, whole (`Archiver.early`)
            keys = s3_client(moto).list_objects_v2(Bucket=bucket).get("Contents", [])
            assert not [k for k in keys if k["Key"].endswith("manifest.json")], keys
            assert fault == "slow" or not keys
            proxy.faults = type(proxy.faults)()
            tick_until(engine, lambda: all(r[1] == "done" for r in archives(db)))
        finally:
            engine.close()
        assert not files & provider_files(emu)
    got = list(from_archive(f"s3://{bucket}/f", endpoint_url=moto))
    assert len(got) == 20
    dump = str(sql(db, "SELECT kind, detail FROM events")) + str(archives(db))
    assert SECRET_KEY not in dump


def test_a_cut_mid_multipart_upload_leaves_no_object_and_no_parts(
    moto: str, bucket: str, tmp_path: Path
) -> None:
    from llmbatch.targets import ArchiveUnavailable, S3Target, TargetSettings

    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        for i in range(120_000):
            f.write(b'{"line": %d, "pad": "%s"}\n' % (i, b"x" * 80))
    assert big.stat().st_size > 10 << 20  # three parts of 5 MiB
    with FaultProxy(moto) as proxy:
        target = S3Target(
            TargetSettings(url=f"s3://{bucket}/m", endpoint_url=proxy.url, part_mb=5, timeout=5),
            bucket,
            "m",
        )
        proxy.faults.cut_part = 2
        with pytest.raises(ArchiveUnavailable):
            target.put("big.jsonl", big)
        s3 = s3_client(moto)
        assert not s3.list_objects_v2(Bucket=bucket).get("Contents")
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # aborted
        proxy.faults.cut_part = None
        target.put("big.jsonl", big)
    got = s3.get_object(Bucket=bucket, Key="m/big.jsonl")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(big.read_bytes()).digest()


@pytest.mark.parametrize("checksums", ["when_supported", "when_required"])
def test_an_upload_carries_the_sha256_taken_for_the_manifest_and_is_not_hashed_again(
    moto: str, bucket: str, tmp_path: Path, checksums: str
) -> None:
    """Over plain HTTP boto3 hashes each payload for its signature; with checksums, a PUT
    carries instead the SHA-256 the archive took for its manifest (a signed header the server
    checks), and each part of a multipart upload its own: the body is not hashed again. A
    server that refuses checksums (`when_required`) gets the signed payload as before."""
    from llmbatch.targets import S3Target, TargetSettings

    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_bytes(b'{"a": 1}\n' * 1000)
    big.write_bytes(b'{"line": "%s"}\n' % (b"x" * 1000) * 6000)  # two parts of 5 MiB
    settings = TargetSettings(
        url=f"s3://{bucket}/c", endpoint_url=moto, part_mb=5, checksums=checksums
    )
    target = S3Target(settings, bucket, "c")
    sent: list[dict[str, str]] = []

    def seen(request: Any, **_: Any) -> None:
        if request.method == "PUT":
            sent.append(
                {
                    k.lower(): v if isinstance(v, str) else v.decode()
                    for k, v in request.headers.items()
                }
            )

    target.client.meta.events.register("before-send.s3", seen)
    sha = hashlib.sha256(small.read_bytes())
    target.put("small.jsonl", small, sha.hexdigest())
    target.put("big.jsonl", big)
    target.put("none.jsonl", small)  # no digest given: taken here
    assert len(sent) == 4  # one PUT each, two parts
    if checksums == "when_required":
        assert all(h["x-amz-content-sha256"] != "UNSIGNED-PAYLOAD" for h in sent)
        assert not any(k.startswith("x-amz-checksum") for h in sent for k in h)
    else:
        assert all(h["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD" for h in sent)
        b64 = base64.b64encode(sha.digest()).decode()
        assert sent[0]["x-amz-checksum-sha256"] == sent[3]["x-amz-checksum-sha256"] == b64
        parts = [big.read_bytes()[: 5 << 20], big.read_bytes()[5 << 20 :]]
        want = {base64.b64encode(hashlib.sha256(p).digest()).decode() for p in parts}
        assert {h["x-amz-checksum-sha256"] for h in sent[1:3]} == want
        assert not any(k.startswith("x-amz-checksum-crc") for h in sent for k in h)
    s3 = s3_client(moto)
    for key, path in (("small", small), ("big", big), ("none", small)):
        got = s3.get_object(Bucket=bucket, Key=f"c/{key}.jsonl")["Body"].read()
        assert got == path.read_bytes()


def test_parts_a_killed_upload_left_are_aborted(moto: str, bucket: str, tmp_path: Path) -> None:
    from llmbatch.targets import S3Target, TargetSettings

    s3 = s3_client(moto)
    s3.create_multipart_upload(Bucket=bucket, Key="k/batch/output.jsonl")
    small = tmp_path / "o.jsonl"
    small.write_bytes(b"{}\n")
    target = S3Target(TargetSettings(url=f"s3://{bucket}/k", endpoint_url=moto), bucket, "k")
    target.abort_uploads("batch/")
    target.put("batch/output.jsonl", small)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


@pytest.mark.slow
@pytest.mark.both_backends
def test_archiving_again_after_a_crash_writes_no_duplicate_and_leaves_no_gap(
    db: str, moto: str, bucket: str
) -> None:
    """A worker that died half way through an archive (some files written, no manifest), and
    one that died after the manifest but before the store knew: the next writes each archive
    once, whole."""
    enqueue(db, 20)
    with FaultProxy(moto) as proxy, running(seed=7) as emu:
        archive = ArchiveSettings(
            url=f"s3://{bucket}/c", endpoint_url=proxy.url, backoff_seconds=0.1
        )
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=10, archive=archive))
        try:
            proxy.faults.fail_after_puts = 2  # two files of the first archive, then 503s
            tick_until(
                engine, lambda: not engine.store.unfinished_count() and len(archives(db)) == 2
            )
            tick_until(engine, lambda: all(r[2] >= 1 for r in archives(db)))
            proxy.faults.fail_after_puts = None
            tick_until(engine, lambda: all(r[1] == "done" for r in archives(db)))
            # the store forgets it was done (a crash after the manifest): done again, no harm
            first = archives(db)[0][0]
            sql(
                db,
                f"UPDATE archives SET state = 'pending', not_before = 0 WHERE batch_id = {first}",
            )
            puts = proxy.faults.puts
            tick_until(engine, lambda: all(r[1] == "done" for r in archives(db)))
            assert proxy.faults.puts == puts  # its manifest was there: nothing written again
        finally:
            engine.close()
    got = [orjson.loads(x) for x in from_archive(f"s3://{bucket}/c", endpoint_url=moto)]
    assert sorted(e["custom_id"] for e in got) == sorted(f"r{i}" for i in range(20))
    keys = [o["Key"] for o in s3_client(moto).list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == len(set(keys)) == 2 * 5


def test_what_the_store_holds_is_archived_when_the_providers_copy_is_gone(
    db: str, moto: str, bucket: str
) -> None:
    enqueue(db, 10)
    with FaultProxy(moto) as proxy, running(seed=8) as emu:
        archive = ArchiveSettings(
            url=f"s3://{bucket}/g", endpoint_url=proxy.url, backoff_seconds=0.1
        )
        settings = fast_settings(emu, archive=archive)
        engine = Engine(open_store(db), settings)
        try:
            assert engine.archiver is not None
            engine.archiver.check()
            proxy.faults.down = True
            tick_until(engine, lambda: archives(db) and archives(db)[0][2] >= 1)
        finally:
            engine.close()  # its downloaded copy goes with its work dir
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        (output,) = sql(db, "SELECT output_file_id FROM batches")[0]
        client.files.delete(output)  # the provider's copy expired
        proxy.faults.down = False
        engine = Engine(open_store(db), settings)
        try:
            tick_until(engine, lambda: archives(db)[0][1] == "done")
        finally:
            engine.close()
    assert archives(db)[0][3] == 1  # from_store
    store_id = sql(db, "SELECT value FROM meta WHERE key = 'store_id'")[0][0]
    manifest = json.loads(
        s3_client(moto)
        .get_object(Bucket=bucket, Key=f"g/{store_id}/batch-00000001/manifest.json")["Body"]
        .read()
    )
    assert manifest["from_store"] is True and "output.jsonl" not in manifest["files"]
    got = sorted(
        (orjson.loads(x) for x in from_archive(f"s3://{bucket}/g", endpoint_url=moto)),
        key=lambda e: e["id"],
    )
    assert got == store_envelope(db)


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "llmbatch.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ('url = "ftp://host/x"', "[archive] url 'ftp://host/x': unknown scheme"),
        (
            'url = "s3://no-such-bucket-here/x"\nendpoint_url = "{moto}"',
            "bucket 'no-such-bucket-here' does not exist",
        ),
        (
            'url = "s3://{bucket}/x"\nendpoint_url = "{moto}"\nregion = 5',
            "[archive] region must be a string",
        ),
        ('url = "s3://{bucket}/x"\nsecret_access_key = "abc"', "holds a secret by value"),
        ('endpoint_url = "{moto}"', "[archive] needs url"),
    ],
)
def test_bad_archive_settings_are_one_clear_error_at_start_and_touch_nothing(
    sqlite_db: str, moto: str, bucket: str, tmp_path: Path, table: str, said: str
) -> None:
    enqueue(sqlite_db, 3)
    config = write_config(tmp_path, "[archive]\n" + table.format(moto=moto, bucket=bucket) + "\n")
    with running(seed=9) as emu:
        providers = (
            f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{E2E_KEY_ENV}"\n'
        )
        config.write_text(config.read_text() + providers)
        r = cli("--config", str(config), "--db", sqlite_db, "run")
    assert r.exit_code == 2, r.output
    assert said in r.output and r.output.count("\n") == 1, r.output
    assert request_states(sqlite_db) == {"queued": 3}
    assert sql(sqlite_db, "SELECT COUNT(*) FROM batches") == [(0,)]


def test_missing_credentials_are_one_clear_error(
    sqlite_db: str, moto: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    enqueue(sqlite_db, 2)
    config = write_config(
        tmp_path, f'[archive]\nurl = "s3://{bucket}/x"\nendpoint_url = "{moto}"\n'
    )
    r = cli("--config", str(config), "--db", sqlite_db, "run")
    assert r.exit_code == 2, r.output
    assert "no AWS credentials were found" in r.output, r.output
    assert request_states(sqlite_db) == {"queued": 2}


def test_without_boto3_an_s3_url_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "boto3", None)
    config = write_config(tmp_path, '[archive]\nurl = "s3://b/x"\n')
    r = cli("--config", str(config), "--db", str(tmp_path / "s.db"), "status")
    assert r.exit_code == 2
    assert "pip install 'llmbatch[s3]'" in r.output and r.output.count("\n") == 1, r.output


def test_a_killed_write_to_a_folder_leaves_no_partial_file(tmp_path: Path) -> None:
    """A worker SIGKILLed while it copies a file into a folder archive: the key is absent (not
    half there), and the next write puts it whole and leaves no hidden copy behind."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    fifo, root = tmp_path / "source", tmp_path / "archive"
    os.mkfifo(fifo)
    code = (
        "from pathlib import Path; from llmbatch.targets import FileTarget; "
        f"FileTarget(Path({str(root)!r}), 'file://x').put('b/output.jsonl', Path({str(fifo)!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as w:
        w.write(b'{"half": "written"}\n' * 50_000)
        w.flush()
        deadline = time.monotonic() + 20
        while not list(root.rglob(".output.jsonl.partial")):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (root / "b" / "output.jsonl").exists()
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(b'{"whole": 1}\n' * 10)
    from llmbatch.targets import FileTarget

    FileTarget(root, "file://x").put("b/output.jsonl", whole)
    assert (root / "b" / "output.jsonl").read_bytes() == whole.read_bytes()
    assert [p.name for p in (root / "b").iterdir()] == ["output.jsonl"]


@pytest.mark.slow
def test_a_worker_killed_mid_archive_is_replaced_and_nothing_is_duplicated_or_missing(
    sqlite_db: str, moto: str, bucket: str, tmp_path: Path
) -> None:
    """A real `llmbatch worker` SIGKILLed while its archive uploads are under way (each S3
    call slowed by the proxy); the next worker writes every archive whole, once."""
    import os
    import signal
    import subprocess
    import sys

    db = sqlite_db
    enqueue(db, 30)
    with FaultProxy(moto) as proxy, running(seed=15) as emu:
        config = tmp_path / "llmbatch.toml"
        config.write_text(
            "[engine]\npoll_interval = 0.05\nmax_poll_interval = 0.2\nsettle_seconds = 0.5\n"
            "submit_timeout = 2.0\nlease_ttl = 5\nmax_batch_requests = 10\n"
            f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{E2E_KEY_ENV}"\n'
            f'[archive]\nurl = "s3://{bucket}/k"\nendpoint_url = "{proxy.url}"\n'
            "backoff_seconds = 0.2\n"
        )
        env = {**os.environ, "LLMBATCH_DB": db, "LLMBATCH_CONFIG": str(config)}
        exe = str(Path(sys.executable).parent / "llmbatch")
        log = tmp_path / "worker.log"
        proxy.faults.delay = 0.3
        with open(log, "ab") as out:
            w = subprocess.Popen(
                [exe, "worker", "--interval", "0.05"], env=env, stdout=out, stderr=out
            )
            deadline = time.monotonic() + 60
            while proxy.faults.puts < 3:  # the first archive half written
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            w.send_signal(signal.SIGKILL)
            w.wait(10)
        assert sql(db, "SELECT COUNT(*) FROM archives WHERE state = 'done'") == [(0,)]
        proxy.faults.delay = 0.0
        with open(log, "ab") as out:
            w = subprocess.Popen(
                [exe, "worker", "--interval", "0.05"], env=env, stdout=out, stderr=out
            )
            try:
                deadline = time.monotonic() + 60
                while request_states(db) != {"succeeded": 30} or sql(
                    db, "SELECT COUNT(*) FROM archives WHERE state <> 'done'"
                ) != [(0,)]:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            finally:
                w.send_signal(signal.SIGTERM)
                w.wait(20)
    got = [orjson.loads(x) for x in from_archive(f"s3://{bucket}/k", endpoint_url=moto)]
    assert sorted(e["custom_id"] for e in got) == sorted(f"r{i}" for i in range(30))
    s3 = s3_client(moto)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == len(set(keys)) == 3 * 5
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert SECRET_KEY not in log.read_text()


def test_result_rows_come_in_the_order_of_result_row_fields(db: str) -> None:
    """The archive builds each ResultRow from its row's position (a dict per row cost it a
    third of its time): the query's columns must stay the fields, in order."""
    store: Any = open_store(db)
    try:
        with store._read() as cur:
            cur.execute(store.q("batch_result_rows"), {"batch_id": 0, "after": 0, "n": 1})
            names = [d[0] for d in cur.description]
    finally:
        store.close()
    assert names == [f.name for f in dataclasses.fields(ResultRow)]


def archived_results(root: Path) -> list[dict[str, Any]]:
    return sorted((orjson.loads(x) for x in from_archive(f"file://{root}")), key=lambda e: e["id"])


def test_results_are_archived_as_ingest_wrote_them_not_read_back_from_the_store(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch's results.jsonl and attempts.jsonl are written while it is ingested, so
    the archive step only uploads: it reads no result back from the store, and what it
    archives is what `llmbatch results` gives from the store."""
    read_back: list[int] = []
    from_store = Archiver._from_store

    def counted(self: Archiver, attempts_of: int, *args: Any) -> Any:
        read_back.append(attempts_of)
        return from_store(self, attempts_of, *args)

    monkeypatch.setattr(Archiver, "_from_store", counted)
    enqueue(db, 25)
    root = tmp_path / "archive"
    with running(seed=21) as emu:
        settings = fast_settings(
            emu,
            max_batch_requests=10,
            ingest_chunk=4,
            archive=ArchiveSettings(url=f"file://{root}"),
        )
        engine = Engine(open_store(db), settings)
        try:
            tick_until(engine, lambda: not engine.store.unfinished_count())
        finally:
            engine.close()
    assert [r[1] for r in archives(db)] == ["done"] * 3
    assert read_back == []
    assert archived_results(root) == store_envelope(db)
    store = open_store(db)
    try:
        for manifest in root.rglob("manifest.json"):
            m = json.loads(manifest.read_text())
            files = m["files"]
            for name in files:  # the digests taken while writing: what the files hold
                assert files[name] == _digest(manifest.parent / name), name
            # byte for byte the lines the archive step would read back from the store: those
            # written whole, and the successes rebuilt from output.jsonl
            sid, batch = store.store_id, m["attempts_of"]
            written = (manifest.parent / "results.jsonl").read_bytes().splitlines(keepends=True)
            folder = manifest.parent.relative_to(root).as_posix() + "/"
            wanted = {result_id(sid, a): c for a, _q, c in store.batch_attempt_map(batch)}
            target = FileTarget(root, "file://x")
            rebuilt = list(_rebuilt(target, folder, m, m["rebuilt"], wanted))
            assert len(rebuilt) == files["output.jsonl"]["lines"] > 0
            assert sorted(written + rebuilt) == sorted(
                jsonl_line(r, sid) for r in store.batch_result_rows(batch)
            )
            b = store.archive_batch(m["batch"])
            assert b is not None
            prefix = attempt_prefix(sid, b["nonce"])
            assert (manifest.parent / "attempts.jsonl").read_bytes() == b"".join(
                old_attempt_line(sid, prefix, *a) for a in store.batch_attempt_map(batch)
            )
    finally:
        store.close()


def old_attempt_line(sid: str, prefix: str, attempt_id: int, queue: str, custom_id: str) -> bytes:
    """An attempts.jsonl line as archives before `_attempt_line` was templated wrote it."""
    line = {
        "attempt": attempt_id,
        "sent_as": f"{prefix}-{attempt_id}",
        "queue": queue,
        "custom_id": custom_id,
        "result_id": result_id(sid, attempt_id),
    }
    return orjson.dumps(line) + b"\n"


def old_jsonl_line(r: ResultRow, store_id: str) -> bytes:
    """A results.jsonl line as archives before `jsonl_head`/`jsonl_tail` wrote it."""
    head = b'{"id":"' + result_id(store_id, r.attempt_id).encode() + b'","custom_id":'
    head += orjson.dumps(r.custom_id) + b',"provider":' + orjson.dumps(r.provider)
    if r.body is not None:
        response = (
            b'{"status_code":'
            + orjson.dumps(status_code(r))
            + b',"request_id":'
            + orjson.dumps(r.provider_request_id)
            + b',"body":'
            + r.body
            + b"}"
        )
    else:
        response = b"null"
    if r.state != "cancelled" and r.error_code is None and r.body is not None:
        error = b"null"
    else:
        code = r.error_code or ("cancelled" if r.state == "cancelled" else "failed")
        error = orjson.dumps({"code": code, "message": r.error_message or ""})
    return head + b',"response":' + response + b',"error":' + error + b"}\n"


ODD = ["r1", 'quo"te', "back\\slash", "new\nline", "tab\t", "é ü 漢字 🙂", "\u2028", ""]


@pytest.mark.parametrize("custom_id", ODD)
def test_the_templated_envelope_lines_are_the_bytes_archives_always_held(custom_id: str) -> None:
    """`_attempt_line` and `jsonl_line` (now `jsonl_head` + `jsonl_tail`, the envelope's
    lines built without a ResultRow) give the bytes older archives hold, for every state."""
    assert _attempt_line("lbX", "lb-1", 7, custom_id or "q", custom_id) == old_attempt_line(
        "lbX", "lb-1", 7, custom_id or "q", custom_id
    )
    body = orjson.dumps({"choices": [{"message": {"content": custom_id}}]})
    rows = [
        ("succeeded", 200, body, None, None),
        ("failed", 400, body, "invalid_request", f"bad {custom_id}"),
        ("failed", None, body, "rate_limit_error", None),  # status from the provider's format
        ("failed", None, None, "expired", custom_id),
        ("cancelled", None, None, None, None),
        ("cancelled", 200, body, None, ""),
    ]
    for provider in ("openai", "anthropic", "gone-plugin"):
        for state, status, b, code, message in rows:
            r = ResultRow(
                cursor=0, custom_id=custom_id, state=state, provider=provider,
                status_code=status, provider_request_id=custom_id or None, body=b,
                error_code=code, error_message=message, input_tokens=None,
                output_tokens=None, attempt_id=41,
            )  # fmt: skip
            assert jsonl_line(r, "lbX") == old_jsonl_line(r, "lbX")
            tail = jsonl_tail(state, provider, status, r.provider_request_id, b, code, message)
            head = jsonl_head(result_id("lbX", 41), custom_id, orjson.dumps(provider))
            assert head + tail == old_jsonl_line(r, "lbX")


class Killed(BaseException):
    """The worker dies here (SIGKILL, as far as the store and the work directory can tell)."""


def test_a_worker_killed_mid_ingest_still_leaves_a_whole_archive(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A dies after recording the first chunk of a batch's outcomes, its ingest
    folder (with half a results.jsonl) left behind in the work directory both share; B
    takes the lease over and ingests the batch again. The half-written file is never
    archived: every result is, once, as the store holds it."""
    read_back: list[int] = []
    from_store = Archiver._from_store

    def counted(self: Archiver, attempts_of: int, *args: Any) -> Any:
        read_back.append(attempts_of)
        return from_store(self, attempts_of, *args)

    monkeypatch.setattr(Archiver, "_from_store", counted)
    enqueue(db, 12)
    root, work = tmp_path / "archive", tmp_path / "work"
    work.mkdir()
    with running(seed=22) as emu:
        settings = fast_settings(
            emu,
            max_batch_requests=12,
            ingest_chunk=4,
            archive=ArchiveSettings(url=f"file://{root}"),
        )
        a = Engine(open_store(db), settings, workdir=work)
        b = Engine(open_store(db), settings, workdir=work)
        applied = a.store.apply_outcomes
        chunks: list[int] = []

        def dies_after_one_chunk(batch_id: int, outcomes: Any, *args: Any) -> int:
            if chunks:
                raise Killed
            chunks.append(len(outcomes))
            return applied(batch_id, outcomes, *args)

        a.store.apply_outcomes = dies_after_one_chunk  # type: ignore[method-assign,assignment]
        try:
            with pytest.raises(Killed):
                tick_until(a, lambda: False)
            assert chunks == [4] and request_states(db) == {"succeeded": 4, "submitted": 8}
            assert list(work.glob("ingest-*/env-pending.jsonl"))  # half a file, left there
            b.store.release_claims(a.holder)  # A is dead: B takes its engine lease and claims over
            tick_until(
                b,
                lambda: (
                    not b.store.unfinished_count() and all(r[1] == "done" for r in archives(db))
                ),
            )
        finally:
            b.close()
            b.store.close()
            a.store.close()
    assert [r[1] for r in archives(db)] == ["done"]
    assert len(read_back) == 1  # B's results.jsonl could not stand for the store's: read back
    got = archived_results(root)
    assert got == store_envelope(db) and len(got) == 12
    assert sorted(e["custom_id"] for e in got) == sorted(f"r{i}" for i in range(12))


def test_an_envelope_left_by_an_older_worker_is_digested_before_it_is_sent(
    tmp_path: Path,
) -> None:
    """A spool an older worker left (its env.json has sizes, no digests) is used as before and
    its files digested by the archive step; digests whose size is not the file's are not used."""
    from llmbatch.archive import (
        SPOOL_ATTEMPTS,
        SPOOL_ENVELOPE_V1,
        SPOOL_ENVELOPE_V2,
        SPOOL_RESULTS,
    )

    archiver = object.__new__(Archiver)
    archiver.workdir = tmp_path
    spool = archiver.spool(3)
    spool.mkdir()
    (spool / SPOOL_RESULTS).write_bytes(b'{"id":"a"}\n')
    (spool / SPOOL_ATTEMPTS).write_bytes(b'{"attempt":1}\n')
    sizes = {SPOOL_RESULTS: 11, SPOOL_ATTEMPTS: 14}
    (spool / SPOOL_ENVELOPE_V1).write_text(json.dumps({"batch": 3, "bytes": sizes}))
    paths, known, rebuilt = archiver._envelope(
        3, 3, "lb-x", tmp_path / "work", spooled=True, provider="openai"
    )
    assert paths == (spool / SPOOL_RESULTS, spool / SPOOL_ATTEMPTS) and known == {}
    assert rebuilt is None  # an older worker's results.jsonl holds every result
    stale = {"lines": 1, "bytes": 10, "sha256": "0" * 64}
    digests = {SPOOL_RESULTS: stale, SPOOL_ATTEMPTS: _digest(spool / SPOOL_ATTEMPTS)}
    (spool / SPOOL_ENVELOPE_V1).write_text(
        json.dumps({"batch": 3, "bytes": sizes, "digests": digests})
    )
    _paths, known, _r = archiver._envelope(
        3, 3, "lb-x", tmp_path / "work", spooled=True, provider="openai"
    )
    assert known == {SPOOL_ATTEMPTS: _digest(spool / SPOOL_ATTEMPTS)}
    # successes left to provider files that are not the ones ingest read (downloaded again):
    # every result is read from the store instead
    marker = {"batch": 3, "bytes": sizes, "rebuilt": {"prefix": "lb-x", "attempts": [[1, 1]]}}
    (spool / SPOOL_ENVELOPE_V2).write_text(json.dumps(marker))
    archiver._from_store = lambda *a: ("from", "store")  # type: ignore[method-assign,assignment]
    got = archiver._envelope(3, 3, "lb-x", tmp_path / "work", spooled=False, provider="openai")
    assert got == (("from", "store"), {}, None)
    paths, _k, rebuilt = archiver._envelope(
        3, 3, "lb-x", tmp_path / "work", spooled=True, provider="openai"
    )
    assert rebuilt == {"prefix": "lb-x", "attempts": [[1, 1]]} and paths[0].parent == spool


def test_a_batch_is_archived_as_soon_as_it_is_ingested_not_at_the_end_of_the_tick(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One tick may ingest many batches (at 100,000 requests, 6 of 10 in one): each one's
    archive is started by its ingest, not left for the tick's archive step, which here never
    starts a pass. Not one archive is written by a worker without the engine lease."""
    monkeypatch.setattr(Archiver, "run", lambda self, now, notes: 0)
    enqueue(db, 30)
    root = tmp_path / "archive"
    with running(seed=23) as emu:
        settings = fast_settings(
            emu, max_batch_requests=10, archive=ArchiveSettings(url=f"file://{root}")
        )
        engine = Engine(open_store(db), settings)
        other = Engine(open_store(db), settings)  # no engine lease: ingests, never archives
        try:
            engine.tick(time.time())  # takes the engine lease
            other.tick(time.time())
            assert other.archiver is not None and not other.archiver.engine
            tick_until(engine, lambda: not engine.store.unfinished_count())
            deadline = time.monotonic() + 30
            while [r[1] for r in archives(db)] != ["done"] * 3:
                assert time.monotonic() < deadline, archives(db)
                time.sleep(0.05)
            assert other.archiver._thread is None
        finally:
            other.close()
            other.store.close()
            engine.close()
    assert archived_results(root) == store_envelope(db)


BODIES = {
    "openai": lambda i: {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{i}"}]},
    "gemini": lambda i: {"model": "gemini-2.5-flash", "contents": [{"parts": [{"text": f"{i}"}]}]},
}


# Anthropic's shape is read back from tests/data/archives/v2 (test_archive_versions.py): its
# drain here took 8 s, four times the others'.
@pytest.mark.parametrize("provider", ["gemini", "openai"])
def test_successes_are_rebuilt_from_the_providers_files_through_its_format(
    sqlite_db: str, tmp_path: Path, provider: str
) -> None:
    """Manifest version 2: a success is not written again in results.jsonl (its bytes are in
    the provider's output file); `--from-archive` rebuilds it through the provider's format
    and gives what `llmbatch results` gives from the store, failures, retried requests and
    all, for each provider's result shape."""
    db = sqlite_db
    with Queue(db, "q", provider=provider) as q:
        q.add_many([{"custom_id": f"r{i}", "body": BODIES[provider](i)} for i in range(24)])
    root = tmp_path / "archive"
    with running(seed=24, request_failure_rate=0.4, request_failure_status=500) as emu:
        settings = fast_settings(
            emu,
            max_batch_requests=12,
            retry=RetryPolicy(max_attempts=2, base_seconds=0.05, max_seconds=0.1),
            archive=ArchiveSettings(url=f"file://{root}"),
        )
        engine = Engine(open_store(db), settings)
        try:
            tick_until(
                engine,
                lambda: (
                    not engine.store.unfinished_count()
                    and all(r[1] == "done" for r in archives(db))
                ),
            )
        finally:
            engine.close()
    manifests = [json.loads(m.read_text()) for m in root.rglob("manifest.json")]
    assert len(manifests) >= 3  # retries went in batches of their own
    assert all(m["version"] == 2 for m in manifests)

    def rebuilt_of(m: dict[str, Any]) -> int:
        return sum(b - a + 1 for a, b in m.get("rebuilt", {}).get("attempts", []))

    # a batch whose every request failed (a retry batch at this failure rate may be, as the
    # retries fall into batches by timing) names no success to rebuild: the read-back below,
    # byte for byte against the store, is what says every result is there once
    whole = sum(m["files"]["results.jsonl"]["lines"] for m in manifests)
    rebuilt = sum(rebuilt_of(m) for m in manifests)
    want = store_envelope(db)
    assert whole and rebuilt and len(want) == 24  # failures written whole, successes not
    assert archived_results(root) == want
    by_state = [orjson.loads(x) for x in from_archive(f"file://{root}", state="succeeded")]
    assert sorted(e["id"] for e in by_state) == sorted(e["id"] for e in want if not e["error"])


def test_the_envelope_leaves_successes_to_the_providers_file_under_a_marker_of_its_own(
    tmp_path: Path,
) -> None:
    """During ingest a success is kept by attempt id, every other result as the end of its
    line under its attempt id, with no per-request work for the archive (the attempt map is
    not read); the archive step joins them to the attempt map into results.jsonl and
    attempts.jsonl, digested as written. The marker has a name no older worker reads
    (sharing the work directory during an upgrade, it would take files it does not know)."""
    from llmbatch.archive import (
        SPOOL_ENVELOPE,
        SPOOL_ENVELOPE_V1,
        SPOOL_ENVELOPE_V2,
        SPOOL_PENDING,
        SPOOL_RESULTS,
        Envelope,
    )
    from llmbatch.store.types import Outcome

    carried, maps_read = [4, 5, 6, 9], []

    class Store:
        store_id = "lbX"

        def batch_attempt_map(self, batch_id: int) -> list[tuple[int, str, str]]:
            maps_read.append(batch_id)
            return [(a, "q", f"r{a}") for a in carried]

        def batch_result_count(self, batch_id: int) -> int:
            return 4

        def batch_custom_ids(self, batch_id: int, first: int, last: int) -> list[tuple[int, str]]:
            spans.append((first, last))
            return [(a, f"r{a}") for a in carried if first <= a <= last]

    spans: list[tuple[int, int]] = []
    for old in (SPOOL_ENVELOPE_V1, SPOOL_ENVELOPE_V2):  # an earlier ingest's, by older code
        (tmp_path / old).write_text("{}")
    env = Envelope(Store(), 1, "lbX-n", "openai", tmp_path)  # type: ignore[arg-type]
    body = b'{"choices":[]}'
    outcomes = [
        Outcome(4, "succeeded", status_code=200, body=body),
        Outcome(5, "succeeded", status_code=200, body=body),
        Outcome(6, "failed", status_code=400, body=body, error_code="bad", error_message="m"),
        Outcome(7, "retry", status_code=500, error_code="server_error"),
        Outcome(9, "succeeded", status_code=200, body=body),
    ]
    env.add(outcomes, len(outcomes))
    assert env.whole()
    assert not (tmp_path / SPOOL_ENVELOPE_V1).exists()
    assert not (tmp_path / SPOOL_ENVELOPE_V2).exists()
    marker = json.loads((tmp_path / SPOOL_ENVELOPE).read_text())
    assert marker["rebuilt"] == {"prefix": "lbX-n", "attempts": [[4, 5], [9, 9]]}
    assert maps_read == []  # nothing per request during ingest

    archiver = object.__new__(Archiver)
    archiver.store = Store()  # type: ignore[assignment]
    work = tmp_path / "work"
    work.mkdir()
    runs = marker["rebuilt"]["attempts"]
    pending = tmp_path / SPOOL_PENDING
    got = archiver._joined(1, "lbX-n", "openai", work, pending, runs)
    assert got is not None
    (results, attempts), digests = got
    assert attempts is not None  # made here: no attempts.jsonl was sent early
    head = jsonl_head(result_id("lbX", 6), "r6", b'"openai"')
    tail = jsonl_tail("failed", "openai", 400, None, body, "bad", "m")
    assert results.read_bytes() == head + tail
    assert attempts.read_bytes() == b"".join(
        old_attempt_line("lbX", "lbX-n", a, "q", f"r{a}") for a in carried
    )
    assert digests == {SPOOL_RESULTS: _digest(results), SPOOL_ATTEMPTS: _digest(attempts)}
    # attempts.jsonl sent as the batch was: only the failure's attempt read from the store
    maps_read.clear()
    early = archiver._joined(1, "lbX-n", "openai", work, pending, runs, [[4, 6], [9, 9]])
    assert early is not None and early[0] == (results, None) and maps_read == []
    assert results.read_bytes() == head + tail and early[1] == {SPOOL_RESULTS: _digest(results)}
    assert spans == [(6, 6)]
    # a result or a success of an attempt the batch did not carry: read from the store
    carried = [4, 5, 9]
    assert archiver._joined(1, "lbX-n", "openai", work, pending, runs) is None
    assert archiver._joined(1, "lbX-n", "openai", work, pending, runs, [[4, 5], [9, 9]]) is None
    carried = [4, 6, 9]
    assert archiver._joined(1, "lbX-n", "openai", work, pending, runs) is None
    assert (
        archiver._joined(1, "lbX-n", "openai", work, pending, runs, [[4, 4], [6, 6], [9, 9]])
        is None
    )
    # as the archive step takes it from the spool: the successes need the files ingest read
    carried = [4, 5, 6, 9]
    archiver.workdir = tmp_path
    spool = archiver.spool(1)
    spool.mkdir()
    for name in (SPOOL_PENDING, SPOOL_ENVELOPE):
        (tmp_path / name).rename(spool / name)
    paths, known, rebuilt = archiver._envelope(1, 1, "lbX-n", work, spooled=True, provider="openai")
    assert paths[0].read_bytes() == head + tail and rebuilt == marker["rebuilt"]
    assert paths[1] is not None
    assert known == {SPOOL_RESULTS: _digest(paths[0]), SPOOL_ATTEMPTS: _digest(paths[1])}
    archiver._from_store = lambda *a: ("from", "store")  # type: ignore[method-assign,assignment]
    fallback = archiver._envelope(1, 1, "lbX-n", work, spooled=False, provider="openai")
    assert fallback == (("from", "store"), {}, None)


def test_the_input_and_result_files_are_sent_early_and_once(db: str, tmp_path: Path) -> None:
    """Each batch's input file and attempts.jsonl are sent to its archive once the batch is
    sent, its result files once downloaded (while ingest reads them): the archive takes
    those uploads, so no file is sent twice, and after a batch's ingest only what the store
    adds is left."""
    enqueue(db, 30)
    root = tmp_path / "archive"
    puts: list[tuple[str, str]] = []
    put = FileTarget.put

    def counted(self: FileTarget, key: str, path: Path, sha256: str | None = None) -> None:
        puts.append((key, threading.current_thread().name))
        put(self, key, path, sha256)

    with running(seed=24) as emu, pytest.MonkeyPatch.context() as mp:
        mp.setattr(FileTarget, "put", counted)
        settings = fast_settings(
            emu, max_batch_requests=10, archive=ArchiveSettings(url=f"file://{root}")
        )
        engine = Engine(open_store(db), settings)
        try:
            tick_until(engine, lambda: not engine.store.unfinished_count())
        finally:
            engine.close()
    assert [r[1] for r in archives(db)] == ["done"] * 3
    keys = [k for k, _ in puts]
    assert len(keys) == len(set(keys)) == 3 * 5  # each file of each batch sent once
    early = {k.rsplit("/", 1)[1] for k, thread in puts if "early" in thread}
    assert early == {"input.jsonl", "output.jsonl", "attempts.jsonl"}, puts
    assert not list(tmp_path.rglob("early-*"))  # the links the uploads read are gone
    got = sorted((orjson.loads(x) for x in from_archive(f"file://{root}")), key=lambda e: e["id"])
    assert got == store_envelope(db)


class _StoreId:
    store_id = "lbtest"


def test_an_early_upload_is_taken_only_for_the_very_file_it_sent(tmp_path: Path) -> None:
    """A file downloaded again (a new file under the same name), an upload that failed, or
    a worker without the engine lease: the archive sends the file itself. Uploads not
    started when the engine closes are dropped, with the links they would have read."""
    root, work = tmp_path / "archive", tmp_path / "work"
    work.mkdir()
    target = FileTarget(root, f"file://{root}")
    archiver = Archiver(
        _StoreId(),  # type: ignore[arg-type]
        ArchiveSettings(url=f"file://{root}"),
        lambda name: None,  # type: ignore[arg-type,return-value]
        work,
        target=target,
        background=True,
    )
    folder = "lbtest/batch-00000007"
    output = work / "output.jsonl"
    output.write_bytes(b'{"a": 1}\n')
    archiver.early(7, "output.jsonl", output)  # not the engine lease's holder: nothing
    assert archiver._early_of(folder) == {} and not root.exists()
    archiver.engine = True
    archiver.early(7, "output.jsonl", output)
    got = archiver._early_of(folder)["output.jsonl"]
    taken = _taken(got, output)
    assert taken is not None and taken.result() == _digest(output)
    assert (root / folder / "output.jsonl").read_bytes() == output.read_bytes()
    assert archiver._early_of(folder) == {}  # taken once

    archiver.early(7, "output.jsonl", output)
    again = work / "again.jsonl"
    again.write_bytes(b'{"a": 2}\n')
    again.replace(output)  # downloaded again: another file under the name
    assert _taken(archiver._early_of(folder)["output.jsonl"], output) is None

    def fails(key: str, path: Path, sha256: str | None = None) -> None:
        raise ArchiveUnavailable("down")

    target.put = fails  # type: ignore[method-assign]
    archiver.early(7, "output.jsonl", output)
    assert _taken(archiver._early_of(folder)["output.jsonl"], output) is None

    gate = threading.Event()

    def waits(key: str, path: Path, sha256: str | None = None) -> None:
        gate.wait(5)

    target.put = waits  # type: ignore[method-assign]
    for _ in range(3):
        archiver.early(8, "input.jsonl", output)
    threading.Timer(0.2, gate.set).start()
    archiver.close()  # the first waited for, the others dropped
    assert archiver._early == {} and not list(work.glob("early-*"))
    assert output.read_bytes() == b'{"a": 2}\n'  # never touched


def test_attempt_runs_within_and_spans() -> None:
    from llmbatch.archive import _spans, _within

    assert _within([[3, 5], [9, 9]], [[1, 6], [8, 12]])
    assert not _within([[3, 7]], [[1, 6], [7, 12]])  # carried, but not as one run: never so
    assert not _within([[13, 13]], [[1, 12]]) and _within([], [])
    assert _spans([[1, 2], [900, 900], [5000, 5001]]) == [[1, 900], [5000, 5001]]
