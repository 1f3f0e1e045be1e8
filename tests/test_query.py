"""The query API over a real app and store (TestClient): filters, pagination, tree, stats."""

from __future__ import annotations

import csv
import io
import statistics
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from collector.query import events as query_events
from collector.query import params as query_params
from collector.query import tools as query_tools
from collector.query import tree as query_tree
from tests.conftest import BACKENDS, Harness
from tests.test_query_data import (
    NOW_MS,
    env,
    parallel_subagents_session,
    simple_session,
    tool_call,
)

HOUR = 3_600_000


def load(h: Harness, envelopes: list[dict[str, Any]]) -> None:
    for i in range(0, len(envelopes), 500):
        r = h.post("/v1/events", envelopes[i : i + 500])
        assert r.status_code == 200, r.text
        assert not r.json()["rejected"]


def get(h: Harness, path: str, **params: Any) -> Any:
    r = h.client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def all_pages(h: Harness, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = get(h, path, **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(harness: Harness) -> Harness:
    """Sessions across two apps and three hours: ended, active, with and without errors."""
    data: list[dict[str, Any]] = []
    data += simple_session("s-old", NOW_MS - 3 * HOUR, app="shop", errors=1)
    data += simple_session("s-mid", NOW_MS - 2 * HOUR, app="blog")
    data += simple_session("s-new", NOW_MS - 60_000, app="shop", ended=False)
    data += simple_session("s-err", NOW_MS - 30 * 60_000, app="shop", errors=2)
    load(harness, data)
    alert = {"status": "resolved", "labels": {"alertname": "AgentToolErrorRateHigh"}}
    r = harness.post("/v1/alerts", {"receiver": "collector", "alerts": [alert]})
    assert r.status_code == 200, r.text
    return harness


# -- sessions ------------------------------------------------------------------------------------
def test_session_list_is_most_recent_first_with_summaries(store: Harness) -> None:
    items = get(store, "/v1/sessions")["items"]
    assert [s["session_id"] for s in items] == ["s-new", "s-err", "s-mid", "s-old"]
    err = items[1]
    assert err["source_app"] == "shop"
    assert err["status"] == "ended"
    assert err["duration_ms"] == 1000 == err["end"] - err["start"]
    assert (err["events"], err["tool_calls"], err["errors"], err["agents"]) == (10, 3, 2, 1)
    assert err["tokens"] == 1500
    assert err["cost_usd"] == pytest.approx(1000 * 3e-6 + 500 * 15e-6)
    assert items[0]["status"] == "active"


def test_session_filters(store: Harness) -> None:
    def ids(**params: Any) -> list[str]:
        return [s["session_id"] for s in get(store, "/v1/sessions", **params)["items"]]

    assert ids(source_app="blog") == ["s-mid"]
    assert ids(errors="true") == ["s-err", "s-old"]
    assert ids(status="active") == ["s-new"]
    assert ids(status="ended") == ["s-err", "s-mid", "s-old"]
    assert ids(range="1h") == ["s-new", "s-err"]
    start = datetime.fromtimestamp((NOW_MS - 2.5 * HOUR) / 1000, UTC).isoformat()
    assert ids(**{"from": start, "to": str(NOW_MS - HOUR)}) == ["s-mid"]
    assert ids(source_app="nope") == []


def test_session_pagination_walks_every_session_once(store: Harness) -> None:
    first = get(store, "/v1/sessions", limit=3)
    assert len(first["items"]) == 3 and first["next_cursor"]
    last = get(store, "/v1/sessions", limit=3, cursor=first["next_cursor"])
    assert [s["session_id"] for s in last["items"]] == ["s-old"]
    assert last["next_cursor"] is None
    assert [s["session_id"] for s in all_pages(store, "/v1/sessions", limit=1)] == [
        "s-new",
        "s-err",
        "s-mid",
        "s-old",
    ]
    exact = get(store, "/v1/sessions", limit=4)
    assert exact["next_cursor"] is None  # a full last page does not promise another


def test_session_detail_and_unknown(store: Harness) -> None:
    s = get(store, "/v1/sessions/s-old")
    assert s["session_id"] == "s-old" and s["errors"] == 1
    assert s["usage"] == {
        "claude-sonnet-4-5": {"input": 1000, "output": 500, "cache_read": 0, "cache_creation": 0}
    }
    assert s["trace_id"] == query_tree.trace_id("s-old") and len(s["trace_id"]) == 32
    r = store.client.get("/v1/sessions/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]


def test_alert_notifications_are_not_sessions(store: Harness) -> None:
    assert "" not in [s["session_id"] for s in get(store, "/v1/sessions")["items"]]


# -- timeline ------------------------------------------------------------------------------------
def test_timeline_pages_in_order(store: Harness) -> None:
    events = all_pages(store, "/v1/sessions/s-old/events", limit=3)
    assert len(events) == 10
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert events[0]["hook_event"] == "SessionStart"
    assert events[-1]["hook_event"] == "SessionEnd"
    assert events[1]["payload"]["prompt"] == "fix the bug"  # payload is JSON, not a string
    assert len({e["seq"] for e in events}) == 10
    assert store.client.get("/v1/sessions/nope/events").status_code == 404


def test_timeline_ties_on_ts_are_ordered_by_seq(harness: Harness) -> None:
    load(harness, [env("s-tie", "Notification", NOW_MS - 5000) for _ in range(5)])
    pages = [get(harness, "/v1/sessions/s-tie/events", limit=2)]
    while pages[-1]["next_cursor"]:
        pages.append(
            get(harness, "/v1/sessions/s-tie/events", limit=2, cursor=pages[-1]["next_cursor"])
        )
    seqs = [e["seq"] for p in pages for e in p["items"]]
    assert seqs == sorted(seqs) and len(seqs) == 5


# -- events --------------------------------------------------------------------------------------
def test_event_filters(store: Harness) -> None:
    def count(**params: Any) -> int:
        return len(all_pages(store, "/v1/events", limit=1000, **params))

    assert count() == 40
    assert count(session="s-old") == 10
    assert count(source_app="blog") == 10
    assert count(hook_event="SessionEnd") == 3
    assert count(tool="Bash") == 24
    assert count(outcome="success") == 12 - 3 + 1  # the resolved alert
    assert count(errors="true") == 3
    assert count(errors="true", outcome="error") == 3
    assert count(range="1h") == 2 * 10 - 1 + 1  # s-new (9, no SessionEnd), s-err and the alert
    assert count(session="s-old", hook_event="PostToolUseFailure", tool="Bash") == 1
    assert count(agent="s-mid") == 10
    assert count(q="FIX THE") == 4  # case-insensitive, over the payload text
    assert count(q="100%_") == 0  # LIKE wildcards in q are literal
    newest = get(store, "/v1/events", limit=1)["items"][0]
    assert newest["hook_event"] == "AlertNotification"


def test_free_text_pages_look_at_a_bounded_number_of_events(store: Harness) -> None:
    """A page with q unpacks at most scan_budget payloads; following the cursors finds every
    match, in order, the same as one unbounded page."""
    with store.client.app.state.ctx.store.reader() as conn:  # type: ignore[attr-defined]
        flt = query_events.EventFilter(q="FIX THE")
        everything = query_events.list_events(conn, flt, 100, None, scan_budget=1000).items
        pages, cursor, found = 0, None, []
        while True:
            page = query_events.list_events(conn, flt, 3, cursor, scan_budget=7)
            pages += 1
            found += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
    assert len(everything) == 4
    assert [e["seq"] for e in found] == [e["seq"] for e in everything]
    assert pages >= 40 // 7  # 40 events, 7 looked at per page: some pages come back short


def test_event_pagination_edges(store: Harness) -> None:
    empty = get(store, "/v1/events", session="nope")
    assert empty == {"items": [], "next_cursor": None}
    page = get(store, "/v1/events", limit=39)
    rest = get(store, "/v1/events", limit=39, cursor=page["next_cursor"])
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    everything = all_pages(store, "/v1/events", limit=7)
    keys = [(e["ts"], e["seq"]) for e in everything]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == 40


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"cursor": "not-a-cursor!"}, "invalid cursor"),
        ({"cursor": query_params.encode_cursor("sessions", 1, "x")}, "invalid cursor"),
        ({"cursor": query_params.encode_cursor("events", "1", 2)}, "invalid cursor"),
        ({"range": "2h"}, "range must be one of"),
        ({"range": "1h", "from": "0"}, "not both"),
        ({"from": "yesterday"}, "ISO 8601"),
        ({"from": "2000", "to": "1000"}, "after from"),
        ({"outcome": "maybe"}, "outcome"),
        ({"errors": "true", "outcome": "success"}, "conflicts"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"q": ""}, "q"),
    ],
)
def test_invalid_event_queries_are_400_with_a_reason(
    harness: Harness, params: dict[str, str], reason: str
) -> None:
    r = harness.client.get("/v1/events", params=params)
    assert r.status_code == 400
    assert reason in r.json()["error"]


