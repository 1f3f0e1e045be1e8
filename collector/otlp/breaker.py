"""The relay's circuit breaker: ok -> delayed -> circuit_open -> ok.

- ok: exports go out as soon as there is something to send.
- delayed: the last export failed; the next attempt waits an exponential backoff with jitter.
- circuit_open: `failures` exports failed in a row; one probe goes out per cooldown (jittered),
  and the first success closes the circuit again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Breaker:
    def __init__(
        self,
        failures: int,
        cooldown: float,
        backoff_base: float,
        backoff_max: float,
        on_state: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.base = backoff_base
        self.max = backoff_max
        self._on_state = on_state
        self._clock = clock
        self.state = "ok"
        self.consecutive = 0
        self.next_attempt = 0.0
        self.last_error = ""

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._on_state(state)

    def success(self) -> None:
        self.consecutive = 0
        self.last_error = ""
        self._set("ok")

    def failure(self, error: str) -> None:
        self.consecutive += 1
        self.last_error = error
        if self.consecutive >= self.threshold:
            delay = self.cooldown * random.uniform(0.8, 1.2)
            self._set("circuit_open")
        else:
            # "Equal jitter": half the exponential delay is fixed, half random.
            exp = min(self.max, self.base * 2 ** (self.consecutive - 1))
            delay = exp / 2 + random.uniform(0, exp / 2)
            self._set("delayed")
        self.next_attempt = self._clock() + delay

    def wait_seconds(self) -> float:
        if self.state == "ok":
            return 0.0
        return max(0.0, self.next_attempt - self._clock())
