"""`python -m collector.export STORE`: a store file's events as NDJSON, without a running collector.

For a backup or a stopped collector. Payloads and event ids are packed in the file
(collector/payloads.py), so sqlite3 alone does not show them as text; this prints each event as
GET /v1/export does, oldest first. The file is opened read-only.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from collector import payloads
from collector.query import events as query_events
from collector.query import params as query_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m collector.export", description=__doc__)
    parser.add_argument("db", type=Path, help="the store (AGENTWATCH_DB, or a backup of it)")
    parser.add_argument("--session", help="only this session_id")
    parser.add_argument("--source-app", help="only this source_app")
    parser.add_argument("--hook-event", help="only this hook event")
    parser.add_argument("--from", dest="from_", help="from this time (epoch ms or ISO 8601)")
    parser.add_argument("--to", help="before this time (epoch ms or ISO 8601)")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        print(f"{parser.prog}: no store at {args.db}", file=sys.stderr)
        return 2
    try:
        start, end = query_params.time_range(None, args.from_, args.to)
        flt = query_events.EventFilter(
            start=start,
            end=end,
            session_id=args.session,
            source_app=args.source_app,
            hook_event=args.hook_event,
        )
        conn = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
        payloads.register(conn)

        @contextmanager
        def reader() -> Iterator[sqlite3.Connection]:
            yield conn

        out = sys.stdout.buffer
        for row in query_events.iter_events(reader, flt):
            out.write(orjson.dumps(query_events.event_json(row)) + b"\n")
        out.flush()
    except (query_params.QueryError, sqlite3.DatabaseError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
