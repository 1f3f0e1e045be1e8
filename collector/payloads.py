"""How event ids and payloads are packed in the events table, and the SQL functions that read them.

A payload is a few hundred bytes of JSON, too small for zlib to find much to repeat inside it. So
each one is deflated against a preset dictionary: the vocabulary of Claude Code's hook payloads
(keys, hook and tool names, enum values, from the hooks reference, not from any workload) followed
by what the payload repeats from the row's own columns: the session id (in session_id and in
transcript_path), the tool_use_id and the source app (usually the last part of cwd). That takes a typical payload to about a quarter of its size for ~8 µs. The first byte
names the dictionary, so a future vocabulary can be added without rewriting stored rows; text
(not bytes) is a payload stored before packing existed (schema version 1), read as it is.

Canonical UUID event ids (what the hook makes) are stored as their 16 bytes, anything else as
text. Readers never see either form: the store's connections have aw_event_id() and
aw_payload() (see EVENT_SELECT) and get back exactly what was ingested.
"""

from __future__ import annotations

import re
import sqlite3
import zlib

_VOCABULARY_1 = (
    b'{"session_id":"","transcript_path":"/home/.claude/projects/.jsonl","cwd":"/home/",'
    b'"permission_mode":"default","acceptEdits","bypassPermissions","plan","hook_event_name":"'
    b'SessionStart","source":"startup","resume","clear","compact","model":"claude-sonnet-4-5",'
    b'"claude-opus-4-1","claude-haiku-4-5","UserPromptSubmit","prompt":"","PreToolUse",'
    b'"tool_name":"Bash","tool_input":{"command":"","description":"","timeout":'
    b'"file_path":"","content":"","old_string":"","new_string":"","replace_all":false,'
    b'"pattern":"","path":"","glob":"","output_mode":"files_with_matches","-n":true,"-i":true,'
    b'"url":"","query":"","subagent_type":"general-purpose","Explore","todos":[{"content":"",'
    b'"status":"pending","in_progress","completed","activeForm":""}],"PostToolUse",'
    b'"tool_response":{"stdout":"","stderr":"","interrupted":false,"isImage":false},'
    b'"type":"text","file":{"filePath":"","content":"","numLines":,"startLine":1,"totalLines":},'
    b'"success":true,"structuredPatch":[{"oldStart":,"oldLines":,"newStart":,"newLines":,"lines":'
    b'"PostToolUseFailure","error":"","is_interrupt":false,"Notification","message":"Claude needs '
    b'your permission to use ","notification_type":"permission_prompt","idle_prompt","title":"",'
    b'"Stop","StopFailure","stop_hook_active":false,"last_assistant_message":"","SubagentStart",'
    b'"SubagentStop","agent_id":"","agent_type":"","agent_transcript_path":"","PreCompact",'
    b'"trigger":"auto","manual","custom_instructions":"","SessionEnd","reason":"prompt_input_exit",'
    b'"logout","other","[REDACTED:","Read","Edit","MultiEdit","Write","Grep","Glob","Task","Agent",'
    b'"WebFetch","WebSearch","TodoWrite","NotebookEdit","mcp__","tool_use_id":"toolu_'
)
_VOCABULARIES = {1: _VOCABULARY_1}
_CURRENT = 1
_WBITS = (
    12  # a 4 KiB window holds the dictionary; payloads are small, and it is 5x faster to set up
)
_LEVEL = 6
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")

PAYLOAD_TEXT = "aw_payload(payload, session_id, tool_use_id, source_app)"
# A NULL agent_id is the session's main agent; a NULL agent_type with no parent is "main".
AGENT_TYPE = "coalesce(agent_type, CASE WHEN parent_agent_id IS NULL THEN 'main' END)"
# The events columns as the rest of the collector reads them (names unchanged).
EVENT_SELECT = (
    "seq, aw_event_id(event_id) AS event_id, ts, received_at, source_app, machine_id, session_id, "
    "coalesce(agent_id, session_id) AS agent_id, parent_agent_id, "
    f"{AGENT_TYPE} AS agent_type, hook_event, tool_name, tool_use_id, outcome, usage, "
    f"{PAYLOAD_TEXT} AS payload, source, cost_state"
)


def _dictionary(version: int, session_id: str, tool_use_id: str | None, source_app: str) -> bytes:
    tail = (
        f'/{source_app}","session_id":"{session_id}","tool_use_id":"{tool_use_id or ""}",'
        f'{session_id}.jsonl"'
    )
    return _VOCABULARIES[version] + tail.encode()


def pack(payload: str, session_id: str, tool_use_id: str | None, source_app: str) -> bytes:
    z = zlib.compressobj(
        _LEVEL, zlib.DEFLATED, -_WBITS, 4, zlib.Z_DEFAULT_STRATEGY,
        _dictionary(_CURRENT, session_id, tool_use_id, source_app),
    )  # fmt: skip
    return bytes((_CURRENT,)) + z.compress(payload.encode()) + z.flush()


def unpack(stored: bytes | str, session_id: str, tool_use_id: str | None, source_app: str) -> str:
    if isinstance(stored, str):
        return stored
    z = zlib.decompressobj(-_WBITS, _dictionary(stored[0], session_id, tool_use_id, source_app))
    return (z.decompress(stored[1:]) + z.flush()).decode()


def pack_event_id(event_id: str) -> bytes | str:
    return bytes.fromhex(event_id.replace("-", "")) if _UUID.match(event_id) else event_id


def unpack_event_id(stored: bytes | str) -> str:
    if isinstance(stored, str):
        return stored
    h = stored.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def register(conn: sqlite3.Connection) -> None:
    """Give a connection aw_event_id() and aw_payload() (as in PAYLOAD_TEXT)."""
    conn.create_function("aw_event_id", 1, unpack_event_id, deterministic=True)
    conn.create_function("aw_payload", 4, unpack, deterministic=True)
