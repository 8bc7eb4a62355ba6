"""Serving the emulator: `serve` (the `llmbatch emulator` command) and `running` (a
background server on a free loopback port, for tests and notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from llmbatch.emulator.app import create_app
from llmbatch.emulator.client import EmulatorControl


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: str | Path | None = None,
    time_scale: float = 1.0,
    **config: Any,
) -> None:
    """Serve the emulator until interrupted, after printing how to point a client at it."""
    app = create_app(data_dir, time_scale, **config)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    root = f"http://{shown}:{port}"
    print(
        f"llmbatch emulator: OpenAI at {root}/v1, Azure OpenAI at {root} (control: {root}/_emulator)"
    )
    print(f'  openai.OpenAI(base_url="{root}/v1", api_key="any-non-empty-key")')
    print(f'  openai.AzureOpenAI(azure_endpoint="{root}", api_key="any", api_version="2024-10-21")')
    print(f'  anthropic.Anthropic(base_url="{root}", api_key="any-non-empty-key")')
    print(f'  genai.Client(api_key="any", http_options={{"base_url": "{root}"}})')
    data = app.state.emulator.data_dir
    print(f"  data dir: {data}" + ("" if data_dir else " (temporary)"), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@dataclass
class RunningEmulator:
    """A running emulator: where it is and how to steer it."""

    url: str
    base_url: str
    control: EmulatorControl
    data_dir: Path
    app: Any


@contextmanager
def running(
    data_dir: str | Path | None = None, time_scale: float = 1.0, **config: Any
) -> Iterator[RunningEmulator]:
    """Run the emulator over real HTTP on a free loopback port in a background thread.

    Yields a RunningEmulator: `.base_url` (`http://127.0.0.1:PORT/v1`) for the OpenAI SDK,
    `.url` (the root, the Azure endpoint) and `.control` for the control API."""
    app = create_app(data_dir, time_scale, **config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the emulator did not start")
        time.sleep(0.005)
    url = f"http://127.0.0.1:{port}"
    try:
        yield RunningEmulator(
            url, url + "/v1", EmulatorControl(url), app.state.emulator.data_dir, app
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
