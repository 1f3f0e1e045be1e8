"""A scripted stand-in for the Anthropic Messages API, for driving the real Claude Code in tests.

Claude Code talks to it through ANTHROPIC_BASE_URL. Each test scripts the conversations it
expects: a conversation is recognised by a marker in its first user message (the prompt given to
`claude -p`, or the `prompt` of an Agent tool call), and its N-th reply is the one scripted at
index N, where N is the number of assistant messages already in the request. That keeps the
stand-in stateless per request, so retries, resumed sessions and background subagents all land
on the right reply. Requests that match no conversation (titles, summaries, compaction, other
side calls) get a short text reply. Every reply's usage is recorded by model, so a test can
compare what Agentwatch stored with what the "API" really billed.

Replies stream as server-sent events (the SDK's usual path) or come back as one JSON message
when the request does not ask for a stream.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USAGE_FIELDS = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_input_tokens",
    "cache_creation": "cache_creation_input_tokens",
}
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):04d}{threading.get_ident() % 10_000:04d}aw" + "x" * 10


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any]
    id: str = field(default_factory=lambda: new_id("toolu"))


@dataclass
class Reply:
    """One assistant message: optional text, then tool calls; its usage as the API reports it."""

    text: str = ""
    tools: list[ToolUse] = field(default_factory=list)
    input: int = 100
    output: int = 20
    cache_read: int = 0
    cache_creation: int = 0
    delay: float = 0.0  # seconds to wait before answering (a slow model, for interrupts)

    def usage(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_creation": self.cache_creation,
        }


@dataclass
class Served:
    """A reply the stand-in sent: which conversation, which model, what usage, which tools."""

    conversation: str | None
    model: str
    usage: dict[str, int]
    tool_use_ids: list[str]


def side_reply() -> Reply:
    return Reply(text="Done.", input=30, output=5)


class Script:
    """Conversations by marker; the usage of everything served, by model and type."""

    def __init__(self, conversations: dict[str, list[Reply]] | None = None) -> None:
        self.conversations = dict(conversations or {})
        self.served: list[Served] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def choose(self, body: dict[str, Any]) -> tuple[str | None, Reply]:
        messages = body.get("messages") or []
        first = _text(messages[0]) if messages else ""
        for marker, replies in self.conversations.items():
            if marker in first:
                turn = sum(1 for m in messages if m.get("role") == "assistant")
                if turn < len(replies):
                    return marker, replies[turn]
                return marker, Reply(text="All done.", input=50, output=5)
        return None, side_reply()

    def record(self, body: dict[str, Any], served: Served) -> None:
        with self.lock:
            self.requests.append(body)
            self.served.append(served)

    def usage_by_model(self) -> dict[str, dict[str, int]]:
        """What the stand-in billed, summed by model and token type."""
        out: dict[str, dict[str, int]] = {}
        with self.lock:
            for s in self.served:
                bucket = out.setdefault(s.model, dict.fromkeys(USAGE_FIELDS, 0))
                for kind, n in s.usage.items():
                    bucket[kind] += n
        return out

    def tool_use_ids(self, conversation: str | None = None) -> list[str]:
        with self.lock:
            return [
                i
                for s in self.served
                if conversation is None or s.conversation == conversation
                for i in s.tool_use_ids
            ]


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def _message(msg_id: str, model: str, reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    for tool in reply.tools:
        content.append({"type": "tool_use", "id": tool.id, "name": tool.name, "input": tool.input})
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if reply.tools else "end_turn",
        "stop_sequence": None,
        "usage": {USAGE_FIELDS[k]: v for k, v in reply.usage().items()},
    }


def _sse(msg: dict[str, Any]) -> Iterator[bytes]:
    """The message as the streaming API sends it: start, blocks with deltas, delta, stop."""

    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    usage = msg["usage"]
    start = {**msg, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield event("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(msg["content"]):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            opening = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": opening},
        )
        yield event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )
        yield event("content_block_stop", {"type": "content_block_stop", "index": index})
    yield event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield event("message_stop", {"type": "message_stop"})


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("request-id", new_id("req"))
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "no"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.split("?", 1)[0]
        if path.endswith("/count_tokens"):
            self._json(200, {"input_tokens": 100})
            return
        if not path.endswith("/v1/messages"):
            self._json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": path}}
            )
            return
        script = self.server.script
        conversation, reply = script.choose(body)
        if reply.delay:
            self.server.stopping.wait(reply.delay)
        model = str(body.get("model") or "claude-test")
        msg = _message(new_id("msg"), model, reply)
        script.record(body, Served(conversation, model, reply.usage(), [t.id for t in reply.tools]))
        if not body.get("stream"):
            self._json(200, msg)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", new_id("req"))
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        for chunk in _sse(msg):
            self.wfile.write(chunk)
            self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.stopping = threading.Event()


class FakeAnthropic:
    """The stand-in on 127.0.0.1:<ephemeral>, serving `script` until stopped."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self._server = _Server(self.script)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
