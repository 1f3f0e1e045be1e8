"""`python -m collector` / `agentwatch-collector`: serve the collector with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from collector.app import create_app
from collector.logs import configure
from collector.settings import Settings, SettingsError


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"agentwatch-collector: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level)
    # One process only: the SQLite writer thread is the single writer of its database file.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
