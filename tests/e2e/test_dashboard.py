"""`llmbatch dashboard` in a real browser: Debian's Chromium driven by Playwright (never a
downloaded browser), on a store with live work on the emulator. The page's figures must change
as batches land without a reload; bad input (SQL or HTML in a search, a custom_id that is
markup, a store that goes away) gives a clear message or an empty result, never a traceback or
an injected script. A screenshot of each view is written to build/screenshots/."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn

from helpers import cli, fast_settings
from llmbatch import Queue
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.observe.dashboard import create_app
from llmbatch.store import Store, open_store
from observe_helpers import get

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
XSS_ID = '<img src=x onerror="window.__pwned=1">'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        yield b
        b.close()


@contextmanager
def dashboard(store: Store, token: str | None = None) -> Iterator[str]:
    """The dashboard app over real HTTP on a free loopback port, figures at most 0.2 s old."""
    app = create_app(store, token=token, max_age=0.2)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def enqueue(db: str, queue: str, ids: list[str], model: str = "gpt-4o-mini") -> None:
    with Queue(db, queue) as q:
        q.add_many(
            {
                "custom_id": cid,
                "body": {
                    "model": model,
                    "max_tokens": 20,
                    "messages": [{"role": "user", "content": f"tag {cid}"}],
                },
            }
            for cid in ids
        )


def drain(engine: Engine) -> None:
    deadline = time.monotonic() + 60
    while engine.store.unfinished_count():
        engine.tick(time.time())
        assert time.monotonic() < deadline, "not drained"
        time.sleep(0.05)


def until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "the page did not show it in time"
        time.sleep(0.1)


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.inner_text()).strip()


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    def dialog(d: Any) -> None:  # an alert() would be an injected script running
        errors.append("dialog " + d.message)
        d.dismiss()

    page.on("dialog", dialog)
    page.goto(url + "/")
    page.wait_for_selector("body[data-loaded]")
    return page, errors


@pytest.mark.slow
def test_figures_change_as_batches_land(browser: Any, sqlite_db: str, tmp_path: Path) -> None:
    db = sqlite_db
    enqueue(db, "nightly", [f"n{i}" for i in range(20)])
    with running() as emu:
        engine = Engine(open_store(db), fast_settings(emu, max_batch_requests=8))
        store = open_store(db, create=False)
        store.set_budget("*", "day", 2_000_000, time.time())  # 2 USD a day, every queue
        try:
            with dashboard(store) as url:
                page, errors = open_page(browser, url)
                assert text(page, "#total") == "20"
                assert text(page, "#read-back") == "0"
                assert (
                    page.locator('[data-cell="nightly/openai/gpt-4o-mini/queued"]').inner_text()
                    == "20"
                )
                shot(page, "dashboard-queued")
                drain(engine)  # three batches land while the page is open
                until(lambda: text(page, "#read-back") == "20")
                cell = '[data-cell="nightly/openai/gpt-4o-mini/succeeded"]'
                until(
                    lambda: page.locator(cell).count() and page.locator(cell).inner_text() == "20"
                )
                assert page.locator("#batches tbody tr").count() == 3
                assert text(page, "#batches tbody tr td:nth-child(5)") == "done"
                until(lambda: page.locator("#chart").get_attribute("data-days") == "1")
                assert page.locator("#chart canvas").count() == 1  # uPlot drew, from the wheel
                assert "saved $" in text(page, "#cost-total")
                assert "all queues" in text(page, "#budgets tbody")
                # a second queue arrives and lands, still without a reload
                enqueue(db, "evals", [f"e{i}" for i in range(12)], model="gpt-4o")
                until(lambda: text(page, "#total") == "32")
                drain(engine)
                until(lambda: text(page, "#read-back") == "32")
                shot(page, "dashboard-done")
                # a batch's timeline
                page.locator("#batches tbody tr").first.click()
                until(lambda: "submitted" in text(page, "#timeline-events"))
                timeline = text(page, "#timeline-events")
                assert "ingested" in timeline and "uploaded" in timeline
                # one request, without bodies, then with them
                page.fill("#custom-id", "n3")
                page.click("#find button")
                until(lambda: "succeeded" in text(page, "#found"))
                assert "request body" not in text(page, "#found")
                page.check("#bodies")
                page.click("#find button")
                until(lambda: "response body" in text(page, "#found"))
                assert "tag n3" in text(page, "#found")
                shot(page, "dashboard-request")
                assert not errors, errors
        finally:
            engine.close()
            store.close()


@pytest.mark.slow
def test_markup_and_sql_in_the_store_and_the_search_stay_text(browser: Any, sqlite_db: str) -> None:
    db = sqlite_db
    enqueue(db, "x", [XSS_ID, "plain"])
    enqueue(db, "x", ["broken"], model="no-such-model-anywhere")
    with running() as emu:
        engine = Engine(open_store(db), fast_settings(emu))
        store = open_store(db, create=False)
        try:
            drain(engine)
            with dashboard(store) as url:
                page, errors = open_page(browser, url)
                until(lambda: page.locator("#failures tbody tr").count() >= 1)
                assert "broken" in text(page, "#failures tbody")
                searches = (
                    "'; DROP TABLE requests; --",
                    "<script>window.__pwned=1</script>",
                    "x" * 600,
                )
                for query in searches:
                    page.fill("#custom-id", query[:512])
                    page.click("#find button")
                    until(lambda: "No request" in text(page, "#found"))
                page.fill("#custom-id", XSS_ID)
                page.check("#bodies")
                page.click("#find button")
                until(lambda: "succeeded" in text(page, "#found"))
                assert XSS_ID in text(page, "#found")  # shown as text
                assert page.locator("#found img").count() == 0
                assert page.evaluate("window.__pwned") is None
                shot(page, "dashboard-markup")
                assert not errors, errors
            assert store.unfinished_count() == 0 and len(store.counts()) >= 1  # nothing dropped
        finally:
            engine.close()
            store.close()


@pytest.mark.slow
def test_a_store_that_goes_away_shows_a_banner(browser: Any, pg_dsn: str) -> None:
    enqueue(pg_dsn, "q", ["a", "b"])
    store = open_store(pg_dsn, create=False)
    try:
        with dashboard(store) as url:
            page, _errors = open_page(browser, url)
            assert text(page, "#total") == "2"
            assert page.locator("#banner").is_hidden()
            name = pg_dsn.rsplit("/", 1)[1]
            with psycopg.connect(os.environ["LLMBATCH_TEST_PG"], autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            until(lambda: page.locator("#banner").is_visible())
            assert "store" in text(page, "#banner")
            assert "Traceback" not in text(page, "body")
            status, body, _ = get(url + "/api/request?custom_id=a")
            assert status == 503 and b"PostgreSQL" in body
            shot(page, "dashboard-store-gone")
    finally:
        store.close()


def test_a_token_guards_every_path(browser: Any, sqlite_db: str) -> None:
    enqueue(sqlite_db, "q", ["a"])
    store = open_store(sqlite_db, create=False)
    token = "t0ken-" + "x" * 30
    try:
        with dashboard(store, token=token) as url:
            for path in ("/", "/api/overview", "/api/request?custom_id=a", "/static/dashboard.js"):
                status, body, _ = get(url + path)
                assert status == 401 and b"token" in body, path
            assert get(url + "/?token=wrong")[0] == 401
            page = browser.new_page()
            page.goto(url + "/?token=" + token)  # sets the cookie, then the page loads
            page.wait_for_selector("body[data-loaded]")
            assert text(page, "#total") == "1"
            assert token not in page.content()
            page.close()
    finally:
        store.close()


def test_a_host_other_machines_reach_needs_a_token(sqlite_db: str) -> None:
    enqueue(sqlite_db, "q", ["a"])
    result = cli("--db", sqlite_db, "dashboard", "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 2
    assert "LLMBATCH_DASHBOARD_TOKEN" in result.stderr and "Traceback" not in result.output


def test_a_port_in_use_is_one_line(sqlite_db: str) -> None:
    enqueue(sqlite_db, "q", ["a"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli("--db", sqlite_db, "dashboard", "--port", str(port))
    assert result.exit_code == 2 and "in use" in result.stderr, result.output


def test_a_missing_store_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    result = cli("--db", str(missing), "dashboard", "--port", "0")
    assert result.exit_code == 2 and not missing.exists(), result.output


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_odd_api_input_is_an_empty_answer(backend: str, request: pytest.FixtureRequest) -> None:
    db = str(request.getfixturevalue("sqlite_db" if backend == "sqlite" else "pg_dsn"))
    enqueue(db, "q", ["a"])
    store = open_store(db, create=False)
    try:
        with dashboard(store) as url:
            for path in (
                "/api/batch/99999999999999999999999",
                "/api/batch/-1",
                "/api/batch/abc",
                "/api/request?custom_id=%00x",
                "/api/request?custom_id=a&queue=%00",
                "/api/request?custom_id=a%27%20OR%201%3D1%20--",
                "/api/request",
            ):
                status, body, headers = get(url + path)
                assert status == 200, (path, body)
                assert b'found":[]' in body or b'events":[]' in body, (path, body)
                assert headers["content-type"] == "application/json"
            status, body, _ = get(url + "/api/request?custom_id=a")
            assert status == 200 and b'"custom_id":"a"' in body and b'"state"' in body
    finally:
        store.close()
