"""Hostile input against a live collector (raw sockets) and the app factory: never a 5xx, a clear
JSON 4xx, /readyz stays 200, other clients are served meanwhile, nothing is half-stored.

tests/test_ingest.py covers the basic malformed-body cases in-process; this file adds what needs a
real socket (slow bodies, lying Content-Length, smuggling, disconnects) and the nastier payloads.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Harness, envelope
from tests.support.db import PAYLOAD_TEXT
from tests.support.procs import Proc, start_collector, wait_until

BODY_TIMEOUT = 1.0
MAX_BODY = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("hostile")
    proc = start_collector(
        tmp,
        {
            "AGENTWATCH_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
            "AGENTWATCH_MAX_BODY_BYTES": str(MAX_BODY),
        },
    )
    yield proc
    proc.stop()
    assert "Traceback" not in proc.logs(), "the collector logged an unhandled exception"


def count(proc: Proc) -> int:
    with sqlite3.connect(proc.env["AGENTWATCH_DB"]) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def assert_healthy(proc: Proc) -> None:
    assert httpx.get(proc.url + "/readyz", timeout=5).status_code == 200
    assert "Exception in ASGI application" not in proc.logs()


def connect(proc: Proc) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def head(path: str = "/v1/events", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    headers.setdefault("content_type", "application/json")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _parse(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in data:
        header, _, rest = data.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) < length:
            break
        out.append((status, rest[:length]))
        data = rest[length:]
    return out


def responses(
    s: socket.socket, deadline: float = 10.0, more: float = 0.5
) -> list[tuple[int, bytes]]:
    """The HTTP responses the server writes: waits up to `deadline` for the first, then briefly
    for more (keep-alive connections stay open after an answer)."""
    s.settimeout(deadline)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
            if _parse(data):
                s.settimeout(more)
    except (TimeoutError, ConnectionResetError):
        pass
    return _parse(data)


def post(proc: Proc, body: bytes, ctype: str = "application/json") -> httpx.Response:
    return httpx.post(
        proc.url + "/v1/events", content=body, headers={"content-type": ctype}, timeout=60
    )


@pytest.mark.e2e
def test_slow_loris_bodies_get_408_while_others_are_served(live: Proc) -> None:
    before = count(live)
    body = orjson.dumps(envelope())
    slow = [connect(live) for _ in range(20)]
    for s in slow:
        s.sendall(head(content_length=str(len(body))))
    silent = connect(live)  # headers, then nothing at all
    silent.sendall(head(content_length="100"))
    stop = threading.Event()

    def trickle() -> None:
        for i in range(len(body)):
            if stop.is_set():
                return
            for s in slow:
                with contextlib.suppress(OSError):  # answered 408 and closed: expected
                    s.sendall(body[i : i + 1])
            time.sleep(0.2)

    dripper = threading.Thread(target=trickle, daemon=True)
    dripper.start()
    try:
        # Meanwhile the collector serves everyone else and stays ready.
        for _ in range(30):
            assert post(live, orjson.dumps(envelope())).status_code == 200
            assert httpx.get(live.url + "/readyz", timeout=5).status_code == 200
        answers = [responses(s, more=0.01) for s in [*slow, silent]]
    finally:
        stop.set()
        dripper.join()
        for s in [*slow, silent]:
            s.close()
    for got in answers:
        assert got and got[0][0] == 408, got
        assert "not received within" in json.loads(got[0][1])["error"]
    assert count(live) == before + 30
    assert_healthy(live)


@pytest.mark.e2e
def test_a_client_that_disconnects_mid_body_stores_nothing(live: Proc) -> None:
    before = count(live)
    batch = orjson.dumps([envelope() for _ in range(50)])
    s = connect(live)
    s.sendall(head(content_length=str(len(batch))) + batch[: len(batch) // 2])
    s.shutdown(socket.SHUT_WR)
    responses(s, 3)  # whatever it answers (or not) to a gone client
    s.close()
    wait_until(lambda: httpx.get(live.url + "/readyz").status_code == 200, 5, "readyz")
    assert count(live) == before
    assert_healthy(live)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "raw",
    [
        # Content-Length shorter than the body: the rest is parsed as a (bad) next request.
        head(content_length="5") + orjson.dumps(envelope()),
        # Not numbers.
        head(content_length="abc") + b"{}",
        head(content_length="-5") + b"{}",
        # Request smuggling: both framings at once.
        head(content_length="4", transfer_encoding="chunked") + b"0\r\n\r\n",
        # Two Content-Lengths that disagree.
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\ncontent-length: 40\r\n\r\n{}",
        # Malformed chunked framing.
        head(transfer_encoding="chunked") + b"zz\r\n{}\r\n0\r\n\r\n",
        # A request line no server should take.
        b"POST /v1/events\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["short", "nan", "negative", "smuggle", "two-lengths", "bad-chunk", "nul-line"],
)
def test_lying_or_broken_framing_is_a_4xx(live: Proc, raw: bytes) -> None:
    before = count(live)
    s = connect(live)
    s.sendall(raw)
    got = responses(s, 3)
    s.close()
    statuses = [status for status, _ in got]
    # A connection closed without an answer is an acceptable refusal of garbage; a 5xx is not.
    assert all(400 <= st < 500 for st in statuses), got
    assert count(live) == before
    assert_healthy(live)


@pytest.mark.e2e
def test_chunked_body_past_the_limit_is_413(live: Proc) -> None:
    s = connect(live)
    s.sendall(head(transfer_encoding="chunked"))
    chunk = b"[" + b" " * (256 * 1024 - 1)
    try:
        for _ in range(MAX_BODY // len(chunk) + 4):
            s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            chunk = b" " * len(chunk)
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server may close as soon as it has answered
    got = responses(s, 5)
    s.close()
    assert got and got[0][0] == 413 and "larger than" in json.loads(got[0][1])["error"]
    assert_healthy(live)


@pytest.mark.e2e
def test_truncated_batch_stores_nothing(live: Proc) -> None:
    before = count(live)
    batch = orjson.dumps([envelope() for _ in range(100)])
    r = post(live, batch[: len(batch) - 40])
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
    assert count(live) == before
    assert_healthy(live)


@pytest.mark.e2e
def test_ten_thousand_ndjson_events_on_a_live_socket(live: Proc) -> None:
    before = count(live)
    lines = b"\n".join(orjson.dumps(envelope()) for _ in range(10_000))
    r = post(live, lines, "application/x-ndjson")
    assert r.status_code == 200 and r.json() == {"accepted": 10_000, "duplicate": 0, "rejected": []}
    over = b"\n".join(orjson.dumps(envelope()) for _ in range(10_001))
    r = post(live, over, "application/x-ndjson")
    assert r.status_code == 413 and "at most 10000" in r.json()["error"]
    assert count(live) == before + 10_000
    assert_healthy(live)


@pytest.mark.e2e
def test_pathological_redaction_input_does_not_stall_the_collector(live: Proc) -> None:
    """Inputs that made the secret patterns backtrack for minutes (quadratic): a run of private
    key headers without an END, a run of secret-looking names. The request must come back (the
    client gives up after 60 s; it takes well under a second now) and the secrets-looking text
    is still redacted."""
    before = count(live)
    for text in (
        "-----BEGIN PRIVATE KEY-----" * 30_000,
        "password" * 100_000,
        "secretsecret-" * 60_000,
        "api_key." * 100_000,
    ):
        env = envelope(payload={"tool_response": {"stdout": text}})
        r = post(live, orjson.dumps(env))
        assert r.status_code == 200, r.text
        assert httpx.get(live.url + "/readyz", timeout=5).status_code == 200
    assert count(live) == before + 4
    assert_healthy(live)


@pytest.mark.e2e
def test_content_types(live: Proc) -> None:
    body = orjson.dumps(envelope())
    for ctype in ("text/plain", "multipart/form-data; boundary=x", "", "application/json5"):
        r = post(live, body, ctype)
        assert r.status_code == 415 and "content type" in r.json()["error"]
    assert post(live, body, "Application/JSON; charset=utf-8").status_code == 200
    assert_healthy(live)


# -- in-process payload cases (the app factory) ----------------------------------------------


def rows(h: Harness) -> int:
    return int(h.rows("SELECT count(*) FROM events")[0][0])


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize(
    ("depth", "status"),
    [(200, 200), (300, 422), (5000, 400)],
)
def test_deeply_nested_payloads(harness: Harness, depth: int, status: int) -> None:
    body = b'{"deep": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    env = orjson.dumps(envelope())[:-1] + b',"payload":' + body + b"}"
    r = harness.client.post("/v1/events", content=env, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert rows(harness) == (1 if status == 200 else 0)
    if status != 200:
        assert r.json()["error"]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'"ts": 1e308', 422),
        (b'"ts": -1', 422),
        (b'"ts": 18446744073709551616', 422),  # past 64 bits
        (b'"ts": "1700000000000"', 422),
        (b'"ts": true', 422),
        (b'"spool_dropped": 1e3', 422),
        (b'"spool_dropped": 9223372036854775807', 200),
        (b'"usage": {"m": {"input": 9223372036854775807}}', 422),
        (b'"usage": {"m": {"input": 1.5}}', 422),
        (b'"payload": {"n": -9223372036854775808, "f": -1.7e308, "z": -0.0}', 200),
    ],
)
def test_numbers_out_of_range(harness: Harness, raw: bytes, status: int) -> None:
    env = orjson.dumps(envelope())[:-1] + b"," + raw + b"}"
    r = harness.client.post("/v1/events", content=env, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert rows(harness) == (1 if status == 200 else 0)


def test_duplicate_keys_take_the_last_value_and_store_once(harness: Harness) -> None:
    first, last = str(uuid.uuid4()), str(uuid.uuid4())
    env = orjson.dumps(envelope(event_id=first))[:-1] + f',"event_id":"{last}"}}'.encode()
    r = harness.client.post("/v1/events", content=env, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert harness.rows("SELECT aw_event_id(event_id) FROM events") == [(last,)]


def test_invalid_utf8_and_nul_in_ndjson_reject_only_their_line(harness: Harness) -> None:
    good = [orjson.dumps(envelope()) for _ in range(2)]
    bad_utf8 = orjson.dumps(envelope())[:-1] + b',"x":"\xff\xfe"}'
    nul = orjson.dumps(envelope())[:-1] + b',"x":"a\x00b"}'  # a raw NUL is not valid JSON
    lines = b"\n".join([good[0], bad_utf8, nul, good[1]])
    r = harness.client.post(
        "/v1/events", content=lines, headers={"content-type": "application/x-ndjson"}
    )
    assert r.status_code == 200
    answer = r.json()
    assert answer["accepted"] == 2 and [x["index"] for x in answer["rejected"]] == [1, 2]
    assert rows(harness) == 2


@pytest.mark.parametrize(
    "ts_offset_ms",
    [-(10**12) * 50, -86_400_000 * 365 * 7, 86_400_000 * 2, 10**15],
    ids=["1970ish", "7-years-ago", "2-days-ahead", "year-33000"],
)
def test_timestamps_far_away_are_422(harness: Harness, ts_offset_ms: int) -> None:
    ts = max(int(time.time() * 1000) + ts_offset_ms, 0)
    r = harness.post("/v1/events", envelope(ts=ts))
    assert r.status_code == 422 and "ts is out of range" in r.json()["error"]
    assert rows(harness) == 0
    near = harness.post("/v1/events", envelope(ts=int(time.time() * 1000) + 3_600_000))
    assert near.status_code == 200  # an hour of clock skew is fine


def test_unknown_and_odd_hook_events(harness: Harness) -> None:
    raw = {"session_id": "s-odd-1", "hook_event_name": "FutureEvent2030", "new_field": [1, {}]}
    assert harness.post("/v1/hooks", raw).status_code == 204
    odd = envelope(hook_event='Weird\nName "quoted" {x="y"}')
    assert harness.post("/v1/events", odd).status_code == 200
    assert harness.post("/v1/events", envelope(hook_event="E" * 257)).status_code == 422
    assert harness.post("/v1/hooks", {"hook_event_name": "Stop"}).status_code == 422
    assert harness.post("/v1/hooks", [1, 2]).status_code == 422
    assert rows(harness) == 2
    text = harness.client.get("/metrics").text  # label values are escaped, the exposition parses
    assert 'hook_event="Weird\\nName \\"quoted\\" {x=\\"y\\"}"' in text


def test_hook_event_label_cardinality_is_bounded(make_harness: Any) -> None:
    h = make_harness(label_cap=20)
    batch = [envelope(hook_event=f"Made-Up-{i}") for i in range(100)]
    assert h.post("/v1/events", batch).json()["accepted"] == 100
    text = h.client.get("/metrics").text
    values = {
        line.split('hook_event="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("agentwatch_events_total{")
    }
    assert len(values) <= 21


def test_huge_string_is_capped_and_stored(make_harness: Any) -> None:
    h = make_harness(max_field_chars=2000)
    env = envelope(payload={"prompt": "é" * 3_000_000, "tool_input": {"k": "\u0000" * 10_000}})
    r = h.client.post(
        "/v1/events", content=orjson.dumps(env), headers={"content-type": "application/json"}
    )
    assert r.status_code == 200, r.text
    (payload,) = h.rows(f"SELECT {PAYLOAD_TEXT} FROM events")[0]
    assert len(payload) < 70_000 and "truncated" in payload