def test_invalid_session_queries_are_400(harness: Harness) -> None:
    for params in (
        {"status": "sleeping"},
        {"cursor": query_params.encode_cursor("events", 1, 2)},
        {"errors": "perhaps"},
    ):
        r = harness.client.get("/v1/sessions", params=params)
        assert r.status_code == 400, params
        assert r.json()["error"]
    r = harness.client.get("/v1/sessions/x/events", params={"cursor": "abc"})
    assert r.status_code == 400


def test_limit_allows_ten_thousand(store: Harness) -> None:
    assert len(get(store, "/v1/events", limit=10_000)["items"]) == 40


# -- tree ----------------------------------------------------------------------------------------
def test_tree_of_a_session_with_parallel_subagents(harness: Harness) -> None:
    data, expected = parallel_subagents_session("s-tree", NOW_MS - 10_000)
    load(harness, data)
    tree = get(harness, "/v1/sessions/s-tree/tree")
    assert tree["trace_id"] == query_tree.trace_id("s-tree")
    main = tree["agent"]
    assert (main["agent_id"], main["agent_type"], main["parent_agent_id"]) == (
        "s-tree",
        "main",
        None,
    )
    subs = {s["agent_id"]: s for s in main["subagents"]}
    assert set(subs) == set(expected)
    for agent_id, tid in expected.items():
        sub = subs[agent_id]
        assert sub["started_by"]["tool_use_id"] == tid, agent_id
        assert sub["started_by"]["tool_name"] == "Task"
        assert sub["agent_type"] == sub["started_by"]["subagent_type"]
        assert sub["parent_span_id"] == query_tree.span_id("s-tree", "tool", tid)
        assert [c["tool_name"] for c in sub["tool_calls"]] == ["Read", "Grep"]
    plan = subs["plan-1"]
    assert [c["outcome"] for c in plan["tool_calls"]] == ["success", "error"]
    assert [c["duration_ms"] for c in plan["tool_calls"]] == [5, 7]
    assert [c["duration_ms"] for c in subs["explore-2"]["tool_calls"]] == [7, 7]
    main_tools = [c["tool_name"] for c in main["tool_calls"]]
    assert main_tools == ["Task", "Task", "Task", "Edit"]
    launched = {c["tool_use_id"]: c.get("subagent_id") for c in main["tool_calls"]}
    assert {v: k for k, v in launched.items() if v} == expected
    assert get(harness, "/v1/sessions/s-tree")["agents"] == 4


