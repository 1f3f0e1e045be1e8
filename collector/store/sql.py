"""The one connection interface the store's derivations and the query API read through.

sqlite3.Connection fits it as it is. A PostgreSQL connection is wrapped (PgConnection): psycopg
takes `%s` placeholders where the shared SQL is written with `?`, and its cursors are reused the
same way. So each query is written once, in the SQL both engines understand.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, Protocol


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...

    @property
    def description(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...


class Connection(Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


@lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal `%` doubled). The shared SQL has no `?` or
    `%` inside string literals but LIKE's escape character, which is neither."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection that takes the shared SQL (collector.store.sql.Connection)."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        cur: Cursor = self.raw.execute(to_pyformat(sql), parameters)  # prepared when repeated
        return cur

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(to_pyformat(sql), parameters)


def dict_rows(cur: Cursor) -> list[dict[str, Any]]:
    """A cursor's rows as dicts by column name (either engine)."""
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
