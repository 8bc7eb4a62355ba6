"""A real S3-compatible server for tests (moto in server mode, a subprocess on a free port,
spoken to over HTTP by boto3) and a small fault-injecting HTTP proxy in front of it (moto
has none): down (connections refused), a 5xx storm, slow answers, a connection cut in the
middle of a multipart upload's part."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCESS_KEY = "AKIATESTARCHIVE00000"
SECRET_KEY = "s3-secret-never-in-store-9f3b1c77"  # checked for in the store and the logs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def aws_env() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **aws_env()},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # its imports take a minute on a loaded machine
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint)


@dataclass
class Faults:
    """What the proxy does now (set by the test; read per request)."""

    down: bool = False  # every connection is reset at once
    status: int | None = None  # every request is answered with this status
    delay: float = 0.0  # seconds before each request is passed on
    cut_part: int | None = None  # an UploadPart of this number is cut half way through
    fail_after_puts: int | None = None  # PUTs after this many are answered 503
    puts: int = 0
    seen: list[str] = field(default_factory=list)  # "METHOD path?query" of every request


class FaultProxy:
    """An HTTP proxy on a free loopback port passing requests to `upstream` as `faults` say."""

    def __init__(self, upstream: str) -> None:
        self.faults = Faults()
        host, port = upstream.removeprefix("http://").split(":")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                f = proxy.faults
                f.seen.append(f"{self.command} {self.path}")
                if f.down:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                length = int(self.headers.get("content-length") or 0)
                if f.cut_part is not None and f"partNumber={f.cut_part}&" in self.path + "&":
                    self.rfile.read(length // 2)  # half a part arrives, then the line is cut
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = self.rfile.read(length) if length else b""
                if f.delay:
                    time.sleep(f.delay)
                status = f.status
                if self.command == "PUT" and "uploadId=" not in self.path:
                    f.puts += 1
                    if f.fail_after_puts is not None and f.puts > f.fail_after_puts:
                        status = 503
                if status is not None:
                    msg = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(status)
                    self.send_header("content-type", "application/xml")
                    self.send_header("content-length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                try:
                    hdrs = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    conn.request(self.command, self.path, body=body, headers=hdrs)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
