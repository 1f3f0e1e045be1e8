"""`python -m collector.backup [--dir DIR]`: an online copy of the store with SQLite's backup API.

Safe while the collector runs (the backup API copies a consistent snapshot page by page);
the copy is checked with PRAGMA integrity_check before it is reported as done.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

from collector.settings import Settings, SettingsError


def backup(db: Path, out_dir: Path) -> Path:
    if not db.exists():
        raise FileNotFoundError(f"no store at {db} (AGENTWATCH_DB)")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"agentwatch-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.db"
    partial = target.with_suffix(".db.partial")
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    dst = sqlite3.connect(partial)
    try:
        src.backup(dst, pages=1024)  # in steps, so the collector's writer is never held long
        verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise RuntimeError(f"backup failed its integrity check: {verdict}")
    finally:
        dst.close()
        src.close()
    partial.rename(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=Path("backups"), help="where to write the copy")
    args = parser.parse_args()
    try:
        settings = Settings.from_env()
        if settings.postgres_url:
            raise RuntimeError("the store is PostgreSQL: back it up with pg_dump (see the README)")
        path = backup(settings.sqlite_path, args.dir)
    except (SettingsError, OSError, sqlite3.Error, RuntimeError) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backup written to {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
