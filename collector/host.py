"""Host utilisation gauges (psutil), computed at scrape time."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import psutil

from collector.metrics import Metrics


def register_host_metrics(metrics: Metrics, disk_path: Path | None) -> None:
    """CPU, memory and the disk holding the database (disk_path: its directory), as ratios 0..1.
    No disk gauge for a store on another machine (PostgreSQL: disk_path None)."""
    psutil.cpu_percent(interval=None)  # primes the counter: the first real read is a delta

    def cpu() -> Iterable[tuple[list[str], float]]:
        return [([], psutil.cpu_percent(interval=None) / 100)]

    def memory() -> Iterable[tuple[list[str], float]]:
        return [([], psutil.virtual_memory().percent / 100)]

    def disk() -> Iterable[tuple[list[str], float]]:
        if disk_path is None:
            return []
        try:
            usage = psutil.disk_usage(str(disk_path))
        except OSError:
            return []
        return [([str(disk_path)], usage.used / usage.total if usage.total else 0.0)]

    p = "agentwatch_host_"
    metrics.add_function_gauge(p + "cpu_utilization_ratio", "Host CPU busy share.", [], cpu)
    metrics.add_function_gauge(p + "memory_utilization_ratio", "Host memory in use.", [], memory)
    metrics.add_function_gauge(
        p + "disk_utilization_ratio", "Used share of the disk holding the store.", ["path"], disk
    )
