"""`llmbatch demo`: the whole lifecycle offline, in seconds, for a newcomer.

Starts the emulator in-process, uses a temporary database (never ./llmbatch.db), enqueues
the shipped example requests, runs them to completion with progress fed by the emulator's
own counts, and prints the status table, two of the results, and what the batch cost against
real time. The temporary folder is removed at the end unless `keep` (then its path and the
commands to read it are printed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

from rich.console import Console

from llmbatch import views
from llmbatch.engine import Engine, EngineSettings
from llmbatch.export import export
from llmbatch.importer import enqueue_file
from llmbatch.report import build, render
from llmbatch.store import open_store

DEMO_KEY_ENV = "LLMBATCH_DEMO_KEY"  # the emulator takes any key; this one is not a secret
SHOWN = 2  # results printed (trimmed) so the newcomer sees their shape


def example_requests() -> Path:
    return Path(str(resources.files("llmbatch").joinpath("examples", "requests.jsonl")))


def run_demo(keep: bool = False) -> Path | None:
    """Run the demo; returns the kept database's path (None when nothing is kept)."""
    from llmbatch.emulator import running

    console = Console(highlight=False)
    folder = Path(tempfile.mkdtemp(prefix="llmbatch-demo-"))
    db = folder / "demo.db"
    started = time.monotonic()
    try:
        with running(data_dir=folder / "emulator") as emu:
            os.environ.setdefault(DEMO_KEY_ENV, "demo-key")
            console.print(
                f"[bold]llmbatch demo[/bold]: a local batch API emulator at {emu.base_url}"
            )
            store = open_store(str(db))
            try:
                report = enqueue_file(store, example_requests(), queue="demo")
                console.print(report.summary())
                settings = EngineSettings(
                    providers={"openai": {"base_url": emu.base_url, "api_key_env": DEMO_KEY_ENV}}
                )
                engine = Engine(store, settings)
                try:
                    views.drain_with_progress(engine, "demo", timeout=60)
                finally:
                    engine.close()
                print(views.counts_table(store.counts("demo")), end="")
                print(f"\nresults (OpenAI's batch output shape; {SHOWN} of {report.added}):")
                for i, line in enumerate(export(store, queue="demo", order="input").lines()):
                    if i >= SHOWN:
                        break
                    text = line.decode().rstrip()
                    print("  " + (text if len(text) <= 96 else text[:93] + "..."))
                print()
                print(render(build(store, queue="demo", group_by=("queue", "model"))), end="")
            finally:
                store.close()
        console.print(f"done in {time.monotonic() - started:.1f} s.")
        if keep:
            console.print(f"kept {folder}; read every result with:")
            console.print(f"  llmbatch --db {db} results --queue demo")
            return db
        console.print("run `llmbatch demo --keep` to keep the database and read every result.")
        return None
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
