"""Files llmbatch creates hold users' prompts and results: they are created readable and
writable by their owner only (0600), whatever the umask. A file that already exists keeps
the mode its owner gave it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

PRIVATE = 0o600


def open_private(path: str | Path, mode: str = "wb", **options: Any) -> IO[Any]:
    """Open `path` for writing (truncated), creating it 0600 if it does not exist."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    try:
        return os.fdopen(fd, mode, **options)
    except BaseException:
        os.close(fd)
        raise
