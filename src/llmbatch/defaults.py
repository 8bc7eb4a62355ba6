"""Every default in one place."""

from __future__ import annotations

from typing import Final

DB: Final = "llmbatch.db"
QUEUE: Final = "default"
PROVIDER: Final = "openai"
CONFIG_FILE: Final = "llmbatch.toml"
BUSY_TIMEOUT_S: Final = 30.0
MAX_LINE_BYTES: Final = 16 * 1024 * 1024
BATCH_WINDOW_S: Final = 24 * 3600  # the completion window: a batch sent now may end this late
