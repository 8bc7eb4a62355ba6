"""What a crash-matrix run makes hard, and the engine configuration it runs under.

The windows the issue asks for, as options (each on in the default local run):

- `delete_files`: the engine deletes its input and result files after ingest, as a real
  deployment does; the audit judges from the emulator's call log and batch list instead.
- `list_lag`: batches and files are missing from lists for this long after they are made.
  Shorter than the settle window, reconcile must find every batch an interrupted create
  made; longer, a create whose answer was lost can be made again (the documented residual
  risk), and each such double create must be accounted for (calllog.py).
- `slow_before`: uploads and creates are held before they act (emulator `delay_before`),
  some past the client timeout: the client gives up and the work still happens after.
- `pauses`: the lease holder is SIGSTOPped until a standby has taken its lease over, then
  SIGCONTed (a GC pause, a laptop lid, a throttled container).
- `restarts`: the emulator is SIGKILLed and started again while a batch waits for its
  download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbatch.emulator import EmulatorControl

KEY_ENV = "LLMBATCH_CRASH_MATRIX_KEY"

#: Seconds the emulator waits before answering, after doing the work: a kill lands between
#: "the provider did it" and "we recorded it" as often as the issue needs, and lists and
#: downloads take a little of the time they take for real (lists a little slower than the
#: rest: at 814 kills with 0.02 s, the poll and sweep windows had only 6 and 5 hits).
LATENCY = {
    "files.create": 0.01,
    "batches.create": 0.02,
    "messages.batches.create": 0.02,
    "files.retrieve": 0.01,
    "files.content": 0.02,
    "messages.batches.results": 0.02,
    "batches.list": 0.06,
    "batches.retrieve": 0.02,
    "files.list": 0.08,
    "messages.batches.list": 0.06,
    "messages.batches.retrieve": 0.02,
    # Gemini's door (google-genai): the upload's data call, a get, the results download
    "files.upload": 0.01,
    "batches.get": 0.02,
    "files.get": 0.01,
    "files.download": 0.02,
}
#: The calls held before they act under `slow_before`, and downloads under `restarts` (so a
#: restart finds one under way more often).
SLOW_BEFORE = ("files.create", "batches.create", "messages.batches.create")
#: Shares of slow calls, each a fraction of `slow_before` seconds: (chance, fraction). The
#: dice are rolled in order, so the chances are conditional: about 5 %, 14 % and 24 %.
SLOW_SHARES = ((0.05, 1.0), (0.15, 0.5), (0.3, 1 / 6))
#: A batch takes a second or so to run, so that workers poll batches in flight.
EMULATOR = {"validating_seconds": 0.3, "rate": 200.0}


@dataclass(frozen=True)
class Conditions:
    """One run's conditions (see the module docstring); times in seconds."""

    delete_files: bool = True
    list_lag: float = 1.0
    slow_before: float = 2.2
    pauses: int = 100
    restarts: int = 10
    lease_ttl: float = 6.0
    lease_margin: float = 1.5
    submit_timeout: float = 2.0
    settle: float = 2.5
    sweep_interval: float = 20.0

    @property
    def lag_beyond_settle(self) -> bool:
        """Whether a batch can stay unlisted longer than the engine waits for it."""
        return self.list_lag >= self.settle

    def describe(self) -> dict[str, Any]:
        return {
            "delete_files": self.delete_files,
            "list_lag_s": self.list_lag,
            "settle_s": self.settle,
            "slow_before_s": self.slow_before,
            "submit_timeout_s": self.submit_timeout,
            "lease_ttl_s": self.lease_ttl,
        }


def install_faults(control: EmulatorControl, c: Conditions) -> None:
    """The emulator's rules for these conditions. The first rule whose dice hit answers a
    call, so the slow-before rules (which keep the after-work latency) come first."""
    for op in SLOW_BEFORE:
        if c.slow_before <= 0:
            break
        for rate, share in SLOW_SHARES:
            control.add_fault(
                op,
                "latency",
                mode="after",
                seconds=LATENCY[op],
                delay_before=round(c.slow_before * share, 3),
                rate=rate,
            )
    if c.restarts:  # a download held a little, so that a restart lands in one
        control.add_fault("files.content", "latency", mode="after", seconds=0.02, delay_before=0.3)
        control.add_fault(
            "messages.batches.results", "latency", mode="after", seconds=0.02, delay_before=0.3
        )
        control.add_fault("files.download", "latency", mode="after", seconds=0.02, delay_before=0.3)
    for op, seconds in LATENCY.items():
        control.add_fault(op, "latency", mode="after", seconds=seconds)
    if c.list_lag > 0:
        for op in ("batches.list", "files.list", "messages.batches.list"):
            control.add_fault(op, "list_lag", seconds=c.list_lag)
    control.set_config(**EMULATOR)


def write_config(path: Path, url: str, batch: int, provider: str, c: Conditions) -> Path:
    """The engine's settings: a short lease so that a pause outlasts it in seconds, an
    unknown create waits `submit_timeout + settle` from its stamp."""
    # Anthropic and Gemini delete whole batches (Anthropic's results name our attempts: the
    # audit's only record of its batches' requests; Gemini's displayName names the intent),
    # so they keep them.
    delete = c.delete_files and provider == "openai"
    text = (
        f"[engine]\nlease_ttl = {c.lease_ttl}\nlease_margin = {c.lease_margin}\n"
        f"submit_timeout = {c.submit_timeout}\nsettle_seconds = {c.settle}\n"
        f"sweep_interval = {c.sweep_interval}\n"
        "poll_interval = 0.1\nmax_poll_interval = 0.3\nbackoff_seconds = 0.2\n"
        f"max_batch_requests = {batch}\n"
        f"delete_files = {'true' if delete else 'false'}\n"
        # small batches reach OpenAI's 2,000 creates an hour; the emulator has no such limit
        "batches_per_hour = 1000000\n"
    )
    if provider in ("openai", "mixed"):
        text += f'\n[providers.openai]\nbase_url = "{url}/v1"\napi_key_env = "{KEY_ENV}"\n'
    if provider in ("anthropic", "mixed"):
        text += f'\n[providers.anthropic]\nbase_url = "{url}"\napi_key_env = "{KEY_ENV}"\n'
    if provider == "gemini":  # every batch a file: the upload windows are the protocol's too
        text += (
            f'\n[providers.gemini]\nbase_url = "{url}"\napi_key_env = "{KEY_ENV}"\n'
            "inline_max_bytes = 0\n"
        )
    path.write_text(text)
    return path
