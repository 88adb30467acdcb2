"""The SQLite database that holds the registry and, by default, the readings.

One file (``data/jisaku.db``) in WAL mode: the gateway is the one writer, the
dashboard and the command line read at the same time without blocking it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    name_ja     TEXT NOT NULL DEFAULT '',  -- the name in Japanese; '' = show `name` everywhere
    public      INTEGER NOT NULL DEFAULT 1,
    interval_s  REAL,
    lat         REAL,
    lon         REAL,
    secret_hash TEXT,            -- NULL once revoked: the device may not connect
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS service_accounts (
    username    TEXT PRIMARY KEY,    -- always starts with "_", which no device id can
    secret_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS readings (
    device_id TEXT NOT NULL,
    ts        REAL NOT NULL,
    seq       INTEGER NOT NULL,
    v         TEXT NOT NULL,         -- the reading's values as a JSON object
    received  REAL NOT NULL,
    PRIMARY KEY (device_id, ts, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    device_id TEXT NOT NULL,
    ts        REAL NOT NULL,
    seq       INTEGER NOT NULL,
    event     TEXT NOT NULL,
    v         TEXT NOT NULL,
    received  REAL NOT NULL,
    PRIMARY KEY (device_id, ts, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (
    device_id TEXT PRIMARY KEY,
    ts        REAL NOT NULL,         -- time of the newest reading
    v         TEXT NOT NULL,         -- newest value of every metric the device has sent
    updated   REAL NOT NULL          -- when this row last changed, for the live stream
);
CREATE INDEX IF NOT EXISTS latest_updated ON latest (updated);
CREATE TABLE IF NOT EXISTS device_status (
    device_id TEXT PRIMARY KEY,
    state     TEXT NOT NULL,
    since     REAL NOT NULL,
    info      TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS status_history (
    device_id TEXT NOT NULL,
    ts        REAL NOT NULL,
    state     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS status_history_device ON status_history (device_id, ts);
CREATE TABLE IF NOT EXISTS device_config (
    device_id TEXT PRIMARY KEY,
    rev       INTEGER NOT NULL,      -- the newest revision pushed to the device
    settings  TEXT NOT NULL,         -- all of its settings, as a JSON object
    applied   TEXT NOT NULL DEFAULT '{}',  -- the settings of the newest revision it applied
    pushed    REAL NOT NULL,
    acked_rev INTEGER,               -- the newest revision the device answered
    ok        INTEGER,               -- whether it applied it
    reason    TEXT,                  -- why not, in the device's words
    acked     REAL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id        INTEGER PRIMARY KEY,
    received  REAL NOT NULL,
    topic     TEXT NOT NULL,
    payload   BLOB NOT NULL,         -- the first bytes only
    reason    TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_reason ON quarantine (reason);
"""


def connect(path: Path) -> sqlite3.Connection:
    """Open (and if need be create) the database at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    # FULL: a batch the gateway has acknowledged to the broker survives a power cut too.
    # It costs one fsync per batch, and a batch holds all that arrived meanwhile.
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.executescript(SCHEMA)
    add_missing_columns(connection, ADDED_COLUMNS)
    return connection


# Columns added after the first release. CREATE TABLE IF NOT EXISTS leaves an existing
# table as it was, so a database made by an older jisaku gets them here, at connect time:
# nobody has to run a migration by hand after an upgrade. Only ever add to this list.
ADDED_COLUMNS = [
    ("devices", "name_ja", "TEXT NOT NULL DEFAULT ''"),
]


def add_missing_columns(connection: sqlite3.Connection, columns: list[tuple[str, str, str]]) -> None:
    """Add each (table, column, definition) the table lacks; see ADDED_COLUMNS."""
    for table, column, definition in columns:
        have = {row["name"] for row in connection.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            try:
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            except sqlite3.OperationalError as err:
                # Another process (gateway, dashboard) opening the same file added it just now.
                if "duplicate column" not in str(err):
                    raise


BUSY_TIMEOUT_S = 30.0


def begin_write(connection: sqlite3.Connection, timeout: float = BUSY_TIMEOUT_S) -> None:
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


class Database:
    """One connection per thread to the same file (sqlite3 objects are not shared)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        connect(self.path).close()  # create the schema once, up front

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
