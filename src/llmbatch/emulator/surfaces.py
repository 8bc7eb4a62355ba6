"""What differs between the OpenAI and the Azure OpenAI flavour of the same API.

Both flavours share one app and one data directory but not their objects: a file uploaded
through `/v1/files` is not visible through `/openai/files`, as with two real accounts.
Azure's legacy (`/openai/...?api-version=`) and v1 (`/openai/v1/...`) routes are two doors
into the same Azure resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmbatch.emulator.config import EmulatorConfig
from llmbatch.emulator.models import ModelCard
from llmbatch.emulator.synth import kind_of
from llmbatch.providers.compatible import Service, window_seconds

OPENAI_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
)
#: Endpoints the service batched once and refuses now, with its reason.
GONE_ENDPOINTS = {
    "/v1/videos": "The Videos API was shut down on 2026-09-24; '/v1/videos' can no longer be "
    "batched.",
}
#: Azure global batch takes these, with or without the `/v1` prefix.
AZURE_ENDPOINTS = ("/chat/completions", "/embeddings", "/responses")


@dataclass(frozen=True)
class Flavor:
    """The rules of one provider flavour; an OpenAI-compatible service's flavour carries its
    differences from OpenAI (`service`)."""

    name: str
    service: Service | None = None

    @property
    def azure(self) -> bool:
        return self.name == "azure"

    @property
    def anthropic(self) -> bool:
        """The Anthropic Messages door (its own routes; see `anthropic_api.py`)."""
        return self.name == "anthropic"

    @property
    def gemini(self) -> bool:
        """The Gemini door (its own routes; see `gemini_api.py`)."""
        return self.name == "gemini"

    def endpoints(self) -> tuple[str, ...]:
        if self.service is not None:
            return self.service.endpoints
        if self.azure:
            return AZURE_ENDPOINTS + tuple("/v1" + e for e in AZURE_ENDPOINTS)
        return OPENAI_ENDPOINTS

    def same_endpoint(self, url: str, endpoint: str) -> bool:
        """Whether a line's `url` matches the batch `endpoint` (Azure ignores `/v1`)."""
        if self.azure:
            return _strip_v1(url) == _strip_v1(endpoint)
        return url == endpoint

    def kind(self, endpoint: str) -> str | None:
        return kind_of(endpoint)

    def max_lines(self, cfg: EmulatorConfig) -> int:
        if self.service is not None:
            return self.service.max_requests
        return cfg.azure_max_lines if self.azure else cfg.openai_max_lines

    def min_lines(self) -> int:
        return self.service.min_requests if self.service is not None else 1

    def max_bytes(self, cfg: EmulatorConfig) -> int:
        if self.service is not None:
            return min(self.service.max_bytes, cfg.max_batch_file_bytes)
        return cfg.max_batch_file_bytes

    @property
    def max_line_bytes(self) -> int | None:
        return self.service.max_line_bytes if self.service is not None else None

    @property
    def max_custom_id(self) -> int | None:
        return self.service.max_custom_id if self.service is not None else None

    @property
    def short_lines(self) -> bool:
        """Lines are `{"custom_id", "body"}`: no method, no url."""
        return self.service is not None and self.service.line_shape == "custom_id_body"

    @property
    def batch_purpose(self) -> str:
        return self.service.file_purpose if self.service is not None else "batch"

    @property
    def keeps_metadata(self) -> bool:
        return self.service is None or self.service.keeps_metadata

    def windows(self) -> tuple[int, int]:
        """The completion windows a create may ask for, shortest and longest (seconds)."""
        if self.service is None:
            return 86_400, 86_400
        low = window_seconds(self.service.min_window) or 86_400
        return low, window_seconds(self.service.max_window) or low

    def present(self, obj: dict[str, Any], *, created: bool = False) -> Any:
        """A batch object as the service writes it (its status words, its create envelope)."""
        s = self.service
        if s is None:
            return obj
        if s.job_object:
            obj = _job(obj)
        if s.upper_case_states:
            obj = {**obj, "status": str(obj["status"]).upper()}
        if created and s.wrapped_create:
            return {"job": obj, "warning": None}
        return obj

    def models(self, cfg: EmulatorConfig) -> dict[str, str]:
        """Names a request may use as `model` -> the model they run."""
        return cfg.deployment_map() if self.azure else {m: m for m in cfg.catalog("openai")}

    def card(self, cfg: EmulatorConfig, name: str | None) -> ModelCard | None:
        """The card of the model a request naming `name` runs (None: unknown)."""
        if name is None:
            return None
        catalog = cfg.catalog("openai")
        if self.azure:
            model = cfg.deployment_map().get(name)
            return catalog.get(model) if model is not None else None
        return catalog.get(name)

    @property
    def expires(self) -> bool:
        """OpenAI expires a batch at `expires_at`; Azure global batch keeps running."""
        return not self.azure

    @property
    def always_error_file(self) -> bool:
        """Azure writes an error file even when it is empty (0 bytes)."""
        return self.azure


def _job(obj: dict[str, Any]) -> dict[str, Any]:
    """A batch as a "job" object (Together's): RFC 3339 times, `progress` in percent rather
    than request counts, `model_id`, the validation errors as one `error` string."""
    counts = obj.get("request_counts") or {}
    total = counts.get("total") or 0
    done = (counts.get("completed") or 0) + (counts.get("failed") or 0)
    errors = (obj.get("errors") or {}).get("data") or []
    return {
        "id": obj["id"],
        "user_id": "user_emulator",
        "input_file_id": obj["input_file_id"],
        "status": obj["status"],
        "job_deadline": _rfc3339(obj.get("expires_at")),
        "created_at": _rfc3339(obj.get("created_at")),
        "endpoint": obj["endpoint"],
        "progress": round(100.0 * done / total, 1) if total else 0.0,
        "model_id": obj.get("model"),
        "output_file_id": obj.get("output_file_id"),
        "error_file_id": obj.get("error_file_id"),
        "error": "; ".join(str(e.get("message")) for e in errors) or None,
        "completed_at": _rfc3339(obj.get("completed_at")),
    }


def _rfc3339(seconds: Any) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(float(seconds), UTC).isoformat().replace("+00:00", "Z")


def _strip_v1(path: str) -> str:
    return path[3:] if path.startswith("/v1/") else path


OPENAI = Flavor("openai")
AZURE = Flavor("azure")
#: The OpenAI-shaped flavours (Files + Batch API).
FLAVORS = {"openai": OPENAI, "azure": AZURE}


def flavor_of(name: str, cfg: EmulatorConfig) -> Flavor:
    """The flavour a stored batch or file belongs to: a built-in one or a configured
    service (KeyError if neither)."""
    found = FLAVORS.get(name)
    if found is not None:
        return found
    diffs = cfg.services[name]
    return Flavor(name, Service(label=name, **diffs))


ANTHROPIC = Flavor("anthropic")
GEMINI = Flavor("gemini")
