"""Planted secrets go through the real hook script into a live collector and leak nowhere.

Twenty-one kinds of secret, each in a prompt, a Bash command and a tool output, are handed to
`python3 -S hooks/agentwatch_hook.py`. None of them may appear in the hook's spool or log, the
SQLite file (database and WAL, raw bytes), the collector's stdout, /metrics, or (when the relay
exists) the OTLP export a real receiver got.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.db import PAYLOAD_TEXT, connect
from tests.support.procs import REPO, free_port, start_collector

HOOK = REPO / "hooks" / "agentwatch_hook.py"
TOKEN = "collector-token-" + "7" * 24
_B = "Q7wLm2Xv9Rt4Kp8Zs1Nd6Hf3Jc5Gb0Ya"  # filler: realistic lengths, no real credential

# kind -> (the secret, the context it appears in). Tokens with a recognisable format appear bare
# ("it failed with <key>"); format-less ones (passwords, base64 keys) in the context that names them.
SECRETS: dict[str, tuple[str, str]] = {
    "aws_access_key": ("AKIAQ3EGRSXW7PLMN4TZ", "aws configure set region eu-west-1 && echo {s}"),
    "aws_secret_key": (
        "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",
        "export AWS_SECRET_ACCESS_KEY={s}",
    ),
    "gcp_api_key": ("AIzaSyDx9Kq2Lm4Np6Rs8Tu0Vw1Xy3Za5Bc7DeF", "curl 'https://x.dev/v1?key={s}'"),
    "azure_connection_string": (
        base64.b64encode(bytes(range(64))).decode(),
        "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={s};EndpointSuffix=core.windows.net",
    ),
    "azure_storage_key": (
        "Zm9vYmFyYmF6cXV4" * 5 + "==",
        "AZURE_STORAGE_KEY={s} az storage blob list",
    ),
    "github_pat_classic": ("ghp_" + _B + "Ab12", "git clone https://{s}@github.com/acme/app"),
    "github_pat_fine_grained": (
        "github_pat_11ABCDEFG0" + _B[:12] + "_" + _B + _B[:26],
        "the token {s} expired",
    ),
    "gitlab_pat": ("glpat-" + _B[:20], "glab auth login --stdin <<< {s}"),
    "slack_bot_token": ("xoxb-1234567890-9876543210-" + _B[:24], "slack send as {s}"),
    "slack_webhook": (
        "https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/" + _B[:24],
        "curl -X POST {s} -d hi",
    ),
    "stripe_key": ("sk_live_" + _B[:26], "stripe charges list --api {s}"),
    "jwt": (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWF",
        "echo {s} | jq -R",
    ),
    "rsa_private_key": (
        "MIIEowIBAAKCAQEA" + _B + "\n" + _B + "xyzRSA",
        "-----BEGIN RSA PRIVATE KEY-----\n{s}\n-----END RSA PRIVATE KEY-----",
    ),
    "openssh_private_key": (
        "b3BlbnNzaC1rZXktdjEAAAAA" + _B + "\nQ29kZQ" + _B,
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{s}\n-----END OPENSSH PRIVATE KEY-----",
    ),
    "url_password": ("S3cr3t-Passw0rd-" + _B[:6], "psql postgres://admin:{s}@db.internal:5432/app"),
    "env_password": ("hunter2-" + _B[:10], "DB_PASSWORD={s} ./manage.py migrate"),
    "anthropic_key": ("sk-ant-api03-" + _B + _B[:20], "it failed with {s} again"),
    "openai_key": ("sk-proj-" + _B + _B[:14], "why does {s} not work"),
    "npm_token": ("npm_" + _B + "abcd", "the CI log printed {s} twice"),
    "huggingface_token": ("hf_" + _B + "Qz", "login with {s} then pull"),
    "bearer_header": (
        "tok." + _B + "-" + _B[:10],
        "curl -H 'Authorization: Bearer {s}' https://api.acme.dev",
    ),
}


def needles() -> dict[str, list[bytes]]:
    """What must not appear, per kind: each line of the secret and the tail of each line
    (a redaction that hides only the head of a secret still leaks it)."""
    out: dict[str, list[bytes]] = {}
    for kind, (secret, _) in SECRETS.items():
        parts = secret.split("\n")
        out[kind] = [p.encode() for p in parts] + [p[-12:].encode() for p in parts]
    return out


def leaks(blob: bytes) -> list[str]:
    return sorted({kind for kind, ns in needles().items() for n in ns if n in blob})


def hook_inputs(session: str) -> list[dict[str, object]]:
    """Three hook events per secret: the prompt, the Bash command and the tool output."""
    base = {"session_id": session, "transcript_path": "/nonexistent.jsonl", "cwd": "/home/dev/app"}
    events: list[dict[str, object]] = []
    for kind, (secret, context) in SECRETS.items():
        text = context.format(s=secret)
        tool_use_id = "toolu_" + uuid.uuid4().hex[:20]
        events += [
            {**base, "hook_event_name": "UserPromptSubmit", "prompt": f"please debug: {text}"},
            {
                **base,
                "hook_event_name": "PreToolUse",
                "tool_name": "Bash",
                "tool_use_id": tool_use_id,
                "tool_input": {"command": text, "description": kind},
            },
            {
                **base,
                "hook_event_name": "PostToolUse",
                "tool_name": "Bash",
                "tool_use_id": tool_use_id,
                "tool_input": {"command": "cat .env"},
                "tool_response": {"stdout": f"line 1\n{text}\nline 3", "stderr": text},
            },
        ]
    return events


def run_hook(stdin: bytes, env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-S", str(HOOK), *args],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == b"", (done.returncode, done.stdout)


def read_all(paths: list[Path]) -> bytes:
    return b"".join(p.read_bytes() for p in paths if p.is_file())


def test_the_secret_catalogue_has_twenty_kinds() -> None:
    assert len(SECRETS) >= 20
    assert leaks(b"nothing secret here") == []
    assert leaks(SECRETS["jwt"][0].encode()) == ["jwt"]  # the detector itself works


@pytest.mark.e2e
def test_no_planted_secret_leaks_anywhere(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTWATCH_", "OTEL_"))}
    hook_env = {
        **base_env,
        "AGENTWATCH_SPOOL_DIR": str(spool),
        "AGENTWATCH_TOKEN": TOKEN,
        "AGENTWATCH_SOURCE_APP": "redaction-test",
        # Nobody listens here: events stay in the spool so we can read what the hook wrote.
        "AGENTWATCH_URL": f"http://127.0.0.1:{free_port()}",
    }
    inputs = hook_inputs("sess-" + uuid.uuid4().hex[:12])
    for event in inputs:
        run_hook(orjson.dumps(event), hook_env)
    spooled = sorted((spool / "events").glob("*.json"))
    assert len(spooled) == len(inputs)
    spool_bytes = read_all(spooled)
    assert b"[REDACTED" in spool_bytes
    assert leaks(spool_bytes) == [], "secrets in the hook spool"

    proc = start_collector(tmp_path, {"AGENTWATCH_TOKEN": TOKEN})
    try:
        run_hook(b"", {**hook_env, "AGENTWATCH_URL": proc.url}, "--flush")
        assert list((spool / "events").glob("*.json")) == [], "the flush left events behind"
        db = Path(proc.env["AGENTWATCH_DB"])
        with connect(db) as conn:
            stored = conn.execute(
                f"SELECT {PAYLOAD_TEXT} FROM events WHERE source_app = 'redaction-test'"
            ).fetchall()
        assert len(stored) == len(inputs)
        assert all("REDACTED" in p for (p,) in stored if '"PostToolUse"' in p)
        metrics = httpx.get(
            proc.url + "/metrics", headers={"authorization": f"Bearer {TOKEN}"}, timeout=5
        )
        assert metrics.status_code == 200
        live_db = read_all([db, Path(f"{db}-wal")])
    finally:
        proc.stop()
    places = {
        "hook spool": spool_bytes,
        "hook log": read_all([spool / "hook.log", spool / "hook.log.1"]),
        "SQLite db + WAL (live)": live_db,  # the columns stored as they are
        "stored payloads, unpacked": "".join(p for (p,) in stored).encode(),
        "SQLite db + WAL (after shutdown)": read_all([db, Path(f"{db}-wal")]),
        "collector stdout": proc.log.read_bytes(),
        "/metrics": metrics.content,
    }
    found = {where: kinds for where, blob in places.items() if (kinds := leaks(blob))}
    assert found == {}, f"secrets leaked: {found}"
