"""A hook spool flushed after a day offline must reach Loki (issue 15, "loss after the relay").

Loki refuses an entry more than `max_chunk_age / 2` (about an hour) older than the newest entry
of its stream (`too_far_behind`), and the otel-collector drops what Loki refuses after the relay
already had its OK. With one stream for every relayed event, one machine's day-old spool lands
behind everyone else's live events and is lost. The fix: one stream per machine. The relay puts
the event's `machine_id` on each log record (`agentwatch.machine_id`), the otel-collector's
`groupbyattrs` processor moves it to the resource, and Loki indexes that resource attribute as a
label. A machine's hook spool is sent oldest first, so its own stream stays in order.

Neither Loki nor the otel-collector can run here (no Docker; Loki is not packaged for Debian,
PyPI or npm). What runs for real: the collector and its relay, exporting to a real OTLP/gRPC
receiver. Applied to that real output: the otel-collector's processors and Loki's stream labels
and acceptance window as configured in otel-collector/config.yaml and loki/config.yaml. Loki's
acceptance rule itself is modelled (its ingester's `too_far_behind` check), not executed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.otlp_receiver import GrpcReceiver
from tests.support.procs import REPO, Proc, start_collector, wait_until

MACHINE_ATTR = "agentwatch.machine_id"
OTEL = yaml.safe_load((REPO / "otel-collector" / "config.yaml").read_text())
LOKI = yaml.safe_load((REPO / "loki" / "config.yaml").read_text())
# Loki 3.x's default OTLP resource attributes stored as index labels (its docs, "Format
# considerations"); everything else becomes structured metadata.
LOKI_DEFAULT_INDEX_LABELS = frozenset(
    {
        "cloud.availability_zone",
        "cloud.region",
        "container.name",
        "deployment.environment",
        "deployment.environment.name",
        "k8s.cluster.name",
        "k8s.container.name",
        "k8s.cronjob.name",
        "k8s.daemonset.name",
        "k8s.deployment.name",
        "k8s.job.name",
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.replicaset.name",
        "k8s.statefulset.name",
        "service.instance.id",
        "service.name",
        "service.namespace",
    }
)
HOUR_MS = 3_600_000


def duration_ms(text: str) -> int:
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": HOUR_MS, "d": 24 * HOUR_MS}
    number = text.rstrip("smhd")
    return int(float(number) * units[text[len(number) :]])


# --- the configs the fix depends on -------------------------------------------------------


def grouping_processors() -> list[str]:
    """The logs pipeline's groupbyattrs processors that move the machine to the resource."""
    processors = OTEL["service"]["pipelines"]["logs"]["processors"]
    return [
        name
        for name in processors
        if name.split("/")[0] == "groupbyattrs"
        and MACHINE_ATTR in OTEL["processors"][name].get("keys", [])
    ]


def loki_index_labels() -> set[str]:
    """Resource attributes Loki stores as index labels (the stream), as loki/config.yaml says."""
    resource = LOKI["limits_config"].get("otlp_config", {}).get("resource_attributes", {})
    labels = set() if resource.get("ignore_defaults") else set(LOKI_DEFAULT_INDEX_LABELS)
    for rule in resource.get("attributes_config", []):
        if rule["action"] == "index_label":
            labels |= set(rule.get("attributes", []))
    return labels


def test_the_otel_collector_moves_the_machine_to_the_resource_before_batching() -> None:
    processors = OTEL["service"]["pipelines"]["logs"]["processors"]
    (grouping,) = grouping_processors()
    assert processors.index(grouping) < processors.index("batch")
    assert processors[0] == "memory_limiter"


def test_loki_indexes_the_machine_and_keeps_the_default_labels() -> None:
    labels = loki_index_labels()
    assert MACHINE_ATTR in labels
    # Dashboards, runbooks and Grafana's trace-to-logs links select {service_name="agentwatch"}.
    assert "service.name" in labels


def test_loki_accepts_a_day_old_spool_by_age() -> None:
    """Loki's other age limit: entries older than reject_old_samples_max_age are refused
    whatever their stream."""
    limits = LOKI["limits_config"]
    if limits.get("reject_old_samples", True):
        assert duration_ms(limits["reject_old_samples_max_age"]) >= 2 * 24 * HOUR_MS


# --- the pipeline on the relay's real output ----------------------------------------------


