"""Looking at a hook spool from outside: whether one of its flock(2) locks is free."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def lock_free(path: Path) -> bool:
    """Nobody holds the lock (flush.lock: no flusher runs; spool.lock: no hook waits on it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
