"""A throw-away PostgreSQL cluster for tests, from the server binaries Debian's `postgresql` installs.

`start_postgres()` runs initdb in a fresh temporary directory, starts the server on 127.0.0.1 on a
free port (and on a unix socket in that directory), and returns a `PostgresCluster` that hands out
one new database per test with `create_database(name) -> dsn`. `stop()` shuts it down and deletes
the directory. PostgreSQL refuses to run as root, so as root initdb and pg_ctl run as the
`postgres` user Debian's package creates; as any other user they run as that user directly.

Authentication: `trust` on the unix socket only (a 0700 directory, so only its owner and root reach
it); TCP on 127.0.0.1 takes a random password, which the DSNs carry. fsync is off: the data is
thrown away. Under CI=true a missing server fails the test instead of skipping it.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from tests.support.procs import IN_CI, free_port, wait_until

SUPERUSER = "postgres"  # the cluster's superuser, and the OS user the server runs as under root
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_HINT = "apt-get install postgresql, or `make system-deps` as root"
START_TIMEOUT = 60.0


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: the one pg_ctl on PATH resolves to, else Debian's
    newest /usr/lib/postgresql/<major>/bin (not on PATH there). Both come from one directory, so
    they are one version, and pg_ctl finds the matching `postgres` next to itself."""
    candidates = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def major(path: Path) -> int:
        version = path.parent.name
        return int(version) if version.isdigit() else -1

    candidates += sorted(map(Path, glob.glob(DEBIAN_BIN_GLOB)), key=major, reverse=True)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "pg_ctl")):
            return directory
    return None


def _missing(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def missing_reason() -> str | None:
    """Why start_postgres() cannot run here (no server binaries, or root without the `postgres`
    user to run them as), None when it can; for callers that are not tests (bench/)."""
    if find_bin_dir() is None:
        return (
            f"PostgreSQL server (initdb, pg_ctl) not found on PATH or in {DEBIAN_BIN_GLOB} "
            f"({INSTALL_HINT})"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return (
                f"running as root and there is no {SUPERUSER!r} user to run PostgreSQL as "
                f"(PostgreSQL refuses to run as root; {INSTALL_HINT} creates it)"
            )
    return None


def require_postgres() -> Path:
    """The server binaries' directory; skip locally, fail under CI=true when there is none (or
    when root has no `postgres` user to run them as)."""
    reason = missing_reason()
    bin_dir = find_bin_dir()
    if reason is not None or bin_dir is None:
        _missing(reason or "PostgreSQL server not found")
    return bin_dir


def _as_server_user(args: list[str]) -> list[str]:
    """The command line that runs args as the user the server runs as: `postgres` under root."""
    if os.geteuid() != 0:
        return args
    if shutil.which("runuser"):
        return ["runuser", "-u", SUPERUSER, "--", *args]
    return ["su", "-s", "/bin/sh", SUPERUSER, "-c", shlex.join(args)]


def _clean_env() -> dict[str, str]:
    """The environment without PG* variables (PGDATA, PGPORT, PGHOST...) that would redirect the
    tools, and with a C locale so initdb never depends on the machine's locales."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


@dataclass
class PostgresCluster:
    """A running throw-away cluster. `root` holds data/, the socket, server.log."""

    bin_dir: Path
    root: Path
    port: int
    password: str
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        """A `postgresql://` URL for dbname over TCP, as the superuser, with the password."""
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@{self.host}:{self.port}"
            f"/{quote(dbname, safe='')}"
        )

    def socket_dsn(self, dbname: str = "postgres") -> str:
        """A `postgresql://` URL for dbname over the unix socket (trust, no password)."""
        return (
            f"postgresql://{SUPERUSER}@/{quote(dbname, safe='')}"
            f"?host={quote(str(self.socket_dir), safe='')}&port={self.port}"
        )

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """Create an empty database (from template0, UTF8) and return its DSN."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    sql.Identifier(name)
                )
            )
        return self.dsn(name)

    def accepts_connections(self) -> bool:
        try:
            with self.connect() as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def pg_ctl(
        self, *args: str, timeout: float = START_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return _run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args], self.root, timeout
        )

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions, disconnects clients), then delete it all."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                done = self.pg_ctl("stop", "-m", "fast", "-w")
                if done.returncode != 0:
                    self.pg_ctl("stop", "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_server_user(args),
        cwd=cwd,  # the postgres user may not be able to read the caller's working directory
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _configure(data_dir: Path, socket_dir: Path, port: int) -> None:
    """Listen on 127.0.0.1 and the socket; trust on the socket only, a password over TCP."""
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# tests/support/postgres.py\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {port}\n"
            f"unix_socket_directories = '{socket_dir}'\n"
            "unix_socket_permissions = 0700\n"
            "max_connections = 200\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
        )
    (data_dir / "pg_hba.conf").write_text(
        "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
        "local   all       all                 trust\n"
        "host    all       all   127.0.0.1/32  scram-sha-256\n"
    )


def start_postgres(bin_dir: Path | None = None) -> PostgresCluster:
    """initdb a fresh cluster in a temporary directory and start it; returns once it accepts
    connections. Skips (fails under CI=true) when the server is not installed."""
    bin_dir = bin_dir or require_postgres()
    root = Path(tempfile.mkdtemp(prefix="agentwatch-pg-"))
    cluster = PostgresCluster(bin_dir, root, free_port(), secrets.token_urlsafe(18))
    try:
        pwfile = root / "pwfile"
        pwfile.write_text(cluster.password + "\n")
        if os.geteuid() == 0:  # initdb and the server run as postgres: hand it the directory
            user = pwd.getpwnam(SUPERUSER)
            for path in (root, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
        init = _run(
            [
                str(bin_dir / "initdb"),
                "-D", str(cluster.data_dir),
                "-U", SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            root,
            START_TIMEOUT,
        )  # fmt: skip
        pwfile.unlink()
        if init.returncode != 0:
            raise AssertionError(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        _configure(cluster.data_dir, cluster.socket_dir, cluster.port)
        # -w: pg_ctl itself waits until the server accepts connections (or gives up at -t).
        start = cluster.pg_ctl("start", "-w", "-t", str(int(START_TIMEOUT)), "-l", str(cluster.log))
        if start.returncode != 0:
            raise AssertionError(
                f"pg_ctl start failed ({start.returncode}):\n{start.stdout}{start.stderr}\n"
                + cluster.logs()
            )
        wait_until(cluster.accepts_connections, START_TIMEOUT, "PostgreSQL to accept connections")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = start_postgres()
    try:
        yield cluster
    finally:
        cluster.stop()


_SAFE_NAME = re.compile(r"[^a-z0-9_]+")


def database_name(hint: str) -> str:
    """A unique, valid database name derived from hint (a test's name), within 63 bytes."""
    return (_SAFE_NAME.sub("_", hint.lower()).strip("_")[:40] or "db") + "_" + secrets.token_hex(6)
