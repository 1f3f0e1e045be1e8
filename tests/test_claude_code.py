"""The real Claude Code, headless, against the scripted Messages API stand-in, with our hooks
installed each way a user can (project, user, plugin, http): every hook it ran is stored once,
every tool call completes with its outcome, tokens and cost are Claude Code's own, the agent
tree is what ran, and no secret from a tool's input or output is stored."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.claude import INSTALL_MODES, Claude, Run, model_usage
from tests.support.fake_anthropic import FakeAnthropic, Reply, ToolUse
from tests.support.otlp_receiver import GrpcReceiver
from tests.support.procs import Proc, start_collector, wait_until

pytestmark = pytest.mark.e2e

SECRET = "ghp_" + "Z9" * 18  # a GitHub token: the redaction must catch it in input and output
PROMPT = "\u276f"  # the heavy angle Claude Code draws at its input line


@pytest.fixture(scope="module")
def receiver() -> Iterator[GrpcReceiver]:
    """A real OTLP/gRPC receiver the collector relays to: the spans of the real sessions."""
    rec = GrpcReceiver().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory, receiver: GrpcReceiver) -> Iterator[Proc]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    proc = start_collector(tmp_path_factory.mktemp("collector"), env)
    yield proc
    proc.stop()


@pytest.fixture
def api() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(params=INSTALL_MODES)
def claude(
    request: pytest.FixtureRequest, tmp_path: Path, api: FakeAnthropic, collector: Proc
) -> Claude:
    return Claude(tmp_path, api.url, collector.url, mode=request.param)


def get(collector: Proc, path: str, **params: Any) -> Any:
    r = httpx.get(collector.url + path, params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def stored(collector: Proc, session_id: str) -> list[dict[str, Any]]:
    events, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = get(collector, f"/v1/sessions/{session_id}/events", **params)
        events += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return events


def delivered(claude: Claude, collector: Proc, session_id: str) -> list[dict[str, Any]]:
    """The session's stored hook events, once as many as the hooks Claude Code ran arrived."""
    ran = claude.hooks_run(session_id)
    assert ran, "Claude Code ran no hook"
    with contextlib.suppress(TimeoutError):  # the comparison after this says what is missing
        wait_until(
            lambda: len(_stored_or_none(collector, session_id)) >= len(ran), 60, "the events"
        )
    return [e for e in stored(collector, session_id) if e["source"] == "hook"]


def _stored_or_none(collector: Proc, session_id: str) -> list[dict[str, Any]]:
    """The session's hook events stored so far (Claude Code's own events aside)."""
    r = httpx.get(f"{collector.url}/v1/sessions/{session_id}/events", params={"limit": 500})
    items = r.json()["items"] if r.status_code == 200 else []
    return [e for e in items if e["source"] == "hook"]


