"""Worst-case time from an alert's condition to its notification, beyond its `for:`.

Computed from the shipped files (prometheus/prometheus.yml, alerts/*.rules.yml,
alerts/alertmanager.yml), per alert:
  scrape_interval       the condition starts just after a scrape
  + scrape_timeout      only for `up == 0` alerts: a hanging target fails at the timeout
  + evaluation_interval the sample lands just after a rule evaluation
  + evaluation_interval again when the alert reads a recording rule (another group, evaluated
                        on its own schedule; the constant thresholds do not count)
  + for rounding        the evaluation at which `for:` has run out (0 when for is a multiple)
  + group_wait          of the Alertmanager route the alert takes (group_by '...': every alert
                        is a new group, so never group_interval)
Prometheus sends a newly firing alert right after the evaluation, and the webhook is local, so
both are left out. "Condition" is the alert expression being true on fresh samples: rate()
windows decide how soon that is, and that is part of the rule's design, not of the pipeline.
tests/test_alerts_e2e.py measures the same path with the real binaries (at 1 s intervals).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from bench.common import Figure, say

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 60.0


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|[smhd])", text))


def _route_group_wait(route: dict[str, Any], labels: dict[str, str], inherited: float) -> float:
    """group_wait of the first matching child route (Alertmanager's default continue: false)."""
    wait = _seconds(route["group_wait"]) if "group_wait" in route else inherited
    for child in route.get("routes", []):
        matchers = [re.fullmatch(r'(\w+)="(.*)"', m) for m in child.get("matchers", [])]
        if all(m and labels.get(m.group(1)) == m.group(2) for m in matchers):
            return _route_group_wait(child, labels, wait)
    return wait


def worst_cases() -> list[tuple[str, str, float, float]]:
    """(alert, severity, for seconds, worst-case seconds beyond for) for every shipped alert."""
    prom = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())["global"]
    scrape, evaluation = _seconds(prom["scrape_interval"]), _seconds(prom["evaluation_interval"])
    timeout = _seconds(prom.get("scrape_timeout", "10s"))
    route = yaml.safe_load((REPO / "alerts" / "alertmanager.yml").read_text())["route"]
    out = []
    for path in sorted((REPO / "alerts").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            interval = _seconds(group["interval"]) if "interval" in group else evaluation
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                hold = _seconds(rule.get("for", "0s"))
                labels = {"alertname": rule["alert"], **rule.get("labels", {})}
                rounding = math.ceil(hold / interval) * interval - hold
                hang = timeout if re.search(r"\bup\{", rule["expr"]) else 0.0
                recorded = re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["expr"])
                chained = interval if any(":threshold:" not in r for r in recorded) else 0.0
                wait = _route_group_wait(route, labels, 30.0)  # 30 s: Alertmanager's default
                beyond = scrape + hang + interval + chained + rounding + wait
                out.append((rule["alert"], labels["severity"], hold, beyond))
    return out


def run(quick: bool) -> list[Figure]:
    del quick  # computed, not sampled: the same either way
    rows = worst_cases()
    for alert, severity, hold, beyond in rows:
        say(f"  {alert:<38} {severity:<8} for {hold:>6.0f}s  + worst case {beyond:>4.0f}s")
    worst = max(beyond for *_, beyond in rows)
    say(f"  worst case beyond for: {worst:.0f}s over {len(rows)} alert rules (target <= 60 s)")
    return [
        Figure(
            figure="alert notification worst case beyond for: (shipped rules)",
            value=worst,
            unit="s",
            target=f"<= {TARGET_S:.0f} s",
            met=worst <= TARGET_S,
        )
    ]
