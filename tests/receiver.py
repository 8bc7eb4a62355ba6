"""A real HTTP webhook receiver for tests and benchmarks: it verifies every delivery's
signature with `llmbatch.webhooks.verify` (as a user's receiver would), records it, and
answers as told (a status, or holding a delivery until released)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llmbatch.webhooks import WebhookVerificationError, verify


@dataclass
class Delivery:
    event_id: str
    payload: dict[str, Any] | None  # None: the signature did not check out
    at: float
    error: str | None = None


@dataclass
class Receiver:
    secret: str
    status: int = 200
    hold: threading.Event | None = None  # set: each delivery waits for it before answering
    deliveries: list[Delivery] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                at = time.time()
                try:
                    payload: dict[str, Any] | None = verify(
                        body, dict(self.headers), receiver.secret
                    )
                    error = None
                except WebhookVerificationError as exc:
                    payload, error = None, str(exc)
                receiver.deliveries.append(
                    Delivery(self.headers.get("webhook-id", ""), payload, at, error)
                )
                receiver.entered.set()
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                self.send_response(receiver.status if error is None else 400)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/llmbatch"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def verified(self) -> dict[str, dict[str, Any]]:
        """Each event id received with a good signature, deduped (the first payload kept)."""
        out: dict[str, dict[str, Any]] = {}
        for d in list(self.deliveries):
            if d.payload is not None:
                out.setdefault(d.event_id, d.payload)
        return out