def check(
    claude: Claude,
    collector: Proc,
    api: FakeAnthropic,
    run: Run,
    unfinished: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """What every headless scenario must show; returns the session for further checks.
    `unfinished`: tool calls cut short (an interrupt): no event ever ends them."""
    assert run.returncode == 0, run.stderr
    own = (model_usage(run.result), run.result["total_cost_usd"])
    return check_session(claude, collector, api, run.session_id, own, unfinished)


def tree_calls(agent: dict[str, Any]) -> list[dict[str, Any]]:
    return agent["tool_calls"] + [c for sub in agent["subagents"] for c in tree_calls(sub)]


def metric(collector: Proc, name: str, **labels: str) -> float:
    text = httpx.get(collector.url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def check_session(
    claude: Claude,
    collector: Proc,
    api: FakeAnthropic,
    sid: str,
    own: tuple[dict[str, dict[str, int]], float],
    unfinished: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """`own`: Claude Code's own tokens by model and cost for the session."""
    events = delivered(claude, collector, sid)
    ran = claude.hooks_run(sid)
    # The stored events are the hooks Claude Code ran, each once (by event and tool_use_id).
    assert Counter((e["hook_event"], e["tool_use_id"]) for e in events) == Counter(
        (p["hook_event_name"], p.get("tool_use_id")) for p in ran
    )
    assert len({e["event_id"] for e in events}) == len(events)
    # Every tool call has ended (but those cut short), with an outcome, in the agent tree.
    calls = tree_calls(get(collector, f"/v1/sessions/{sid}/tree")["agent"])
    assert {c["tool_use_id"] for c in calls if c["outcome"] == "running"} == unfinished
    assert {c["tool_use_id"] for c in calls} >= {e["tool_use_id"] for e in events} - {None}
    # Tokens and cost are Claude Code's own, and what the stand-in billed.
    session = get(collector, f"/v1/sessions/{sid}")
    assert session["usage"] == own[0] == api.script.usage_by_model()
    assert session["cost_usd"] == round(own[1], 6) > 0
    assert session["cost_source"] == "exact"
    assert session["user"] == claude.user_id()  # the hook read it at SessionStart
    # The project, not wherever the agent cd'ed to.
    assert {e["source_app"] for e in events} == {claude.project.name}
    # No secret the stand-in put in a tool's input or output was stored.
    exported = httpx.get(f"{collector.url}/v1/export", params={"session_id": sid}).text
    assert SECRET not in exported and sid in exported
    return session


def test_headless_run_with_one_tool_call(
    claude: Claude, collector: Proc, api: FakeAnthropic
) -> None:
    bash = ToolUse("Bash", {"command": f"cd /tmp && echo {SECRET}", "description": "echo"})
    api.script.conversations["[[one]]"] = [
        Reply(tools=[bash], input=1200, output=40, cache_read=300, cache_creation=500),
        Reply(text="Printed it.", input=1500, output=15, cache_read=1700),
    ]
    run = claude.headless("[[one]] print the token", "--allowedTools", "Bash")
    check(claude, collector, api, run)
    events = stored(collector, run.session_id)
    (end,) = [e for e in events if e["hook_event"] == "PostToolUse"]
    assert end["tool_use_id"] == bash.id and end["outcome"] == "success"
    assert [e["hook_event"] for e in events][:2] == ["SessionStart", "UserPromptSubmit"]
    assert events[-1]["hook_event"] == "SessionEnd"


def test_failing_tool(claude: Claude, collector: Proc, api: FakeAnthropic) -> None:
    bash = ToolUse("Bash", {"command": "echo no >&2; exit 3", "description": "fail"})
    api.script.conversations["[[fail]]"] = [Reply(tools=[bash]), Reply(text="It failed.")]
    run = claude.headless("[[fail]] run it", "--allowedTools", "Bash")
    check(claude, collector, api, run)
    (end,) = [e for e in stored(collector, run.session_id) if e["tool_use_id"] == bash.id][1:]
    assert end["hook_event"] == "PostToolUseFailure" and end["outcome"] == "error"


def test_two_tool_calls_in_one_message(claude: Claude, collector: Proc, api: FakeAnthropic) -> None:
    a = ToolUse("Bash", {"command": "echo a", "description": "a"})
    b = ToolUse("Bash", {"command": "echo b", "description": "b"})
    api.script.conversations["[[two]]"] = [Reply(tools=[a, b], output=60), Reply(text="Both.")]
    run = claude.headless("[[two]] run both", "--allowedTools", "Bash")
    check(claude, collector, api, run)
    ends = {
        e["tool_use_id"]: e["outcome"]
        for e in stored(collector, run.session_id)
        if e["hook_event"] == "PostToolUse"
    }
    assert ends == {a.id: "success", b.id: "success"}


def test_tool_refused_by_permissions(claude: Claude, collector: Proc, api: FakeAnthropic) -> None:
    """Headless, a call that needs a permission nobody can grant: Claude Code 2.1.328 runs
    PreToolUse, PermissionRequest and PostToolBatch (which lists the call), and no end event for
    it. All three are stored, and the batch ends the call as blocked."""
    blocked = {"tool": "Write", "outcome": "blocked"}
    before = metric(collector, "agentwatch_tool_calls_total", **blocked)
    write = ToolUse("Write", {"file_path": str(claude.project / "x.txt"), "content": "x"})
    api.script.conversations["[[deny]]"] = [Reply(tools=[write]), Reply(text="Not allowed.")]
    run = claude.headless("[[deny]] write a file", "--permission-mode", "default")
    check(claude, collector, api, run)
    assert not (claude.project / "x.txt").exists()
    assert [d["tool_use_id"] for d in run.result["permission_denials"]] == [write.id]
    events = stored(collector, run.session_id)
    (asked,) = [e for e in events if e["hook_event"] == "PermissionRequest"]
    assert asked["tool_name"] == "Write"
    (call,) = tree_calls(get(collector, f"/v1/sessions/{run.session_id}/tree")["agent"])
    assert (call["tool_use_id"], call["outcome"]) == (write.id, "blocked")
    assert metric(collector, "agentwatch_tool_calls_total", **blocked) == before + 1
    stats = get(collector, "/v1/tools/stats", range="24h")
    assert next(s for s in stats["tools"] if s["tool"] == "Write")["blocked"] >= 1


def test_background_subagent_with_tools_of_its_own(
    claude: Claude, collector: Proc, api: FakeAnthropic, receiver: GrpcReceiver
) -> None:
    launch = ToolUse(
        "Agent",
        {
            "subagent_type": "general-purpose",
            "description": "look around",
            "prompt": "[[sub]] list the files",
        },
    )
    inner = ToolUse("Bash", {"command": "ls", "description": "list"})
    api.script.conversations["[[parent]]"] = [
        Reply(tools=[launch], input=2000, output=30),
        Reply(text="Waiting for it.", input=2100, output=10),
        Reply(text="It is done.", input=2600, output=12),
    ]
    api.script.conversations["[[sub]]"] = [
        Reply(tools=[inner], input=900, output=25, cache_creation=400),
        Reply(text="Two files.", input=1000, output=8, cache_read=400),
    ]
    run = claude.headless("[[parent]] use a subagent", "--allowedTools", "Bash,Agent")
    session = check(claude, collector, api, run)
    assert session["subagents"] == 1
    tree = get(collector, f"/v1/sessions/{run.session_id}/tree")
    main = tree.get("agent", tree)
    assert [c["tool_use_id"] for c in main["tool_calls"]] == [launch.id]
    (sub,) = main["subagents"]
    assert sub["agent_type"] == "general-purpose"
    assert sub["started_by"]["tool_use_id"] == launch.id
    assert [(c["tool_use_id"], c["outcome"]) for c in sub["tool_calls"]] == [(inner.id, "success")]
    # The exported trace puts the subagent under the same call (one rule: collector/launches.py).

    def exported() -> list[dict[str, Any]]:
        return [s for s in receiver.rec.spans if s["span_id"] == sub["span_id"]]

    wait_until(lambda: bool(exported()), 60, "the subagent's span at the receiver")
    (span,) = exported()
    assert span["trace_id"] == tree["trace_id"] == session["trace_id"]
    assert span["parent_span_id"] == sub["parent_span_id"]


def test_resumed_session_joins_the_same_session(
    claude: Claude, collector: Proc, api: FakeAnthropic
) -> None:
    api.script.conversations["[[resume]]"] = [
        Reply(text="First.", input=1000, output=10),
        Reply(text="Second.", input=3000, output=30),
    ]
    first = claude.headless("[[resume]] one")
    assert first.returncode == 0, first.stderr
    second = claude.headless("two", "--resume", first.session_id)
    assert second.session_id == first.session_id
    session = check(claude, collector, api, second)
    assert session["prompts"] == 2
    starts = [e for e in stored(collector, first.session_id) if e["hook_event"] == "SessionStart"]
    assert [e["payload"]["source"] for e in starts] == ["startup", "resume"]


def test_interrupted_headless_run_still_counts_its_tokens(
    claude: Claude, collector: Proc, api: FakeAnthropic
) -> None:
    """SIGINT while a slow tool runs: no Stop, no end of the call; SessionEnd still settles the
    session on Claude Code's own totals."""
    started = claude.root / "tool-started"
    slow = ToolUse(
        "Bash", {"command": f"touch {started} && timeout 120 tail -f /dev/null", "description": "w"}
    )
    api.script.conversations["[[slow]]"] = [Reply(tools=[slow], input=4000, output=70)]
    run = claude.interrupted("[[slow]] wait", started.exists, "--allowedTools", "Bash")
    sid = run.session_id
    assert "Stop" not in {p["hook_event_name"] for p in claude.hooks_run(sid)}
    check(claude, collector, api, run, unfinished=frozenset({slow.id}))


def test_interactive_session_with_compaction(
    claude: Claude, collector: Proc, api: FakeAnthropic
) -> None:
    """Under tmux as a person types: startup, a prompt with a tool call, /compact, /exit. The
    session's cost is the one Claude Code recorded for it (its transcript's cost-state)."""
    bash = ToolUse("Bash", {"command": "echo hi", "description": "say hi"})
    api.script.conversations["[[tty]]"] = [
        Reply(tools=[bash], input=2400, output=40, cache_creation=800),
        Reply(text="Said hi.", input=2500, output=12, cache_read=800),
        Reply(text="Summary: said hi.", input=2600, output=30),  # the compaction
    ]

    def ran(event: str) -> bool:
        return any(p["hook_event_name"] == event for p in claude.hooks_run())

    def arrived(event: str) -> bool:
        """Our hook has run too: a person reads the answer before typing the next command
        (Claude Code ends the hooks still running when it exits)."""
        sid = claude.hooks_run()[0]["session_id"]
        return any(e["hook_event"] == event for e in _stored_or_none(collector, sid))

    with claude.interactive("--allowedTools", "Bash") as tty:
        tty.wait_for(lambda: PROMPT in tty.screen(), "the input prompt")
        tty.type("[[tty]] say hi")
        tty.wait_for(lambda: ran("Stop") and arrived("Stop"), "the turn's Stop hook")
        tty.type("/compact")
        tty.wait_for(lambda: ran("PostCompact") and arrived("PostCompact"), "the compaction")
        tty.type("/exit")
        tty.wait_for(lambda: ran("SessionEnd"), "the SessionEnd hook")
    sid = claude.hooks_run()[0]["session_id"]
    own = json.loads(
        next(
            line
            for line in reversed(claude.transcript(sid).read_text().splitlines())
            if '"type":"cost-state"' in line
        )
    )
    usage = model_usage({"modelUsage": own["modelUsage"]})
    check_session(claude, collector, api, sid, (usage, own["totalCostUSD"]))
    events = stored(collector, sid)
    (post,) = [e for e in events if e["hook_event"] == "PostCompact"]
    assert post["payload"]["trigger"] == "manual" and post["payload"]["compact_summary"]
    assert [e["payload"].get("source") for e in events if e["hook_event"] == "SessionStart"] == [
        "startup",
        "compact",
    ]
    (end,) = [e for e in events if e["hook_event"] == "SessionEnd"]
    assert end["payload"]["reason"] == "prompt_input_exit"


TELEMETRY = {
    "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_LOGS_EXPORT_INTERVAL": "500",
    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
}


@pytest.mark.parametrize("mode", ["project"])
def test_claude_codes_own_telemetry_makes_the_cost_exact_live(
    mode: str, tmp_path: Path, api: FakeAnthropic, collector: Proc
) -> None:
    """Claude Code sends its OpenTelemetry to the same endpoint as the hooks: its api_request
    and tool_result events join the timeline, the session's cost and tokens are its own, and
    /metrics has cost by project and developer and its claude_code_* series."""
    env = TELEMETRY | {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    claude = Claude(tmp_path, api.url, collector.url, mode=mode, env_extra=env)
    bash = ToolUse("Bash", {"command": "echo hi", "description": "say hi"})
    api.script.conversations["[[otel]]"] = [
        Reply(tools=[bash], input=3000, output=60, cache_read=900, cache_creation=200),
        Reply(text="Said hi.", input=3300, output=12, cache_read=1100),
    ]
    run = claude.headless("[[otel]] say hi", "--allowedTools", "Bash")
    sid = run.session_id

    def native() -> list[dict[str, Any]]:
        return [e for e in stored(collector, sid) if e["source"] == "otel"]

    def names() -> set[str]:
        return {e["hook_event"] for e in native()}

    wait_until(lambda: {"claude_code.api_request", "claude_code.tool_result"} <= names(), 60)
    session = check(claude, collector, api, run)
    requests = [e for e in native() if e["hook_event"] == "claude_code.api_request"]
    assert len(requests) == len(api.script.served)
    (result,) = [e for e in native() if e["hook_event"] == "claude_code.tool_result"]
    assert result["tool_use_id"] == bash.id and result["outcome"] == "success"
    user = requests[0]["payload"]["user.id"]
    assert session["user"] == user
    # Exact or estimated depends on which came first (a Stop's transcript, or the api_request
    # export); together they are Claude Code's total, never more.
    cost = sum(
        metric(
            collector,
            "agentwatch_cost_usd_total",
            model="claude-opus-5-5",
            source_app=claude.project.name,  # its own project
            user=user,  # every increment: the hook named the user at SessionStart
            cost_source=source,
        )
        for source in ("exact", "estimated")
    )
    assert cost == pytest.approx(run.result["total_cost_usd"])

    def native_cost() -> float:
        return sum(
            metric(collector, "claude_code_cost_usage_USD_total", **labels)
            for labels in metric_labels(collector, "claude_code_cost_usage_USD_total")
            if labels.get("user") == user
        )

    wait_until(lambda: native_cost() > 0, 60, "claude_code_cost_usage_USD_total")
    assert native_cost() == pytest.approx(run.result["total_cost_usd"])


def metric_labels(collector: Proc, name: str) -> list[dict[str, str]]:
    text = httpx.get(collector.url + "/metrics").text
    return [
        s.labels
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]
