"""Serving the emulator: `serve` (the `llmbatch emulator` command) and `running` (a
background server on a free loopback port, for tests and notebooks)."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from llmbatch import defaults
from llmbatch.emulator.app import create_app
from llmbatch.emulator.client import EmulatorControl
from llmbatch.errors import ConfigError


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; a port in use or not allowed is one clear ConfigError
    (said before anything claims to be serving)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"--host {host!r}: not an address of this machine ({exc.strerror})"
        ) from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        why = {
            errno.EADDRINUSE: "is in use (another emulator or server?): pick another with --port, "
            "or 0 for any free one",
            errno.EACCES: "needs privileges: use a port above 1023",
            errno.EADDRNOTAVAIL: "is not on an address of this machine",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise ConfigError(f"cannot listen on {host}:{port}: the port {why}") from None
    return sock


def serve(
    host: str = defaults.HOST,
    port: int = defaults.EMULATOR_PORT,
    data_dir: str | Path | None = None,
    time_scale: float = defaults.EMULATOR_TIME_SCALE,
    **config: Any,
) -> None:
    """Serve the emulator until interrupted; the banner says where once the port is bound."""
    if time_scale < 0:
        raise ConfigError(f"--time-scale {time_scale}: must be 0 (frozen) or more")
    sock = bind(host, port)
    try:
        app = create_app(data_dir, time_scale, **config)
        port = sock.getsockname()[1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        root = f"http://{shown}:{port}"
        print(
            f"llmbatch emulator: OpenAI at {root}/v1, Azure OpenAI, Anthropic and Gemini at {root}"
        )
        print(f'  openai.OpenAI(base_url="{root}/v1", api_key="any-non-empty-key")')
        print(
            f'  openai.AzureOpenAI(azure_endpoint="{root}", api_key="any", api_version="2024-10-21")'
        )
        print(f'  anthropic.Anthropic(base_url="{root}", api_key="any-non-empty-key")')
        print(f'  genai.Client(api_key="any", http_options={{"base_url": "{root}"}})')
        print(f"  llmbatch itself: OPENAI_BASE_URL={root}/v1 ANTHROPIC_BASE_URL={root}")
        print(f"  control API: {root}/_emulator (faults, clock, call log; docs/emulator.md)")
        data = app.state.emulator.data_dir
        print(f"  data dir: {data}" + ("" if data_dir else " (temporary)"), flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        server.run(sockets=[sock])
    finally:
        sock.close()


class _QuickServer(uvicorn.Server):
    """uvicorn's server, stopping at once: uvicorn checks `should_exit` every 0.1 s and then
    waits a fixed 0.1 s for connections to close, 0.2 s per stop that the test suite paid for
    each of the hundreds of emulators it starts and stops (`running`)."""

    _woken: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()  # set once serving: `running` waits on it, not a poll

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()
        while not await self.on_tick(0):  # counter 0: the date header is kept current
            with suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout=1.0)

    def stop(self) -> None:
        """Ask the server to exit, from any thread, and wake its loop to see it."""
        self.should_exit = True
        loop, woken = self._loop, self._woken
        if loop is not None and woken is not None:
            with suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(woken.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:  # uvicorn's own steps, without its fixed 0.1 s pause (their names since 0.30)
            servers, state, lifespan = self.servers, self.server_state, self.lifespan
            wait_tasks = self._wait_tasks_to_complete
        except AttributeError:  # pragma: no cover - another uvicorn: its own shutdown
            await super().shutdown(sockets)
            return
        for server in servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(state.connections):
            connection.shutdown()
        while state.connections and not self.force_exit:  # idle ones close at once
            await asyncio.sleep(0.002)
        await wait_tasks()
        if not self.force_exit:
            await lifespan.shutdown()


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
    # Accepted connections inherit this: without it a kept-alive connection waits ~40 ms
    # per call (Nagle against the client's delayed ACK), as `uvicorn.run` avoids itself.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _QuickServer(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the emulator did not start")
        server.ready.wait(0.005)
    url = f"http://127.0.0.1:{port}"
    try:
        yield RunningEmulator(
            url, url + "/v1", EmulatorControl(url), app.state.emulator.data_dir, app
        )
    finally:
        server.stop()
        thread.join(timeout=30)
        sock.close()
