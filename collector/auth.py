"""Bearer-token and HMAC checks. Comparisons are constant-time; refusals say why, not how."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict

from starlette.requests import Request

TIMESTAMP_HEADER = "x-agentwatch-timestamp"
SIGNATURE_HEADER = "x-agentwatch-signature"
MAX_REMEMBERED_SIGNATURES = 100_000


class Unauthorized(Exception):
    """Refused: the message goes back to the client in a 401."""


def check_token(request: Request, token: str | None) -> None:
    if not token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise Unauthorized("missing or invalid bearer token")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for a body: sha256=HMAC(secret, "<timestamp>." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class HmacVerifier:
    """Checks signed bodies: a timestamp inside the window, and each signature used once.

    Used signatures are remembered in memory only, so a signature made before this process
    started is refused too: otherwise a request captured just before a restart could be
    replayed right after it. Our hook signs when it sends, so its retries are unaffected.
    """

    def __init__(self, secret: str, window_seconds: int = 300) -> None:
        self.secret = secret
        self.window = window_seconds
        self.started = int(time.time())
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, timestamp: str | None, signature: str | None, body: bytes) -> None:
        if not timestamp or not signature:
            raise Unauthorized("missing X-Agentwatch-Timestamp or X-Agentwatch-Signature")
        try:
            ts = int(timestamp)
        except ValueError:
            raise Unauthorized("X-Agentwatch-Timestamp must be unix seconds") from None
        now = time.time()
        if abs(now - ts) > self.window:
            raise Unauthorized("signature timestamp outside the replay window")
        if ts < self.started:
            raise Unauthorized("signature made before the collector started; sign again")
        expected = sign(self.secret, timestamp, body)
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            raise Unauthorized("invalid signature")
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - self.window:
                self._seen.popitem(last=False)
            if expected in self._seen:
                raise Unauthorized("signature already used (replay)")
            self._seen[expected] = now
            if len(self._seen) > MAX_REMEMBERED_SIGNATURES:
                self._seen.popitem(last=False)
