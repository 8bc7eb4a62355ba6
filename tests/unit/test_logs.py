"""Log lines of run and worker: a timestamp and a level on each, text or JSON; a worker says
once which worker holds the engine lease while another one does, and when it takes it over."""

from __future__ import annotations

import io
import json
import re

from llmbatch.engine import TickReport
from llmbatch.logs import TickLog, setup


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_text_lines_carry_a_utc_timestamp_and_a_level() -> None:
    out = io.StringIO()
    setup("text", out)
    TickLog("me")(TickReport(intents=1, packed=3, submitted=1))
    [line] = _lines(out)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO    packed 3 requests into 1 batch\(es\); "
        r"submitted 1",
        line,
    )


def test_json_lines_are_one_object_each_with_the_ticks_figures() -> None:
    out = io.StringIO()
    setup("json", out)
    TickLog("me")(TickReport(ingested_batches=1, outcomes=7, unreachable=1, notes=["list: 503"]))
    [line] = _lines(out)
    event = json.loads(line)
    assert event["level"] == "warning" and event["results"] == 7 and event["unreachable"] == 1
    assert event["ts"].endswith("Z") and "list: 503" in event["msg"]


def test_a_worker_says_once_whom_it_shares_with_and_when_it_takes_the_engine_lease_over() -> None:
    out = io.StringIO()
    setup("text", out)
    log = TickLog("me")
    log(TickReport(engine_lease=True))  # holds the engine lease, nothing to say
    for _ in range(3):
        log(TickReport(engine_holder="host:1/abc"))
    log(TickReport(engine_holder="host:2/def"))  # another holder now
    log(TickReport(engine_lease=True))  # the holder stopped: this one has the lease
    log(TickReport(engine_lease=True))
    said = [ln.split(" ", 2)[2].strip() for ln in _lines(out)]
    sharing = (
        "sharing the queue: {} holds the engine lease (retries, sweep, archives, webhooks); "
        "this worker takes its share of the batches, and the rest if it stops"
    )
    assert said == [
        sharing.format("host:1/abc"),
        sharing.format("host:2/def"),
        "took over the engine lease from host:2/def",
    ]
