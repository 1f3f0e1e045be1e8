"""Delivery of the spool to POST $AGENTWATCH_URL/v1/events, in spool order.

Runs in a detached process (main.spawn_flusher) or in the foreground (--flush), always while
holding flush.lock so one flusher runs at a time. 200/409 (and 2xx) remove the batch; a permanent
4xx isolates the bad event by splitting the batch and drops it with a log line; errors, timeouts,
5xx, 401/403 (a token the user can still fix), 408 and 429 keep the events and schedule the next
attempt with exponential backoff.
"""

from __future__ import annotations

import fcntl
import os
import time

from . import fastjson
from .config import Config
from .log import log
from .spool import Spool, try_lock

TYPE_CHECKING = False  # `typing` costs ~10 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

    Item = Tuple[str, bytes]  # (spool file name, envelope bytes)


CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0
BATCH_EVENTS = 500
BATCH_BYTES = 512 * 1024
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
RETRYABLE_4XX = (401, 403, 408, 425, 429)


class Retry(Exception):
    """The collector cannot take events now; keep them and back off."""


def detach(keep: int) -> None:
    """Let go of every descriptor the hook was started with: 0-2 become /dev/null, the rest close.

    Claude Code waits until nothing holds the hook's stdout/stderr open. A flusher that kept any
    of them (0-2, or a copy at a higher number: a launcher's dup, a sibling hook's pipe leaked by
    a racy spawner) would make a hook wait for a delivery, up to the flusher's network timeouts.
    Called in the intermediate child before it forks the flusher: once the hook has reaped that
    child, no process of ours holds anything of the hook's but `keep` (flush.lock). The signals
    the hook ignored while it wrote its spool get their default handlers back.
    """
    import _signal  # type: ignore[import-not-found]  # no stub: `signal` without its enums

    for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):  # the hook ignored them
        _signal.signal(sig, _signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != devnull:
            os.dup2(devnull, fd)
    for fd in _open_fds():
        if fd > 2 and fd != keep:
            try:  # noqa: SIM105 - contextlib is one more import before the hook can exit
                os.close(fd)  # devnull too, unless it landed on a closed 0-2
            except OSError:  # the listing's own descriptor, already gone
                pass


def _open_fds() -> List[int]:
    for listing in ("/proc/self/fd", "/dev/fd"):  # Linux, then macOS and the BSDs
        try:
            return [int(name) for name in os.listdir(listing)]
        except (OSError, ValueError):
            continue
    return list(range(3, min(os.sysconf("SC_OPEN_MAX"), 65536)))


def run_detached(cfg: Config, spool: Spool, lock_fd: int) -> None:
    """Drain while holding the lock; re-check after releasing it so no event is stranded."""
    while True:
        ok = drain(cfg, spool)
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
        # A hook that wrote an event while we held the lock did not start a flusher: look again.
        if not ok or not spool.pending() or not spool.due(time.time()):
            return
        next_fd = try_lock(spool.lock_path("flush.lock"))
        if next_fd is None:
            return
        lock_fd = next_fd


def flush_foreground(cfg: Config, spool: Spool) -> bool:
    """--flush: wait for a running flusher, then deliver everything now, ignoring backoff."""
    fd = os.open(spool.lock_path("flush.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return drain(cfg, spool)
    finally:
        os.close(fd)


def drain(cfg: Config, spool: Spool) -> bool:
    """Send batches until the spool is empty (True) or the collector fails (False)."""
    _sweep_tmp(spool)
    try:
        while True:
            batch = _next_batch(cfg, spool)
            if not batch:
                spool.set_backoff(None)
                return True
            _deliver(cfg, spool, batch)
    except Retry as exc:
        failures = int(spool.backoff().get("failures", 0)) + 1
        import random

        delay = min(BACKOFF_BASE_S * 2 ** (failures - 1), BACKOFF_MAX_S)
        delay *= 0.5 + random.random() / 2  # jitter: many machines must not retry in lockstep
        spool.set_backoff({"failures": failures, "next_attempt": time.time() + delay})
        log(cfg.spool_dir, f"delivery failed ({exc}); retry #{failures} in {delay:.1f}s")
        return False


def _next_batch(cfg: Config, spool: Spool) -> List[Item]:
    batch: List[Item] = []
    size = 0
    for name in spool.pending()[:BATCH_EVENTS]:
        try:
            with open(os.path.join(spool.events, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:  # dropped by the bound meanwhile
            continue
        if not _is_envelope(data):
            log(cfg.spool_dir, f"dropping corrupt spool file {name}")
            spool.remove(name)
            continue
        if batch and size + len(data) > BATCH_BYTES:
            break
        batch.append((name, data))
        size += len(data) + 1
    return batch


def _is_envelope(data: bytes) -> bool:
    try:
        obj = fastjson.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("event_id"), str)


def _deliver(cfg: Config, spool: Spool, items: List[Item]) -> None:
    body = b"[" + b",".join(data for _, data in items) + b"]"
    status, answer = _post(cfg, body)
    if 200 <= status < 300 or status == 409:
        for index, reason in _rejections(answer):
            if 0 <= index < len(items):
                log(cfg.spool_dir, f"collector rejected {items[index][0]}: {reason}")
        for name, _ in items:
            spool.remove(name)
        return
    if status >= 500 or status in RETRYABLE_4XX or status < 200:
        raise Retry(f"HTTP {status}")
    # Any other 4xx will never be accepted: find the offending event(s) and drop only those.
    if len(items) == 1:
        log(cfg.spool_dir, f"dropping {items[0][0]}: HTTP {status} {answer[:300]!r}")
        spool.remove(items[0][0])
        return
    half = len(items) // 2
    _deliver(cfg, spool, items[:half])
    _deliver(cfg, spool, items[half:])


def _rejections(answer: bytes) -> List[Tuple[int, str]]:
    try:
        obj = fastjson.loads(answer.decode("utf-8", "replace"))
        return [(int(r["index"]), str(r.get("reason"))) for r in obj.get("rejected") or []]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


def _post(cfg: Config, body: bytes) -> Tuple[int, bytes]:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(cfg.url)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "agentwatch-hook/0.1",
    }
    if cfg.token:
        headers["Authorization"] = f"Bearer {cfg.token}"
    if cfg.hmac_secret:
        headers.update(sign(cfg.hmac_secret, body, int(time.time())))
    conn: Optional[http.client.HTTPConnection] = None
    try:
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(url.netloc, timeout=CONNECT_TIMEOUT_S)
        else:
            conn = http.client.HTTPConnection(url.netloc, timeout=CONNECT_TIMEOUT_S)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(READ_TIMEOUT_S)  # the connect timeout is short, the answer may not be
        conn.request("POST", url.path.rstrip("/") + "/v1/events", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(64 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        raise Retry(f"{type(exc).__name__}: {exc}") from None
    finally:
        if conn is not None:
            conn.close()


def sign(secret: str, body: bytes, timestamp: int) -> Dict[str, str]:
    """X-Agentwatch-Timestamp and X-Agentwatch-Signature: HMAC-SHA256 of '<ts>.' + body."""
    import hashlib
    import hmac

    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "X-Agentwatch-Timestamp": str(timestamp),
        "X-Agentwatch-Signature": "sha256=" + mac.hexdigest(),
    }


def _sweep_tmp(spool: Spool) -> None:
    """Remove files a crashed hook left half-written in tmp/ (older than an hour)."""
    cutoff = time.time() - 3600
    try:
        for name in os.listdir(spool.tmp):
            path = os.path.join(spool.tmp, name)
            try:
                if os.path.getmtime(path) < cutoff:
                    os.unlink(path)
            except OSError:
                pass
    except OSError:
        pass
