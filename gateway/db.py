"""The SQLite database that holds the registry and, by default, the readings.

One file (``data/jisaku.db``) in WAL mode: the gateway is the one writer, the
dashboard and the command line read at the same time without blocking it.
``connect`` is the one way to open it: it brings the file's layout up to date
(migrations.py). ``write`` is the one way to change it.

Example::

    db = Database(Path("data/jisaku.db"))
    with write(db.connection) as connection:
        connection.execute("UPDATE devices SET public=0 WHERE id=?", ("snow-1",))
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .migrations import MIGRATIONS, Migration


class DatabaseTooNew(RuntimeError):
    """The file was last opened by a newer jisaku, which changed its layout."""


def connect(path: Path) -> sqlite3.Connection:
    """Open (and if need be create) the database at ``path``, its layout brought up to date."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    # FULL: a batch the gateway has acknowledged to the broker survives a power cut too.
    # It costs one fsync per batch, and a batch holds all that arrived meanwhile.
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    try:
        migrate(connection, path)
    except BaseException:
        connection.close()
        raise
    return connection


def schema_version(connection: sqlite3.Connection) -> int:
    """How many of migrations.MIGRATIONS this database has had."""
    return connection.execute("PRAGMA user_version").fetchone()[0]


def migrate(connection: sqlite3.Connection, path: Path | str = "the database",
            migrations: list[Migration] = MIGRATIONS) -> None:
    """Apply the migrations the database lacks, all in one write transaction.

    Gateway workers, the dashboard and the command line may open a new or old file at
    the same moment: the first to get the write lock does the work, and the others,
    reading the version again once they have the lock, find nothing left to do.
    """
    newest = migrations[-1].version
    if _check_version(connection, path, newest) == newest:
        return  # the usual case: up to date, no lock taken
    with write(connection):
        version = _check_version(connection, path, newest)
        for step in migrations:
            if step.version > version:
                step.apply(connection)
        # PRAGMA takes no ? parameter; `newest` is our own integer.
        connection.execute(f"PRAGMA user_version = {int(newest)}")


def _check_version(connection: sqlite3.Connection, path: Path | str, newest: int) -> int:
    version = schema_version(connection)
    if version > newest:
        raise DatabaseTooNew(
            f"{path} was last used by a newer jisaku (database layout {version}; this jisaku knows up to"
            f" {newest}): upgrade jisaku (pip install --upgrade jisaku, or git pull and make setup),"
            " or restore a backup made before the upgrade")
    return version


BUSY_TIMEOUT_S = 30.0


@contextlib.contextmanager
def write(connection: sqlite3.Connection, timeout: float = BUSY_TIMEOUT_S) -> Iterator[sqlite3.Connection]:
    """One write transaction: ``with write(connection): ...`` commits at the end, or undoes it all on an error.

    Every change to the database goes through here. Inside another ``write`` on the
    same connection it joins that one, so that e.g. a change and its audit entry are
    kept together, or neither is.
    """
    if connection.in_transaction:
        yield connection
        return
    _begin_write(connection, timeout)
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:  # SQLite itself may have undone it already (a full disk, say)
            connection.execute("ROLLBACK")
        raise


def _begin_write(connection: sqlite3.Connection, timeout: float) -> None:
    """Start a write transaction, waiting for another process's to end.

    SQLite's own wait sleeps in steps growing to 100 ms, so two gateways sharing
    the file would take turns slowly, and one could starve the other for a second
    or more. Asking again every half millisecond keeps the wait to the other's commit.
    """
    connection.execute("PRAGMA busy_timeout = 0")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.0005)
    finally:
        connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")


def time_range(since: float | None, until: float | None, column: str = "ts") -> tuple[str, list[float]]:
    """``" AND ts >= ? AND ts < ?"`` for whichever bounds are given, and their values."""
    sql, params = "", []
    if since is not None:
        sql += f" AND {column} >= ?"
        params.append(since)
    if until is not None:
        sql += f" AND {column} < ?"
        params.append(until)
    return sql, params


class Database:
    """One connection per thread to the same file (sqlite3 objects are not shared)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        connect(self.path).close()  # bring the layout up to date once, up front

    @property
    def connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = connect(self.path)
        return connection

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
