"""Shared pieces of the benchmarks: the Figure record and small statistics helpers."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict, dataclass


@dataclass
class Figure:
    figure: str
    value: float
    unit: str
    target: str
    met: bool

    def __post_init__(self) -> None:
        # One naming scheme for every module's figures: snake_case names, values rounded.
        self.figure = re.sub(r"[^a-z0-9]+", "_", self.figure.lower()).strip("_")
        self.value = round(float(self.value), 3)

    def json(self) -> str:
        return json.dumps(asdict(self))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[min(max(int(q), 1), 99) - 1]


def say(msg: str) -> None:
    print(msg, flush=True)
