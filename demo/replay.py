"""Replay the recorded multi-agent session in demo/session.jsonl through the real hook script.

Each line of the recording is {"at": seconds from the start, "input": <hook JSON as Claude Code
sends it>, "transcript": [lines appended to the transcript before the hook runs]} (optional).
The replay:
- gives the sessions, agents, tool calls and messages fresh ids, so every run is a new session;
- writes the transcripts (with message.id, message.model, requestId, message.usage) into a
  temporary directory and points transcript_path / agent_transcript_path at them;
- maps the recording onto the last hour: the last event lands about a minute ago
  (AGENTWATCH_REPLAY_TS_MS carries each event's time to the hook);
- runs `<python> -S hooks/agentwatch_hook.py` once per event with the hook JSON on stdin, with a
  private spool directory, then `--flush` to deliver whatever is still spooled.
Stdlib only, so it runs with any python3.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECORDING = Path(__file__).with_name("session.jsonl")
HOOK = REPO / "hooks" / "agentwatch_hook.py"
DEFAULT_URL = "http://127.0.0.1:4000"
# The last recorded event is replayed this long before now, so it sits inside "last 1h"
# even after a scrape or two.
END_BEFORE_NOW_S = 60.0
HOOK_TIMEOUT_S = 30.0

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PREFIXED = re.compile(r"\b(toolu_01|msg_01|req_011C|u-)([A-Za-z0-9]{8,})\b")


def _new_like(old: str) -> str:
    """A random id shaped like `old` (uuid, prefixed Anthropic id, or hex agent id)."""
    if _UUID.fullmatch(old):
        return str(uuid.uuid4())
    m = _PREFIXED.fullmatch(old)
    prefix, body = (m.group(1), m.group(2)) if m else ("", old)
    return prefix + secrets.token_hex(len(body))[: len(body)]


class Renamer:
    """Maps every recorded id to a fresh one, consistently across events and transcripts."""

    def __init__(self, agent_ids: set[str]) -> None:
        self.agent_ids = agent_ids
        self.seen: dict[str, str] = {}

    def _fresh(self, old: str) -> str:
        if old not in self.seen:
            self.seen[old] = _new_like(old)
        return self.seen[old]

    def text(self, s: str) -> str:
        s = _UUID.sub(lambda m: self._fresh(m.group(0)), s)
        s = _PREFIXED.sub(lambda m: self._fresh(m.group(0)), s)
        for aid in self.agent_ids:
            s = s.replace(aid, self._fresh(aid))
        return s


def load(path: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(records, key=lambda r: float(r["at"]))


def prepare(
    records: list[dict[str, Any]], workdir: Path, now_ms: int
) -> list[tuple[int, dict[str, Any], list[tuple[Path, list[dict[str, Any]]]]]]:
    """(timestamp ms, hook input, transcript appends) per event, with fresh ids and local paths."""
    agent_ids = {r["input"]["agent_id"] for r in records if r["input"].get("agent_id")}
    rename = Renamer(agent_ids)
    span_s = float(records[-1]["at"])
    start_ms = now_ms - int((span_s + END_BEFORE_NOW_S) * 1000)
    out = []
    for record in records:
        hook_input: dict[str, Any] = json.loads(rename.text(json.dumps(record["input"])))
        ts_ms = start_ms + int(float(record["at"]) * 1000)
        sid = hook_input["session_id"]
        hook_input["transcript_path"] = str(workdir / f"{sid}.jsonl")
        target = Path(hook_input["transcript_path"])
        if hook_input.get("agent_transcript_path"):
            target = workdir / sid / "subagents" / f"agent-{hook_input['agent_id']}.jsonl"
            hook_input["agent_transcript_path"] = str(target)
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}Z"
        )
        lines = [
            {**json.loads(rename.text(json.dumps(line))), "timestamp": stamp}
            for line in record.get("transcript", [])
        ]
        out.append((ts_ms, hook_input, [(target, lines)] if lines else []))
    return out


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=3) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def describe(hook_input: dict[str, Any]) -> str:
    agent = hook_input.get("agent_type") or "main"
    parts = [Path(hook_input["cwd"]).name, agent, hook_input["hook_event_name"]]
    if hook_input.get("tool_name"):
        parts.append(hook_input["tool_name"])
    detail = hook_input.get("tool_input", {}).get("command") or hook_input.get("error")
    if detail:
        parts.append(f"({str(detail)[:60]})")
    return " ".join(parts)


def replay(
    url: str,
    python: str = sys.executable,
    recording: Path = RECORDING,
    hook: Path = HOOK,
    quiet: bool = False,
    now_ms: int | None = None,
) -> dict[str, int]:
    """Send the recording through the hook; returns the count of events per hook event name."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    records = load(recording)
    with tempfile.TemporaryDirectory(prefix="agentwatch-demo-") as tmp:
        workdir = Path(tmp)
        spool = workdir / "spool"
        env = {k: v for k, v in os.environ.items() if k != "AGENTWATCH_SOURCE_APP"}
        # The project name comes from each recorded cwd, as it would for a real user.
        env.update(AGENTWATCH_URL=url, AGENTWATCH_SPOOL_DIR=str(spool))
        counts: Counter[str] = Counter()
        for ts_ms, hook_input, appends in prepare(records, workdir / "transcripts", now_ms):
            for path, lines in appends:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as f:
                    f.writelines(json.dumps(line) + "\n" for line in lines)
            run_env = {**env, "AGENTWATCH_REPLAY_TS_MS": str(ts_ms)}
            subprocess.run(
                [python, "-S", str(hook)],
                input=json.dumps(hook_input).encode(),
                env=run_env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                timeout=HOOK_TIMEOUT_S,
                check=False,
            )
            counts[hook_input["hook_event_name"]] += 1
            if not quiet:
                ago = (now_ms - ts_ms) / 1000
                print(f"  -{int(ago // 60):2d}m{int(ago % 60):02d}s  {describe(hook_input)}")
        subprocess.run(
            [python, "-S", str(hook), "--flush"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            timeout=HOOK_TIMEOUT_S * 4,
            check=False,
        )
        # The hook spools one file per pending envelope under events/ (hooks/awhook/spool.py).
        left = list((spool / "events").glob("*.json"))
        counts["__undelivered_spool_files"] = len(left)
        if left and (spool / "hook.log").exists():
            print((spool / "hook.log").read_text()[-2000:], file=sys.stderr)
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("AGENTWATCH_URL", DEFAULT_URL))
    parser.add_argument("--python", default=sys.executable, help="interpreter for the hook script")
    parser.add_argument("--recording", type=Path, default=RECORDING)
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    if not HOOK.exists():
        print(f"demo: {HOOK.relative_to(REPO)} is missing", file=sys.stderr)
        return 1
    if not reachable(args.url):
        print(
            f"demo: no collector answers at {args.url} (start one with `make dev` or `make up`,"
            " or set AGENTWATCH_URL)",
            file=sys.stderr,
        )
        return 1
    print(f"demo: replaying {args.recording.name} through {HOOK.relative_to(REPO)} into {args.url}")
    counts = replay(args.url, args.python, args.recording, quiet=args.quiet)
    undelivered = counts.pop("__undelivered_spool_files")
    summary = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
    print(f"demo: sent {sum(counts.values())} events ({summary})")
    if undelivered:
        print(
            f"demo: {undelivered} spool file(s) not delivered; check the collector's logs",
            file=sys.stderr,
        )
        return 1
    print("demo: open Grafana's Agentwatch dashboards (last 1 hour)")
    return 0
