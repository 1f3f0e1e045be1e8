"""The local spool: one file per event, written durably, bounded, oldest dropped first.

Layout under the spool directory:
  events/<ns-timestamp>-<pid>-<rand>.json  pending envelopes; the sorted names are the send order
  tmp/                                     files being written (renamed into events/ once synced)
  state/machine_id                         stable random id of this machine (not the hostname)
  state/dropped                            events dropped since the last report (spool_dropped)
  state/backoff.json                       the flusher's retry schedule
  state/transcripts/                       per-transcript read offsets (transcript.py)
  spool.lock, flush.lock                   flock(2) lock files
  hook.log                                 diagnostics (log.py)
"""

from __future__ import annotations

import fcntl
import os
import time

from . import fastjson

TYPE_CHECKING = False  # `typing` costs ~10 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


class Spool:
    def __init__(self, root: str) -> None:
        self.root = root
        self.events = os.path.join(root, "events")
        self.tmp = os.path.join(root, "tmp")
        self.state = os.path.join(root, "state")

    def ensure(self) -> None:
        for path in (self.events, self.tmp, self.state):
            os.makedirs(path, mode=0o700, exist_ok=True)

    # -- events ---------------------------------------------------------------------------

    def write(self, data: bytes) -> str:
        """Store one envelope durably (write, fsync, rename) and return its file name."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(3).hex()}.json"
        tmp = os.path.join(self.tmp, name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.events, name))
        return name

    def pending(self) -> List[str]:
        try:
            return sorted(n for n in os.listdir(self.events) if n.endswith(".json"))
        except FileNotFoundError:
            return []

    def remove(self, name: str) -> bool:
        return _unlink(os.path.join(self.events, name))

    def enforce_bound(self, max_events: int) -> int:
        """Drop the oldest events beyond max_events; returns how many this call dropped."""
        if len(os.listdir(self.events)) <= max_events:
            return 0
        with self._locked("spool.lock"):
            names = self.pending()
            dropped = sum(self.remove(n) for n in names[: max(0, len(names) - max_events)])
            if dropped:
                self._write_int("dropped", self._read_int("dropped") + dropped)
        return dropped

    def take_dropped(self) -> int:
        """Read and reset the dropped counter (reported once, in the next envelope)."""
        if not os.path.exists(os.path.join(self.state, "dropped")):
            return 0
        with self._locked("spool.lock"):
            count = self._read_int("dropped")
            _unlink(os.path.join(self.state, "dropped"))
        return count

    # -- machine id -----------------------------------------------------------------------

    def machine_id(self) -> str:
        path = os.path.join(self.state, "machine_id")
        try:
            with open(path, encoding="ascii") as f:
                value = f.read().strip()
            if value:
                return value
        except FileNotFoundError:
            pass
        # First run: create it atomically; link() fails if another hook won the race.
        tmp = os.path.join(self.tmp, f"machine_id.{os.getpid()}")
        with open(tmp, "w", encoding="ascii") as f:
            f.write(os.urandom(16).hex() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        with open(path, encoding="ascii") as f:
            return f.read().strip()

    # -- backoff --------------------------------------------------------------------------

    def backoff(self) -> Dict[str, Any]:
        try:
            with open(os.path.join(self.state, "backoff.json"), encoding="utf-8") as f:
                state = fastjson.loads(f.read())
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    def due(self, now: float) -> bool:
        return now >= float(self.backoff().get("next_attempt", 0))

    def set_backoff(self, state: Optional[Dict[str, Any]]) -> None:
        path = os.path.join(self.state, "backoff.json")
        if state is None:
            _unlink(path)
            return
        tmp = os.path.join(self.tmp, f"backoff.{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(fastjson.dumps(state))
        os.replace(tmp, path)

    # -- helpers --------------------------------------------------------------------------

    def _read_int(self, name: str) -> int:
        try:
            with open(os.path.join(self.state, name), encoding="ascii") as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _write_int(self, name: str, value: int) -> None:
        tmp = os.path.join(self.tmp, f"{name}.{os.getpid()}")
        with open(tmp, "w", encoding="ascii") as f:
            f.write(str(value))
        os.replace(tmp, os.path.join(self.state, name))

    def _locked(self, name: str) -> "_Flock":
        return _Flock(os.path.join(self.root, name))

    def lock_path(self, name: str) -> str:
        return os.path.join(self.root, name)


class _Flock:
    """Blocking exclusive flock(2) for short critical sections."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> "_Flock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing the only descriptor releases the lock


def try_lock(path: str) -> Optional[int]:
    """A descriptor holding a non-blocking exclusive flock on path, or None if it is taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _unlink(path: str) -> bool:
    """Remove path; False if it was already gone (another process got there first)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