def test_tree_without_subagent_type_matches_in_order(harness: Harness) -> None:
    from tests.test_query_data import task_pre

    t0 = NOW_MS - 5000
    data = [
        task_pre("s-old-cc", t0, "toolu_first_0000", None),
        task_pre("s-old-cc", t0 + 1, "toolu_second_000", None),
        env("s-old-cc", "SubagentStart", t0 + 5, agent="a-1", agent_type="general-purpose"),
        env("s-old-cc", "SubagentStart", t0 + 6, agent="a-2", agent_type="general-purpose"),
    ]
    load(harness, data)
    subs = get(harness, "/v1/sessions/s-old-cc/tree")["agent"]["subagents"]
    assert [(s["agent_id"], s["started_by"]["tool_use_id"]) for s in subs] == [
        ("a-1", "toolu_first_0000"),
        ("a-2", "toolu_second_000"),
    ]
    assert harness.client.get("/v1/sessions/none/tree").status_code == 404


# -- tool stats ------------------------------------------------------------------------------------
def test_tool_stats_percentiles_match_statistics(harness: Harness) -> None:
    import random

    rnd = random.Random(7)
    durations = {"Bash": [rnd.randint(1, 30_000) for _ in range(157)], "Read": [42], "Grep": [3, 9]}
    data: list[dict[str, Any]] = []
    t = NOW_MS - 2 * HOUR
    for tool, values in durations.items():
        for i, d in enumerate(values):
            data += tool_call("s-stats", tool, t, d, failed=tool == "Bash" and i % 10 == 0)
            t += 1000
    data += tool_call("s-stats", "Bash", NOW_MS - 30 * HOUR, 5)  # outside the 24 h range
    load(harness, data)
    stats = {s["tool"]: s for s in get(harness, "/v1/tools/stats", range="24h")["tools"]}
    assert set(stats) == {"Bash", "Read", "Grep"}
    bash = stats["Bash"]
    assert bash["calls"] == 157 and bash["errors"] == 16
    assert bash["error_rate"] == pytest.approx(16 / 157)
    cuts = statistics.quantiles(durations["Bash"], n=100, method="inclusive")
    assert bash["p50_ms"] == pytest.approx(statistics.median(durations["Bash"]))
    assert bash["p95_ms"] == pytest.approx(cuts[94])
    assert bash["p99_ms"] == pytest.approx(cuts[98])
    assert bash["mean_ms"] == pytest.approx(statistics.mean(durations["Bash"]))
    grep = stats["Grep"]
    assert grep["p50_ms"] == pytest.approx(6)
    assert grep["p95_ms"] == pytest.approx(
        statistics.quantiles([3, 9], n=100, method="inclusive")[94]
    )
    assert stats["Read"]["p99_ms"] == 42  # one value is every percentile
    default = get(harness, "/v1/tools/stats")
    assert {s["tool"] for s in default["tools"]} == set(stats)  # 24 h by default
    wide = {s["tool"]: s for s in get(harness, "/v1/tools/stats", range="7d")["tools"]}
    assert wide["Bash"]["calls"] == 158


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101])
def test_percentile_matches_statistics(n: int) -> None:
    data = sorted(float(x * x % 97) for x in range(n))
    if n == 1:
        assert query_tools.percentile(data, 95) == data[0]
        return
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    for k in (1, 50, 95, 99):
        assert query_tools.percentile(data, k) == pytest.approx(cuts[k - 1])


