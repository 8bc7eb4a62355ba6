"""`llmbatch demo`: the whole lifecycle offline, in under a minute, for a newcomer.

Starts the emulator in-process, uses a temporary database (never ./llmbatch.db), enqueues
the shipped example requests, runs them to completion with a progress bar, and prints the
status table, what the batch cost against real time, and the command to read the results.
"""

from __future__ import annotations

import os
import tempfile
import time
from importlib import resources
from pathlib import Path

from rich.console import Console

from llmbatch import views
from llmbatch.engine import Engine, EngineSettings
from llmbatch.importer import enqueue_file
from llmbatch.report import build, render
from llmbatch.store import open_store

DEMO_KEY_ENV = "LLMBATCH_DEMO_KEY"  # the emulator takes any key; this one is not a secret


def example_requests() -> Path:
    return Path(str(resources.files("llmbatch").joinpath("examples", "requests.jsonl")))


def run_demo(keep: bool = True) -> Path:
    """Run the demo; returns the path of its database."""
    from llmbatch.emulator import running

    console = Console(highlight=False)
    folder = Path(tempfile.mkdtemp(prefix="llmbatch-demo-"))
    db = folder / "demo.db"
    started = time.monotonic()
    with running(data_dir=folder / "emulator") as emu:
        os.environ.setdefault(DEMO_KEY_ENV, "demo-key")
        console.print(
            f"[bold]llmbatch demo[/bold]: a local batch API emulator at {emu.base_url}, database {db}"
        )
        store = open_store(str(db))
        report = enqueue_file(store, example_requests(), queue="demo")
        console.print(report.summary())
        settings = EngineSettings(
            poll_interval=0.2, max_poll_interval=1.0, settle_seconds=1.0,
            providers={"openai": {"base_url": emu.base_url, "api_key_env": DEMO_KEY_ENV}},
        )  # fmt: skip
        engine = Engine(store, settings)
        try:
            views.drain_with_progress(engine, "demo", timeout=60)
        finally:
            engine.close()
        views.print_status(store.counts("demo"))
        print(render(build(store, queue="demo", group_by=("queue", "model"))), end="")
        store.close()
    console.print(f"done in {time.monotonic() - started:.1f} s. Read the results with:")
    console.print(f"  llmbatch --db {db} results --queue demo")
    return db
