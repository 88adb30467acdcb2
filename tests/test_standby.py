"""jisaku standby refresh alone (no broker): the standby takes the first box's devices, accounts
and settings from its backup and keeps its own readings; a wrong, foreign, stale file, or a
refresh after the takeover, is refused and changes nothing. (The takeover with a real
RabbitMQ cluster and a box that dies: test_standby_cluster.py.)"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from jisaku.contract import protocol
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.backup import make_backup, restore_backup
from jisaku.gateway.db import Database, connect
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.standby import FROM_FIRST_BOX, OWN, STATE_FILE, read_state, take_over, took_over
from jisaku.gateway.store import Batch, SQLiteStore

PASSWORD = "a long standby passphrase"


def jisaku(*args: str, data: Path) -> subprocess.CompletedProcess:
    """The real command, as the refresh timer runs it on the standby box."""
    env = {**os.environ, "JISAKU_DATA": str(data), "JISAKU_CONFIG": str(data.parent / "jisaku.toml")}
    return subprocess.run([sys.executable, "-m", "jisaku.cli", *args], cwd=data.parent, env=env,
                          capture_output=True, text=True, timeout=120)


def store_readings(db: Database, device_id: str, seqs: range, received: float | None = None) -> None:
    batch = Batch()
    for seq in seqs:
        payload = f'{{"ts": {1764720000 + seq}, "seq": {seq}, "v": {{"n": {seq}}}}}'.encode()
        batch.readings += [(device_id, r) for r in protocol.decode_readings(payload, received or time.time())]
    SQLiteStore(db).write(batch)


def seqs(db_path: Path, device_id: str) -> list[int]:
    connection = sqlite3.connect(db_path)
    try:
        return [row[0] for row in connection.execute("SELECT seq FROM readings WHERE device_id=? ORDER BY seq",
                                                     (device_id,))]
    finally:
        connection.close()


def first_box(directory: Path) -> tuple[Database, Registry, dict[str, str]]:
    db = Database(directory / "data" / "jisaku.db")
    registry = Registry(db)
    secrets = {"meter-1": registry.add_device(DeviceRecord("meter-1", "meter"))}
    registry.service_secret("_gateway", directory / "data" / "secrets")
    Accounts(db).add("tanaka", PASSWORD, role="admin")
    return db, registry, secrets


def test_every_table_is_either_the_first_boxs_or_each_boxs_own(tmp_path):
    connection = connect(tmp_path / "jisaku.db")
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    connection.close()
    assert not set(FROM_FIRST_BOX) & set(OWN)
    assert tables == set(FROM_FIRST_BOX) | set(OWN), "a new table: say in gateway/standby.py whose it is"


def test_a_refresh_takes_the_first_boxs_registry_and_keeps_the_standbys_own_readings(tmp_path):
    a_db, a_registry, secrets = first_box(tmp_path / "a")
    store_readings(a_db, "meter-1", range(0, 10))
    standby = tmp_path / "b" / "data"
    # The standby is set up once from a backup of the first box …
    restore_backup(make_backup(a_db.path, a_db.path.parent, None, tmp_path / "first.tar.gz").path, standby)
    b_db = standby / "jisaku.db"
    # … then stores what its own queue brings (here: readings 10-19), while the first box
    # stores 10-14 (its gateway was behind) and one the standby missed (20, before its queue
    # existed, say); and operators change things on the first box.
    store_readings(Database(b_db), "meter-1", range(10, 20))
    store_readings(a_db, "meter-1", [*range(10, 15), 20])
    secrets["bus-1"] = a_registry.add_device(DeviceRecord("bus-1", "bus", name="Town bus"))
    a_registry.revoke("meter-1")
    Accounts(a_db).add("sato", PASSWORD)
    backup = make_backup(a_db.path, a_db.path.parent, None, tmp_path / "backups")

    done = jisaku("standby", "refresh", str(backup.path), data=standby)
    assert done.returncode == 0, done.stderr
    assert "2 devices" in done.stdout and "1 readings" in done.stdout, done.stdout
    b_registry = Registry(Database(b_db))
    assert b_registry.check_credentials("bus-1", secrets["bus-1"]), "a device added on the first box logs in here"
    assert b_registry.is_revoked("meter-1") and not b_registry.check_credentials("meter-1", secrets["meter-1"])
    assert Accounts(Database(b_db)).get("sato") is not None
    assert seqs(b_db, "meter-1") == list(range(21)), "its own readings kept, the one it lacked added, none twice"
    assert read_state(standby)["backup"] == backup.path.name

    # The same file again (the first box is down, its timer sent nothing new): nothing to do.
    again = jisaku("standby", "refresh", str(backup.path), data=standby)
    assert again.returncode != 0 and "not newer" in again.stderr

    # Another town's backup: refused, nothing changed.
    other_db, _, _ = first_box(tmp_path / "other")
    other = make_backup(other_db.path, other_db.path.parent, None, tmp_path / "other.tar.gz")
    foreign = jisaku("standby", "refresh", str(other.path), data=standby)
    assert foreign.returncode != 0 and "another jisaku" in foreign.stderr, foreign.stderr
    assert Registry(Database(b_db)).get("bus-1") is not None

    # Not a backup at all.
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(1000))
    wrong = jisaku("standby", "refresh", str(junk), data=standby)
    assert wrong.returncode != 0 and "cannot be read as a backup" in wrong.stderr

    # Once this box took over, it takes nothing more from the first box.
    took = jisaku("standby", "takeover", data=standby)
    assert took.returncode == 0 and "acts now" in took.stdout
    newer = make_backup(a_db.path, a_db.path.parent, None, tmp_path / "newer.tar.gz")
    refused = jisaku("standby", "refresh", str(newer.path), data=standby)
    assert refused.returncode != 0 and "took over" in refused.stderr


def test_a_standby_never_set_up_is_told_how(tmp_path):
    a_db, _, _ = first_box(tmp_path / "a")
    backup = make_backup(a_db.path, a_db.path.parent, None, tmp_path / "first.tar.gz")
    (tmp_path / "b" / "data").mkdir(parents=True)
    done = jisaku("standby", "refresh", str(backup.path), data=tmp_path / "b" / "data")
    assert done.returncode != 0 and "jisaku restore" in done.stderr, done.stderr


def test_the_takeover_is_the_boxs_own_record_not_part_of_its_backups(tmp_path):
    data = tmp_path / "data"
    Accounts(Database(data / "jisaku.db")).add("tanaka", PASSWORD, role="admin")
    assert not took_over(data)
    take_over(data)
    assert took_over(data) and (data / STATE_FILE).exists()
    backup = make_backup(data / "jisaku.db", data, None, tmp_path / "b.tar.gz")
    assert f"data/{STATE_FILE}" not in tarfile.open(backup.path).getnames()


def test_a_standby_gateway_stores_a_device_added_on_the_first_box_since_the_last_refresh(tmp_path):
    from jisaku.gateway.service import Gateway

    db = Database(tmp_path / "jisaku.db")
    registry = Registry(db)
    payload = b'{"ts": 1764720000, "seq": 1, "v": {"n": 1}}'
    for acting, stored in ((False, 1), (True, 0)):
        gateway = Gateway(SQLiteStore(db), registry, "mqtt://127.0.0.1:1", "_gateway", "x", acting=acting)
        batch = Batch()
        gateway.sort_into(batch, "jisaku/new-1/data", payload, time.time())
        # A standby: the broker let it in, so the first box knows it. Acting: not registered here.
        assert (len(batch.readings), len(batch.quarantined)) == (stored, 1 - stored)
