"""Claude Code's own OpenTelemetry metrics, exposed on the collector's /metrics.

Claude Code (CLAUDE_CODE_ENABLE_TELEMETRY=1) sends its metrics over OTLP to the collector's
/v1/metrics. They reach Prometheus by being exposed by the collector itself, on its own /metrics,
with the names the OpenTelemetry Collector's Prometheus exporter would give them, so the queries of
Claude Code's monitoring guide (and our dashboards and alerts) work unchanged. Relaying them to the
otel-collector instead was rejected: it cannot be tested here (no otel-collector binary on the
development and CI machines), and only the collector can bound the labels the way the metrics
contract wants.

Names follow the otel-collector's normalisation (pkg/translator/prometheus, normalizeName): the
OTel name split on every character that is not a letter or digit and joined with "_"; the unit
translated (s -> seconds, By -> bytes, ...; any other unit kept, cleaned the same way) and appended
unless a name token already equals it, a unit in braces ({tokens}) dropped, "/s" -> "_per_second";
"_total" for monotonic sums, "_ratio" for gauges of unit "1". What Claude Code 2.1.328 sends:

    claude_code.session.count           -            claude_code_session_count_total
    claude_code.cost.usage              USD          claude_code_cost_usage_USD_total
    claude_code.token.usage             tokens       claude_code_token_usage_tokens_total
    claude_code.active_time.total       s            claude_code_active_time_seconds_total
    claude_code.lines_of_code.count     -            claude_code_lines_of_code_count_total
    claude_code.commit.count            -            claude_code_commit_count_total
    claude_code.pull_request.count      -            claude_code_pull_request_count_total
    claude_code.code_edit_tool.decision -            claude_code_code_edit_tool_decision_total

Only metrics named claude_code.* are taken (this endpoint is for Claude Code; the prefix also
keeps clients from colliding with the collector's own agentwatch_* metrics), at most `max_metrics`
of them.

Labels: the data point's attributes, dots (and anything else Prometheus refuses) -> "_": model,
type (input, output, cacheRead, cacheCreation for tokens; cli, user for active time; added,
removed for lines), query_source, effort, decision, source, language, tool_name, terminal_type,
start_type, anthropic_provider, .... Never an id: session.id, session_id, prompt.id, request_id,
user.account_uuid, organization.id, user.email and any attribute whose name ends in id, _id, .id,
uuid or email are dropped. Instead `user` is Claude Code's hashed user.id (or, with
AGENTWATCH_USER_LABEL=email, the signed-in e-mail where there is one). Dropping session.id is
deliberate: with it, each session's counters would be new series born at their first value, and
increase()/rate() over series that appear already at 1 give ~0 (a known Prometheus pitfall); the
series count would also grow with every session. Without it, the sessions of one user and model
add into one series that keeps growing. Every label's values are capped like the rest of the
collector's (AGENTWATCH_LABEL_CAP distinct values per label name, the rest become "other");
resource attributes (service.name, os.type, host.arch, ...) are not labels (the otel-collector
keeps them out of the series too, in target_info).

Temporality: Claude Code sends DELTA sums by default; each data point is added to a cumulative
total per (metric, label set). A delta point whose stream (metric, resource, every attribute,
session.id included) repeats the previous (start, time) is a re-sent request and counted once.
CUMULATIVE monotonic sums keep the latest value per stream and start time; what a new value adds
to the exposed total is its increase over that stream's previous value, the whole value for a new
start time (the sender restarted) or after a drop, so the exposed counter never goes down and
streams that share a label set add up. Points older than a stream's latest are ignored. The streams
remembered for this are bounded (`max_streams`, least recently seen forgotten first).
Non-monotonic sums and gauges are exposed as gauges (deltas added, cumulative values and gauges
the latest). Histograms, exponential histograms and summaries are skipped (Claude Code sends
none) and counted as unsupported.

The totals live in memory: a restarted collector starts again at 0, which Prometheus handles as a
counter reset; several collectors behind a load balancer each expose their share, which sum() adds.

`agentwatch_native_metric_points_total{result}` shows the data arriving: accepted, duplicate,
invalid (no value, NaN, a negative delta on a counter, a type clash), unsupported, dropped (over
`max_metrics`, or not claude_code.*). `agentwatch_native_metric_last_received_timestamp_seconds` is
when the last request came in.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    AGGREGATION_TEMPORALITY_DELTA,
    AGGREGATION_TEMPORALITY_UNSPECIFIED,
    DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK,
    Metric,
    NumberDataPoint,
)
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.registry import Collector

from collector.metrics import LabelCap

PREFIX = "claude_code."
RESULTS = ("accepted", "duplicate", "invalid", "unsupported", "dropped")
POINTS = "agentwatch_native_metric_points_total"
LAST_RECEIVED = "agentwatch_native_metric_last_received_timestamp_seconds"
# Attributes that identify one session, request, prompt or account: never labels.
ID_ATTRIBUTES = frozenset(
    {
        "session.id",
        "session_id",
        "prompt.id",
        "request_id",
        "user.id",
        "user.email",
        "user.account_uuid",
        "user.account_id",
        "organization.id",
        "event.sequence",
        "event.timestamp",
    }
)
_ID_LIKE = re.compile(r"(?:^|[._-])(?:id|uuid|email)$", re.IGNORECASE)
MAX_LABEL_NAMES = 64  # distinct label names over all families; Claude Code 2.1 uses ~15
MAX_VALUE_CHARS = 256
MAX_HELP_CHARS = 300

# pkg/translator/prometheus in opentelemetry-collector-contrib: UCUM units to Prometheus words.
UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week"}
PER_UNITS |= {"mo": "month", "y": "year"}
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_]")

Labels = tuple[tuple[str, str], ...]


def _tokens(text: str) -> list[str]:
    return [t for t in _NOT_ALNUM.split(text) if t]


def prometheus_name(name: str, unit: str, kind: str) -> str:
    """The name the otel-collector's Prometheus exporter gives an OTLP metric; `kind` is
    "counter" (a monotonic sum), "gauge" (an OTLP gauge) or "sum" (a non-monotonic sum)."""
    tokens = _tokens(name)
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    if main and "{" not in main and "}" not in main:
        word = "_".join(_tokens(UNITS.get(main, main)))
        if word and word not in tokens:
            tokens.append(word)
    if per and "{" not in per and "}" not in per:
        word = "_".join(_tokens(PER_UNITS.get(per, per)))
        if word and word not in tokens:
            tokens += ["per", word]
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    out = "_".join(tokens)
    return "_" + out if out[:1].isdigit() else out


def label_name(key: str) -> str:
    """An attribute key as the otel-collector makes it a label name (terminal.type -> terminal_type)."""
    name = _NOT_LABEL.sub("_", key)
    if name[:1].isdigit():
        return "key_" + name
    if name.startswith("_") and not name.startswith("__"):
        return "key" + name
    return name


def _scalar(value: AnyValue) -> str | None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value[:MAX_VALUE_CHARS]
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    return None  # arrays, maps and bytes make no label


def _is_id(key: str) -> bool:
    return key in ID_ATTRIBUTES or _ID_LIKE.search(key) is not None


def _digest(parts: Iterable[bytes]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(4, "little"))
        h.update(part)
    return h.digest()


def _attrs_bytes(attributes: Sequence[KeyValue]) -> Iterator[bytes]:
    for kv in sorted(attributes, key=lambda kv: kv.key):
        yield kv.key.encode()
        yield kv.value.SerializeToString(deterministic=True)


@dataclass
class _Family:
    name: str  # as exposed; counters end in _total
    kind: str  # "counter" or "gauge"
    doc: str
    series: dict[Labels, float] = field(default_factory=dict)


class NativeMetrics(Collector):
    """A MetricsSink (collector/native): add() takes Claude Code's OTLP metric requests,
    collect() exposes them as Prometheus families. Registers itself on `registry`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        label_cap: int = 200,
        user_label: str = "id",
        max_metrics: int = 100,
        max_streams: int = 100_000,
    ) -> None:
        self._label_cap = label_cap
        self._user_key = "user.email" if user_label == "email" else "user.id"
        self._max_metrics = max_metrics
        self._max_streams = max_streams
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._taken: set[str] = set()  # family and sample names in use, in either format
        self._caps: dict[str, LabelCap] = {"user": LabelCap(label_cap)}
        # stream digest -> (start ns, time ns, value): the last point of each sender stream.
        self._streams: OrderedDict[bytes, tuple[int, int, float]] = OrderedDict()
        self._points = dict.fromkeys(RESULTS, 0)
        self._last_received_ms: int | None = None
        registry.register(self)

    # -- the sink -------------------------------------------------------------------------------
    def add(self, request: ExportMetricsServiceRequest, received_ms: int) -> None:
        with self._lock:
            if self._last_received_ms is None or received_ms > self._last_received_ms:
                self._last_received_ms = received_ms
            for rm in request.resource_metrics:
                resource = _digest(_attrs_bytes(rm.resource.attributes))
                for sm in rm.scope_metrics:
                    scope = sm.scope.name.encode()
                    for metric in sm.metrics:
                        self._add_metric(metric, resource + scope)

    def _count(self, result: str, n: int = 1) -> None:
        self._points[result] += n

    def _add_metric(self, metric: Metric, origin: bytes) -> None:
        data = metric.WhichOneof("data")
        if data == "sum":
            points: Sequence[NumberDataPoint] = metric.sum.data_points
            temporality = metric.sum.aggregation_temporality
            monotonic = metric.sum.is_monotonic
            kind = "counter" if monotonic else "sum"
        elif data == "gauge":
            points, monotonic, kind = metric.gauge.data_points, False, "gauge"
            temporality = AGGREGATION_TEMPORALITY_UNSPECIFIED
        else:  # histogram, exponential_histogram, summary, nothing
            n = len(getattr(metric, data).data_points) if data else 1
            self._count("unsupported", n)
            return
        if not metric.name.startswith(PREFIX):
            self._count("dropped", len(points))
            return
        if kind != "gauge" and temporality not in (
            AGGREGATION_TEMPORALITY_DELTA,
            AGGREGATION_TEMPORALITY_CUMULATIVE,
        ):
            self._count("invalid", len(points))
            return
        family = self._family(metric, kind, len(points))
        if family is None:
            return  # counted by _family
        stream_base = _digest([origin, metric.name.encode()])
        for point in points:
            self._count(self._add_point(family, point, temporality, monotonic, stream_base))

    def _family(self, metric: Metric, kind: str, n: int) -> _Family | None:
        name = prometheus_name(metric.name, metric.unit, kind)
        exposed = "counter" if kind == "counter" else "gauge"
        family = self._families.get(name)
        if family is not None and family.kind == exposed:
            return family
        # A counter claude_code_x_total is the family claude_code_x in OpenMetrics: both names
        # are taken, so no gauge (of either name) can clash with it in either format.
        names = {name, name.removesuffix("_total")} if exposed == "counter" else {name}
        if family is not None or names & self._taken:
            self._count("invalid", n)  # one name sent as two types
            return None
        if len(self._families) >= self._max_metrics:
            self._count("dropped", n)
            return None
        doc = metric.description[:MAX_HELP_CHARS] or f"Claude Code's {metric.name}."
        self._taken |= names
        family = self._families[name] = _Family(name, exposed, doc)
        return family

    def _add_point(
        self,
        family: _Family,
        point: NumberDataPoint,
        temporality: int,
        monotonic: bool,
        stream_base: bytes,
    ) -> str:
        which = point.WhichOneof("value")
        if which is None or point.flags & DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK:
            return "invalid"
        value = point.as_double if which == "as_double" else float(point.as_int)
        if not math.isfinite(value):
            return "invalid"
        labels = self._labels(point.attributes)
        start, time = point.start_time_unix_nano, point.time_unix_nano
        if family.kind == "gauge" and temporality != AGGREGATION_TEMPORALITY_DELTA:
            family.series[labels] = value  # a gauge or a cumulative up-down sum: the latest
            return "accepted"
        stream = _digest([stream_base, *_attrs_bytes(point.attributes)])
        if temporality == AGGREGATION_TEMPORALITY_DELTA:
            if monotonic and value < 0:
                return "invalid"
            last = self._streams.get(stream)
            if last is not None and (last[0], last[1]) == (start, time):
                return "duplicate"  # the sender re-sent a request
            self._remember(stream, (start, time, value))
            increase = value
        else:
            stream += start.to_bytes(8, "little")
            last = self._streams.get(stream)
            if last is not None and time <= last[1]:
                return "duplicate"  # re-sent, or older than what we have
            # A new stream (or start time: the sender restarted) or a reset adds its whole value.
            increase = value if last is None or value < last[2] else value - last[2]
            self._remember(stream, (start, time, value))
        family.series[labels] = family.series.get(labels, 0.0) + increase
        return "accepted"

    def _remember(self, stream: bytes, state: tuple[int, int, float]) -> None:
        self._streams[stream] = state
        self._streams.move_to_end(stream)
        while len(self._streams) > self._max_streams:
            self._streams.popitem(last=False)

    def _labels(self, attributes: Sequence[KeyValue]) -> Labels:
        out: dict[str, str] = {}
        user: str | None = None
        fallback: str | None = None
        for kv in sorted(attributes, key=lambda kv: kv.key):
            if kv.key == self._user_key:
                user = _scalar(kv.value)
                continue
            if kv.key == "user.id":
                fallback = _scalar(kv.value)
                continue
            if _is_id(kv.key):
                continue
            name = label_name(kv.key)
            value = _scalar(kv.value)
            if value is None or not name or name.startswith("__") or name == "user":
                continue
            # Two keys with one label name (a.b and a_b): joined, as the otel-collector does.
            out[name] = f"{out[name]};{value}" if name in out else value
        labels: dict[str, str] = {}
        for name, value in out.items():
            cap = self._caps.get(name)
            if cap is None and len(self._caps) < MAX_LABEL_NAMES:
                cap = self._caps[name] = LabelCap(self._label_cap)
            if cap is not None:  # else: one label name too many, dropped
                labels[name] = cap(value)
        user = user or fallback
        if user:
            labels["user"] = self._caps["user"](user)
        return tuple(sorted(labels.items()))

    # -- the Prometheus collector ---------------------------------------------------------------
    def describe(self) -> Iterator[PromMetric]:
        """Our own names, so registering twice on one registry fails; claude_code_* families
        are not known before data comes, and cannot clash with anything else (their prefix)."""
        yield CounterMetricFamily(POINTS, "", labels=["result"])
        yield GaugeMetricFamily(LAST_RECEIVED, "")

    def collect(self) -> Iterator[PromMetric]:
        with self._lock:
            points = dict(self._points)
            last = self._last_received_ms
            families = [
                (f.name, f.kind, f.doc, sorted(f.series.items()))
                for f in sorted(self._families.values(), key=lambda f: f.name)
            ]
        counter = CounterMetricFamily(
            POINTS,
            "Data points of Claude Code's own OTLP metrics received, by what became of them.",
            labels=["result"],
        )
        for result in RESULTS:
            counter.add_metric([result], points[result])
        yield counter
        gauge = GaugeMetricFamily(
            LAST_RECEIVED, "When the last OTLP metrics request from Claude Code came in."
        )
        if last is not None:
            gauge.add_metric([], last / 1000)
        yield gauge
        for name, kind, doc, series in families:
            family: PromMetric
            if kind == "counter":
                family = CounterMetricFamily(name, doc)
                sample = family.name + "_total"
            else:
                family = GaugeMetricFamily(name, doc)
                sample = name
            for labels, value in series:
                family.add_sample(sample, dict(labels), value)
            yield family
