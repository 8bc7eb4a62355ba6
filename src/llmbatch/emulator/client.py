"""A small client for the control API (stdlib only), for tests, demos and benchmarks."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

Json = dict[str, Any]
_GEMINI_ENDED = tuple("BATCH_STATE_" + s for s in ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"))


class ControlError(RuntimeError):
    """The control API refused a call; `status` and `body` say why."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"control API answered {status}: {body}")
        self.status, self.body = status, body


class EmulatorControl:
    """Talks to `/_emulator/...` of a running emulator at `url` (its root URL)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/") + "/_emulator"
        self.timeout = timeout

    def call(self, method: str, path: str, body: Json | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                payload: Any = json.loads(raw)
            except ValueError:
                payload = raw.decode(errors="replace")
            raise ControlError(e.code, payload) from None

    # --- clock and settings ------------------------------------------------------------------

    def now(self) -> float:
        return float(self.call("GET", "/clock")["now"])

    def advance(self, seconds: float) -> float:
        """Move the virtual clock forward; returns the new virtual time once every batch has
        caught up with it (what the next call reads reflects the advance)."""
        return float(self.call("POST", "/clock/advance", {"seconds": seconds})["now"])

    def config(self) -> Json:
        result: Json = self.call("GET", "/config")
        return result

    def set_config(self, **values: Any) -> Json:
        """Change runtime settings (rate, request_failure_rate, length_rate, ...)."""
        result: Json = self.call("PATCH", "/config", values)
        return result

    def models(self) -> Json:
        """Every door's model cards: `{"openai": [...], "anthropic": [...], "gemini": [...]}`."""
        result: Json = self.call("GET", "/models")
        return result

    def add_models(self, *entries: str | Json, door: str = "openai") -> Json:
        """Add models (ids, or cards with `context_window`, `max_output_tokens`, ...)."""
        result: Json = self.call("POST", "/models", {"door": door, "add": list(entries)})
        return result

    def remove_models(self, *ids: str, door: str = "openai") -> Json:
        result: Json = self.call("POST", "/models", {"door": door, "remove": list(ids)})
        return result

    def set_quotas(
        self,
        openai: dict[str, int] | None = None,
        azure: dict[str, int] | None = None,
        gemini: dict[str, int] | None = None,
    ) -> Json:
        """Set enqueued-token quotas per model (OpenAI, Gemini) / deployment (Azure)."""
        body: Json = {}
        if openai is not None:
            body["openai"] = openai
        if azure is not None:
            body["azure"] = azure
        if gemini is not None:
            body["gemini"] = gemini
        result: Json = self.call("PUT", "/quotas", body)
        return result

    # --- faults ------------------------------------------------------------------------------

    def add_fault(self, op: str, kind: str, **fields: Any) -> list[Json]:
        """Add a fault rule (`mode`, `rate`, `count`, `flavor`, `retry_after`, `seconds`,
        `delay_before`)."""
        rules: list[Json] = self.call("POST", "/faults", {"op": op, "kind": kind, **fields})[
            "rules"
        ]
        return rules

    def faults(self) -> list[Json]:
        rules: list[Json] = self.call("GET", "/faults")["rules"]
        return rules

    def clear_faults(self) -> None:
        self.call("DELETE", "/faults")

    # --- batches -----------------------------------------------------------------------------

    def next_batches(
        self, count: int = 1, hold: str | None = None, fail_validation: Json | None = None
    ) -> Json:
        """Hold or fail the validation of the next `count` batches created."""
        body: Json = {"count": count}
        if hold is not None:
            body["hold"] = hold
        if fail_validation is not None:
            body["fail_validation"] = fail_validation
        result: Json = self.call("POST", "/next-batches", body)
        return result

    def batch(self, batch_id: str) -> Json:
        """Flavour, public object and progress of any batch."""
        result: Json = self.call("GET", f"/batches/{batch_id}")
        return result

    def hold(self, batch_id: str, state: str) -> Json:
        result: Json = self.call("POST", f"/batches/{batch_id}/hold", {"state": state})
        return result

    def release(self, batch_id: str) -> Json:
        result: Json = self.call("POST", f"/batches/{batch_id}/release")
        return result

    def expire(self, batch_id: str) -> Json:
        result: Json = self.call("POST", f"/batches/{batch_id}/expire")
        return result

    def cancel(self, batch_id: str) -> Json:
        result: Json = self.call("POST", f"/batches/{batch_id}/cancel")
        return result

    def fail(self, batch_id: str, code: str, message: str = "", line: int | None = None) -> Json:
        body = {"code": code, "message": message or f"Validation failed: {code}.", "line": line}
        result: Json = self.call("POST", f"/batches/{batch_id}/fail", body)
        return result

    def wait(self, batch_id: str, *statuses: str, timeout: float = 30.0) -> Json:
        """Poll until the batch reaches one of `statuses` (default: any terminal one; an
        Anthropic Message Batch's `processing_status` and a Gemini Operation's
        `metadata.state` count as its status)."""
        wanted = statuses or (
            "completed",
            "failed",
            "expired",
            "cancelled",
            "ended",
            *_GEMINI_ENDED,
        )
        deadline = time.monotonic() + timeout
        while True:
            batch: Json = self.batch(batch_id)["batch"]
            status = batch.get("status", batch.get("processing_status"))
            if status is None and isinstance(batch.get("metadata"), dict):
                status = batch["metadata"].get("state")
            if status in wanted:
                return batch
            if time.monotonic() > deadline:
                raise TimeoutError(f"{batch_id} is still {status} after {timeout}s")
            time.sleep(0.01)

    # --- the rest ----------------------------------------------------------------------------

    def seed(self, flavor: str = "openai", files: int = 0, batches: int = 0) -> Json:
        """Create objects of another app in the same organisation."""
        result: Json = self.call(
            "POST", "/seed", {"flavor": flavor, "files": files, "batches": batches}
        )
        return result

    def calls(self, since: int = 0) -> list[Json]:
        data: list[Json] = self.call("GET", f"/calls?since={since}")["data"]
        return data

    def clear_calls(self) -> None:
        self.call("DELETE", "/calls")

    def reset(self) -> None:
        self.call("POST", "/reset")
