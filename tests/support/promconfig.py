"""Derive a runnable Prometheus config from the repo's prometheus/prometheus.yml.

The repo file targets compose service names; the e2e tests run Debian's Prometheus on 127.0.0.1,
so they keep only the jobs they serve, point those at local ports, and load the repo's rule files
by absolute path. Everything else (global settings, external labels, job options) is the repo's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
REPO_PROMETHEUS_YML = REPO / "prometheus" / "prometheus.yml"
REPO_ALERTS_DIR = REPO / "alerts"


def repo_rule_files() -> list[str]:
    """Absolute paths of the repo's rule files (alerts/*.rules.yml); may be empty."""
    return [str(p) for p in sorted(REPO_ALERTS_DIR.glob("*.rules.yml"))]


def derive_config(
    prometheus_yml_text: str,
    targets: dict[str, str],
    alertmanager: str | None = None,
    rule_files: list[str] | None = None,
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
) -> str:
    """The repo config with only the jobs in `targets` (job name -> "127.0.0.1:PORT").

    `alertmanager` is a host:port, or None to drop alerting; `rule_files` are absolute paths
    (default: the repo's alerts/*.rules.yml). Raises KeyError for a job the repo file lacks, so a
    renamed job breaks the tests that rely on it instead of silently scraping nothing.
    """
    config: dict[str, Any] = yaml.safe_load(prometheus_yml_text)
    jobs = {job["job_name"]: job for job in config.get("scrape_configs", [])}
    missing = sorted(set(targets) - set(jobs))
    if missing:
        raise KeyError(f"jobs not in prometheus.yml: {missing}")
    scrape_configs = []
    for name, address in targets.items():
        job = {k: v for k, v in jobs[name].items() if k != "dns_sd_configs"}
        job["static_configs"] = [{"targets": [address]}]
        scrape_configs.append(job)
    config["scrape_configs"] = scrape_configs

    if alertmanager is None:
        config.pop("alerting", None)
    else:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}

    config["rule_files"] = list(rule_files) if rule_files is not None else repo_rule_files()
    if not config["rule_files"]:
        del config["rule_files"]

    glob = config.setdefault("global", {})
    if scrape_interval is not None:
        glob["scrape_interval"] = scrape_interval
        # Prometheus rejects a scrape_timeout longer than the interval.
        glob["scrape_timeout"] = scrape_interval
    if evaluation_interval is not None:
        glob["evaluation_interval"] = evaluation_interval
    return yaml.safe_dump(config, sort_keys=False)