def test_tool_loops_are_listed(harness: Harness) -> None:
    t = NOW_MS - HOUR
    same = {"command": "npm test"}
    data: list[dict[str, Any]] = []
    for i in range(7):
        data += tool_call("s-loop", "Bash", t + i * 100, 10, tool_input=same)
    data += tool_call("s-loop", "Bash", t + 900, 10, tool_input={"command": "ls"})
    for i in range(3):
        data += tool_call("s-fine", "Bash", t + i * 100, 10, tool_input=same)
    load(harness, data)
    body = get(harness, "/v1/tools/stats", range="24h", loop_threshold=5)
    assert [(lp["session_id"], lp["tool"], lp["repeats"]) for lp in body["loops"]] == [
        ("s-loop", "Bash", 7)
    ]
    assert get(harness, "/v1/tools/stats", loop_threshold=7)["loops"] == []
    assert harness.client.get("/v1/tools/stats", params={"loop_threshold": 0}).status_code == 400


# -- export --------------------------------------------------------------------------------------
def test_export_ndjson_and_csv(store: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    r = store.client.get("/v1/export", params={"session": "s-old"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    rows = [orjson.loads(line) for line in r.text.splitlines()]
    assert len(rows) == 10 and rows[0]["hook_event"] == "SessionStart"
    assert [x["seq"] for x in rows] == sorted(x["seq"] for x in rows)
    r = store.client.get("/v1/export", params={"format": "csv", "tool": "Bash", "errors": "true"})
    assert r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert len(table) == 3 and {x["outcome"] for x in table} == {"error"}
    assert orjson.loads(table[0]["payload"])["tool_name"] == "Bash"
    # Batches smaller than the result: the generator pages through the store.
    monkeypatch.setattr(query_events.iter_events, "__defaults__", (4, None))
    everything = store.client.get("/v1/export").text.splitlines()
    assert len(everything) == 40 and len({orjson.loads(x)["seq"] for x in everything}) == 40
    limited = store.client.get("/v1/export", params={"limit": 5}).text.splitlines()
    assert len(limited) == 5
    assert store.client.get("/v1/export", params={"format": "xml"}).status_code == 400


# -- auth and docs ---------------------------------------------------------------------------------
QUERY_ROUTES = [
    "/v1/sessions",
    "/v1/sessions/x",
    "/v1/sessions/x/events",
    "/v1/sessions/x/tree",
    "/v1/events",
    "/v1/tools/stats",
    "/v1/export",
    "/v1/stream",
]


def test_token_is_required_when_set(make_harness: Any) -> None:
    h = make_harness(token="s3cret-token")
    for path in QUERY_ROUTES:
        assert h.client.get(path).status_code == 401, path
        bad = h.client.get(path, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401, path
    ok = h.client.get("/v1/sessions", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200


def test_openapi_lists_every_route_with_parameters_and_errors(harness: Harness) -> None:
    spec = harness.client.get("/openapi.json").json()
    for path in QUERY_ROUTES:
        templated = path.replace("/x", "/{session_id}")
        op = spec["paths"][templated]["get"]
        assert "400" in op["responses"] and "401" in op["responses"], path
    events = spec["paths"]["/v1/events"]["get"]
    names = {p["name"] for p in events["parameters"]}
    assert {"range", "from", "to", "source_app", "session", "agent", "hook_event"} <= names
    assert {"tool", "outcome", "errors", "q", "limit", "cursor"} <= names
    assert "404" in spec["paths"]["/v1/sessions/{session_id}/tree"]["get"]["responses"]
    assert harness.client.get("/docs").status_code == 200
