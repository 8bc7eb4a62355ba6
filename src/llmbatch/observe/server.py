"""`llmbatch worker --metrics-port`: /metrics, /healthz and /readyz over plain HTTP, served by
a thread of the worker (the standard library's server: a scrape must not wait on the engine).

The store's figures come from a `FigureCache` on a connection of its own, read again at most
every 15 s in the background; /readyz reads the lease on another, so a long figures read
never delays a health check. With a token (`LLMBATCH_METRICS_TOKEN`), /metrics answers only
`Authorization: Bearer TOKEN` (Prometheus's `authorization` setting); the health checks stay
open for probes that send no header.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson

from llmbatch import defaults
from llmbatch.observe.figures import FigureCache
from llmbatch.observe.health import WorkerState, readiness
from llmbatch.observe.metrics import ProcessMeter, StoreCollector, require
from llmbatch.store.base import Store

if TYPE_CHECKING:
    from llmbatch.engine import Engine, TickReport

TOKEN_ENV = "LLMBATCH_METRICS_TOKEN"


class MetricsServer:
    """The worker's HTTP endpoints and the counters its loop feeds (`on_tick`)."""

    def __init__(
        self,
        engine: Engine,
        figures_store: Store,
        health_store: Store,
        *,
        host: str = defaults.HOST,
        port: int = 0,
        outage_since: Callable[[], float | None] = lambda: None,
        max_age: float = defaults.METRICS_MAX_AGE_S,
        token: str | None = None,
    ) -> None:
        require()
        from prometheus_client import CollectorRegistry

        from llmbatch.emulator.server import bind

        self.registry = CollectorRegistry(auto_describe=False)
        self.meter = ProcessMeter(self.registry)
        # a read of a big store is paced by its own cost (at most a sixth of the time)
        self.cache = FigureCache(figures_store, max_age=max_age, pace=5.0)
        self.store_figures = StoreCollector(self.cache, engine.settings.quotas)
        self.meter.instrument(engine)
        self._stop = threading.Event()
        self.state = WorkerState(engine.holder, time.time(), outage_since=outage_since)
        self.health_store = health_store
        self.token = token or None
        self._sock = bind(host, port)  # a port in use is one clear error, before serving
        self.port = int(self._sock.getsockname()[1])
        self.host = host
        self._httpd = _server(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="llmbatch-metrics", daemon=True
        )

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{shown}:{self.port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        self.cache.keep_fresh(self._stop)
        return self

    def on_tick(self, report: TickReport) -> None:
        """The worker made a step: its role and time, for /readyz and the counters."""
        self.meter.on_tick(report)
        self.state.last_tick_at = time.time()
        self.state.role = "standby" if report.held_by is not None else "serving"
        self.state.lease_holder = report.held_by

    def stop(self) -> None:
        self.state.role = "stopping"
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def metrics(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry)) + self.store_figures.render()

    def allowed(self, authorization: str | None) -> bool:
        """Whether a scrape may read /metrics: no token set, or the right one as a bearer."""
        if self.token is None:
            return True
        scheme, _, sent = (authorization or "").partition(" ")
        return scheme == "Bearer" and hmac.compare_digest(
            sent.strip().encode(), self.token.encode()
        )

    def ready(self) -> tuple[int, dict[str, Any]]:
        return readiness(self.state, self.health_store, self.meter.state)


def _server(owner: MetricsServer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics" and not owner.allowed(self.headers.get("authorization")):
                self._send(
                    401,
                    f"/metrics needs Authorization: Bearer <{TOKEN_ENV}>\n".encode(),
                    "text/plain; charset=utf-8",
                    {"www-authenticate": 'Bearer realm="llmbatch"'},
                )
            elif path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST

                self._send(200, owner.metrics(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                status, body = owner.ready()
                self._send(status, orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
            else:
                self._send(404, b'{"error": "not found: /metrics, /healthz or /readyz"}\n')

        def _send(
            self,
            status: int,
            payload: bytes,
            kind: str = "application/json",
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass  # scrapes every 15 s would drown the worker's own log

    httpd = ThreadingHTTPServer(owner._sock.getsockname()[:2], Handler, bind_and_activate=False)
    httpd.socket.close()
    httpd.socket = owner._sock
    httpd.daemon_threads = True
    return httpd
