"""Make an archive as a given version of llmbatch writes it, with what `llmbatch results`
gave from the store beside it, for `tests/e2e/test_archive_versions.py`:

    .venv/bin/python tests/data/archives/make_archive.py tests/data/archives/v1 --commit <sha>

Writes `<out>/archive/` (a `file://` archive: 4 batches of OpenAI and Anthropic requests,
some failed for good, some retried in a batch of their own), `<out>/expected.jsonl` (the
store's envelope lines, sorted by id) and `<out>/made.json` (the commit and manifest version).
Run it with the code of that commit on the path (its own worktree's venv)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))  # tests/: helpers

from helpers import E2E_KEY_ENV, fast_settings
from llmbatch import Queue
from llmbatch.archive import ArchiveSettings
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.export import export
from llmbatch.retry import RetryPolicy
from llmbatch.store import open_store

BODIES = {
    "openai": lambda i: {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{i}"}]},
    "anthropic": lambda i: {
        "model": "claude-haiku-4-5",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": f"{i}"}],
    },
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--commit", required=True)
    args = ap.parse_args()
    os.environ.setdefault(E2E_KEY_ENV, "sk-archive-fixture")
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    root = out / "archive"
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "store.db")
        for provider, n in (("openai", 16), ("anthropic", 8)):
            with Queue(db, provider, provider=provider) as q:
                q.add_many([{"custom_id": f"r{i}", "body": BODIES[provider](i)} for i in range(n)])
        with running(seed=41, request_failure_rate=0.4, request_failure_status=500) as emu:
            settings = fast_settings(
                emu,
                max_batch_requests=12,
                retry=RetryPolicy(max_attempts=2, base_seconds=0.05, max_seconds=0.1),
                archive=ArchiveSettings(url=f"file://{root}"),
            )
            store = open_store(db)
            engine = Engine(store, settings)
            deadline = time.monotonic() + 120
            try:
                while store.unfinished_count() or store.archive_waiting():
                    assert time.monotonic() < deadline, "not drained"
                    engine.tick(time.time())
                    time.sleep(0.02)
            finally:
                engine.close()
        lines = sorted(export(store).lines(), key=lambda x: json.loads(x)["id"])
        store.close()
    (out / "expected.jsonl").write_bytes(b"".join(lines))
    versions = sorted({json.loads(m.read_text())["version"] for m in root.rglob("manifest.json")})
    (out / "made.json").write_text(
        json.dumps({"commit": args.commit, "manifest_versions": versions}, indent=2) + "\n"
    )
    print(f"{out}: {len(lines)} results, manifest versions {versions}")


if __name__ == "__main__":
    main()