def pipeline_streams(
    logs: list[dict[str, Any]], group: bool = True
) -> list[tuple[tuple[tuple[str, Any], ...], int]]:
    """(stream labels, timestamp ms) per record as Loki would see it, in arrival order: the
    otel-collector's groupbyattrs (resource := resource + the grouped record attributes) and
    resource processors, then Loki's choice of index labels."""
    keys = {k for name in grouping_processors() for k in OTEL["processors"][name]["keys"]}
    inserted = {
        a["key"]: a["value"]
        for a in OTEL["processors"].get("resource", {}).get("attributes", [])
        if a["action"] in ("insert", "upsert")
    }
    index = loki_index_labels()
    out = []
    for record in logs:
        resource = dict(record["resource"])
        if group:
            resource |= {k: v for k, v in record["attributes"].items() if k in keys}
        for key, value in inserted.items():
            resource.setdefault(key, value)
        labels = tuple(sorted((k, v) for k, v in resource.items() if k in index))
        out.append((labels, record["time_unix_nano"] // 1_000_000))
    return out


def loki_refused(streams: list[tuple[tuple[tuple[str, Any], ...], int]]) -> list[int]:
    """Indexes of the entries Loki's ingester refuses as too_far_behind: older than the newest
    entry already in its stream minus max_chunk_age / 2 (unordered writes, Loki's default)."""
    max_chunk_age = duration_ms(LOKI.get("ingester", {}).get("max_chunk_age", "2h"))
    newest: dict[tuple[tuple[str, Any], ...], int] = {}
    refused = []
    for i, (labels, ts) in enumerate(streams):
        if labels in newest and ts < newest[labels] - max_chunk_age // 2:
            refused.append(i)
            continue
        newest[labels] = max(ts, newest.get(labels, ts))
    return refused


def envelope(machine: str, session: str, ts: int, hook: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "ts": ts,
        "source_app": "shop",
        "machine_id": machine,
        "session_id": session,
        "hook_event": hook,
        "payload": {"session_id": session, "hook_event_name": hook, "cwd": "/home/dev/shop"},
    }


def spool(machine: str, start_ms: int, count: int) -> list[dict[str, Any]]:
    """A machine's spool as the hook delivers it: oldest first, a minute apart."""
    session = "sess-" + uuid.uuid4().hex[:12]
    hooks = ["SessionStart", "UserPromptSubmit", "Stop"]
    return [
        envelope(machine, session, start_ms + i * 60_000, hooks[min(i, 2)]) for i in range(count)
    ]


@pytest.fixture
def relaying(tmp_path: Path) -> Iterator[tuple[Proc, GrpcReceiver]]:
    receiver = GrpcReceiver().start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    proc = start_collector(tmp_path, env)
    try:
        yield proc, receiver
    finally:
        proc.stop()
        receiver.stop()


def post(proc: Proc, envelopes: list[dict[str, Any]]) -> None:
    r = httpx.post(proc.url + "/v1/events", json=envelopes, timeout=10)
    assert r.status_code == 200 and r.json()["accepted"] == len(envelopes), r.text


@pytest.mark.e2e
def test_a_spool_flushed_after_a_day_offline_is_not_refused_by_loki(
    relaying: tuple[Proc, GrpcReceiver],
) -> None:
    """Machine A reports live; machine B was offline for a day and then flushes its spool, while
    A goes on. Every record the relay exports carries its machine, the otel-collector's grouping
    gives each machine its own Loki stream, and no entry is too far behind its stream's newest.
    With the relay's single resource as the only stream (no grouping), B's spool is refused:
    the check can fail."""
    proc, receiver = relaying
    now = int(time.time() * 1000)
    live_a = spool("machine-a", now - 10 * 60_000, 5)
    late_b = spool("machine-b", now - 26 * HOUR_MS, 20)  # 26 h old, spanning 20 minutes
    more_a = spool("machine-a", now - 4 * 60_000, 3)
    for batch in (live_a, late_b, more_a):
        post(proc, batch)
    expected = {e["event_id"] for e in live_a + late_b + more_a}
    wait_until(lambda: expected <= receiver.rec.event_ids(), 30, "the relay's export")

    logs = [r for r in receiver.rec.logs if r["attributes"]["agentwatch.event_id"] in expected]
    machines = {e["event_id"]: e["machine_id"] for e in live_a + late_b + more_a}
    for record in logs:
        event = record["attributes"]["agentwatch.event_id"]
        assert record["attributes"].get(MACHINE_ATTR) == machines[event], record["attributes"]

    streams = pipeline_streams(logs)
    assert len({labels for labels, _ in streams}) == 2, "one stream per machine"
    assert loki_refused(streams) == []

    single = pipeline_streams(logs, group=False)
    refused = {logs[i]["attributes"]["agentwatch.event_id"] for i in loki_refused(single)}
    assert refused == {e["event_id"] for e in late_b}
