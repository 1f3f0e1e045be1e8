"""make backup: an online, verified copy of the store while it is being written."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from collector.backup import backup
from collector.events import from_envelope
from collector.settings import Settings
from collector.store import SQLiteStore
from tests.conftest import envelope
from tests.support.procs import REPO


def test_online_backup_while_writing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "live.db")
    store.open()
    now = int(time.time() * 1000)
    store.write_sync([from_envelope(envelope(), now, Settings()) for _ in range(500)])
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.is_set():
            store.write_sync([from_envelope(envelope(), now, Settings()) for _ in range(50)])

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        copy = backup(tmp_path / "live.db", tmp_path / "backups")
    finally:
        stop.set()
        writer.join()
        store.close()
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] >= 500
    assert not list((tmp_path / "backups").glob("*.partial"))


def test_backup_command_reports_a_missing_store(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTWATCH_DB": str(tmp_path / "nope.db")}
    r = subprocess.run(
        [sys.executable, "-m", "collector.backup", "--dir", str(tmp_path / "b")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "no store at" in r.stderr
