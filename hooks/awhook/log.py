"""Diagnostics: a size-capped log file in the spool directory (never stdout, never stderr)."""

from __future__ import annotations

import os
import time

MAX_BYTES = 256 * 1024


def log(spool_dir: str, message: str) -> None:
    """Append one line; past MAX_BYTES the file moves to hook.log.1 (one old file is kept)."""
    path = os.path.join(spool_dir, "hook.log")
    try:
        if os.path.getsize(path) > MAX_BYTES:
            os.replace(path, path + ".1")
    except OSError:
        pass
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = f"{stamp} pid={os.getpid()} {message}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass  # a full or read-only disk must not break the hook
