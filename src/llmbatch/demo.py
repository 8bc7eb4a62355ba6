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

import orjson
from rich.console import Console

from llmbatch import views
from llmbatch.engine import Engine, EngineSettings
from llmbatch.export import export, jsonl_line, output_text
from llmbatch.importer import enqueue_file
from llmbatch.report import build, render
from llmbatch.store import open_store
from llmbatch.store.base import Store

DEMO_KEY_ENV = "LLMBATCH_DEMO_KEY"  # the emulator takes any key; this one is not a secret
SHOWN = 3  # results printed so the newcomer sees what came back, and in what shape


def example_requests() -> Path:
    return Path(str(resources.files("llmbatch").joinpath("examples", "requests.jsonl")))


def _results_sample(store: Store) -> str:
    """A few results as text, and the first as the envelope `llmbatch results` writes."""
    lines, first = [], None
    for n, row in enumerate(export(store, queue="demo", order="input")):
        if n >= SHOWN:
            break
        envelope = orjson.loads(jsonl_line(row, store.store_id))
        first = first or envelope
        text = output_text(row.provider, envelope["response"]["body"]) or "(an embedding)"
        lines.append(f"  {row.custom_id}  {envelope['response']['status_code']}  {text[:60]!r}")
    if first is not None and first["response"] is not None:
        first["response"]["body"] = "{...}"
        lines.append("each line of `llmbatch results` reads, in OpenAI's batch output shape:")
        lines.append("  " + orjson.dumps(first).decode())
    return "results:\n" + "\n".join(lines)


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
                console.print(report.summary(), soft_wrap=True)
                settings = EngineSettings(
                    providers={"openai": {"base_url": emu.base_url, "api_key_env": DEMO_KEY_ENV}}
                )
                engine = Engine(store, settings)
                try:
                    views.drain_with_progress(engine, "demo", timeout=60)
                finally:
                    engine.close()
                print(views.counts_table(store.counts("demo")), end="")
                print()
                print(_results_sample(store))
                print()
                print(render(build(store, queue="demo", group_by=("queue", "model"))), end="")
            finally:
                store.close()
        # plain prints: a command to copy must not be wrapped at the terminal's edge
        print(f"done in {time.monotonic() - started:.1f} s.")
        if keep:
            print(f"kept {folder}; read every result with:")
            print(f"  llmbatch --db {db} results --queue demo")
            return db
        print("run `llmbatch demo --keep` to keep the database and read every result.")
        return None
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
