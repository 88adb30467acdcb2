"""The database's layout: migrations applied once, to new files, old files and by two processes at once."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from jisaku.gateway.db import Database, DatabaseTooNew, connect, migrate, schema_version, write
from jisaku.gateway.migrations import BASELINE, MIGRATIONS, statements
from jisaku.gateway.registry import DeviceRecord, Registry

NEWEST = MIGRATIONS[-1].version


def tables(path) -> set[str]:
    connection = sqlite3.connect(path)
    try:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        connection.close()


def test_the_migrations_are_numbered_one_by_one_from_one():
    assert [step.version for step in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_a_new_file_gets_every_table_and_the_newest_version(tmp_path):
    path = tmp_path / "jisaku.db"
    connection = connect(path)
    assert schema_version(connection) == NEWEST
    connection.close()
    expected = {"devices", "readings", "latest", "users", "audit_log", "notify_outbox", "readings_hourly",
                "alert_rules", "alerts", "operator_sessions", "registry_version"}
    assert expected <= tables(path)


def test_every_baseline_statement_is_found_one_by_one():
    found = statements(BASELINE)
    assert len(found) == BASELINE.count("CREATE") + BASELINE.count("INSERT")
    assert all(sqlite3.complete_statement(statement) for statement in found)
    with pytest.raises(ValueError, match="missing ';'"):
        statements("CREATE TABLE t (x INTEGER)")


def test_a_file_made_before_migrations_keeps_its_rows_and_gets_the_new_columns(tmp_path):
    path = tmp_path / "jisaku.db"
    old = sqlite3.connect(path)  # user_version 0, as every jisaku before migrations left it
    old.executescript("""
        CREATE TABLE devices (id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
            public INTEGER NOT NULL DEFAULT 1, interval_s REAL, lat REAL, lon REAL, secret_hash TEXT,
            created REAL NOT NULL);
        INSERT INTO devices (id, kind, name, created) VALUES ('snow-1', 'snow_gauge', 'City hall', 0);
        CREATE TABLE registry_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
        INSERT INTO registry_version VALUES (1, 41);
    """)
    old.close()
    db = Database(path)
    assert schema_version(db.connection) == NEWEST
    registry = Registry(db)
    assert registry.get("snow-1").name == "City hall" and registry.get("snow-1").name_ja == ""
    assert registry.version() == 41  # kept, not reset: running processes compare against it


def test_a_file_from_a_newer_jisaku_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "jisaku.db"
    connect(path).close()
    newer = sqlite3.connect(path)
    newer.execute(f"PRAGMA user_version = {NEWEST + 1}")
    newer.close()
    with pytest.raises(DatabaseTooNew, match="newer jisaku.*upgrade jisaku"):
        connect(path)


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "jisaku.db"
    connect(path).close()
    from jisaku.gateway import migrations

    broken = migrations.Migration(NEWEST + 1, "a step that fails half-way",
                                  "CREATE TABLE half (x INTEGER);\nINSERT INTO no_such_table VALUES (1);")
    connection = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        migrate(connection, path, [*MIGRATIONS, broken])
    connection.close()
    assert "half" not in tables(path)
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == NEWEST
    check.close()


def _open_and_add(path: str, device_id: str, start: multiprocessing.Event) -> None:
    start.wait()
    registry = Registry(Database(path))
    registry.add_device(DeviceRecord(device_id, "snow_gauge"))


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path):
    path = str(tmp_path / "jisaku.db")
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_open_and_add, args=(path, f"snow-{n}", start)) for n in range(4)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    db = Database(path)
    assert schema_version(db.connection) == NEWEST
    assert sorted(d.id for d in Registry(db).devices()) == ["snow-0", "snow-1", "snow-2", "snow-3"]


def test_write_commits_at_the_end_undoes_on_an_error_and_joins_an_outer_one(tmp_path):
    db = Database(tmp_path / "jisaku.db")
    connection = db.connection
    with pytest.raises(KeyError):
        with write(connection):
            connection.execute("INSERT INTO devices (id, kind, created) VALUES ('a', 'bus', 0)")
            raise KeyError("something went wrong")
    assert connection.execute("SELECT count(*) FROM devices").fetchone()[0] == 0
    with pytest.raises(KeyError):
        with write(connection):
            with write(connection):  # joins: the outer error undoes the inner change too
                connection.execute("INSERT INTO devices (id, kind, created) VALUES ('a', 'bus', 0)")
            raise KeyError("something went wrong")
    assert connection.execute("SELECT count(*) FROM devices").fetchone()[0] == 0
    with write(connection):
        connection.execute("INSERT INTO devices (id, kind, created) VALUES ('a', 'bus', 0)")
    assert not connection.in_transaction
    assert connection.execute("SELECT count(*) FROM devices").fetchone()[0] == 1
