"""jisaku backup while the gateway writes, and jisaku restore onto a second data folder: the
restored system answers the same API questions, and a damaged backup changes nothing."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jisaku.dashboard.app import create_app
from jisaku.device.config import load_device_config
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.backup import BackupError, make_backup, restore_backup
from jisaku.gateway.db import Database
from jisaku.gateway.registry import Registry

from .town import KINDS, wait_until

PASSWORD = "a long restore passphrase"


def jisaku(*args: str, data: Path, cwd: Path) -> subprocess.CompletedProcess:
    """The real command, as an operator types it on the second box."""
    env = {**os.environ, "JISAKU_DATA": str(data), "JISAKU_CONFIG": str(cwd / "jisaku.toml")}
    return subprocess.run([sys.executable, "-m", "jisaku.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def newest_ts(db_path: Path, device_id: str) -> float:
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute("SELECT max(ts) FROM readings WHERE device_id=?", (device_id,)).fetchone()[0]
    finally:
        connection.close()


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_backup_made_while_the_gateway_writes_restores_on_a_second_box_and_answers_the_same(make_town, tmp_path):
    gauge = load_device_config(KINDS / "snow_gauge", {"device": {"interval_s": 0.2}, "snow": {"interval_s": 0.2}})
    town = make_town([gauge, load_device_config(KINDS / "printer_tray")])
    Accounts(town.registry.db).add("tanaka", PASSWORD, role="admin")
    (town.directory / "secrets").mkdir()
    (town.directory / "secrets" / "gateway.secret").write_text("s3cret\n")
    (town.directory / "gtfs.toml").write_text("[agency]\nname = 'Town bus'\n")
    (tmp_path / "jisaku.toml").write_text('tiles = "osm"\n')
    town.run_devices()
    wait_until(lambda: town.store.reading_count("snow-1") >= 20, 30, "the gauge reports several times")

    backups = [make_backup(town.db_path, town.directory, tmp_path / "jisaku.toml", tmp_path / "backups")
               for _ in range(3)]  # each while the gateway goes on writing
    info = backups[-1]
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o600, "it holds secrets: the owner's only"
    assert info.devices == 2 and info.readings > 20
    names = tarfile.open(info.path).getnames()
    assert "data/secrets/gateway.secret" in names and "jisaku.toml" in names
    assert not any(name.startswith("data/devices") or name.endswith("-wal") for name in names)

    # The second box: an empty folder, the real command.
    second = tmp_path / "second"
    second.mkdir()
    done = jisaku("restore", str(info.path), data=second / "data", cwd=second)
    assert done.returncode == 0, done.stderr
    assert "2 devices" in done.stdout
    restored_db = second / "data" / "jisaku.db"
    assert (second / "jisaku.toml").read_text() == 'tiles = "osm"\n'
    assert (second / "data" / "secrets" / "gateway.secret").read_text() == "s3cret\n"

    # The same answers, up to the moment of the backup (the first box went on meanwhile).
    until = newest_ts(restored_db, "snow-1")
    first_api, second_api = TestClient(create_app(town.db_path, tiles="osm")), TestClient(create_app(restored_db, tiles="osm"))
    for path in ("/api/v1/devices/snow-1/readings?since=0&until={until}&limit=100000",
                 "/api/v1/devices/tray-1/readings?since=0&until={until}&limit=100000"):
        first, again = (api.get(path.format(until=until)).json() for api in (first_api, second_api))
        assert first == again and first
    assert ({d["id"]: d["name"] for d in first_api.get("/api/v1/devices").json()}
            == {d["id"]: d["name"] for d in second_api.get("/api/v1/devices").json()})
    assert second_api.post("/api/v1/operator/login", json={"name": "tanaka", "password": PASSWORD}).status_code == 200
    assert Registry(Database(restored_db)).check_credentials("snow-1", town.secrets["snow-1"]), \
        "devices log in to the second box with the secrets they have"


def test_a_damaged_backup_is_refused_and_changes_nothing(tmp_path):
    data = tmp_path / "data"
    Accounts(Database(data / "jisaku.db")).add("tanaka", PASSWORD, role="admin")
    (data / "pictures").mkdir()
    (data / "pictures" / "cam-1.jpg").write_bytes(os.urandom(200_000))  # does not compress: stays in place
    info = make_backup(data / "jisaku.db", data, None, tmp_path / "b" / "night.tar.gz")
    assert info.path == tmp_path / "b" / "night.tar.gz"

    damaged = tmp_path / "damaged.tar.gz"
    raw = bytearray(info.path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    target = tmp_path / "second"
    with pytest.raises(BackupError, match="damaged"):
        restore_backup(damaged, target)
    assert not target.exists(), "nothing was written"

    # Over a folder that has a database: only when asked, and the old one is kept.
    with pytest.raises(BackupError, match="--force"):
        restore_backup(info.path, data)
    restore_backup(info.path, data, force=True)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("data.before-restore-")]
    assert len(kept) == 1 and (kept[0] / "jisaku.db").exists()
    assert (data / "pictures" / "cam-1.jpg").read_bytes() == (kept[0] / "pictures" / "cam-1.jpg").read_bytes()


@pytest.mark.parametrize("member", ["../escape.py", "link"])
def test_a_backup_not_made_by_jisaku_is_refused(tmp_path, member):
    import io
    import json

    odd = tmp_path / "odd.tar.gz"
    manifest = json.dumps({"format": 1, "jisaku": "x", "database": {"user_version": 1}, "files": {}}).encode()
    with tarfile.open(odd, "w:gz") as archive:
        entry = tarfile.TarInfo("manifest.json")
        entry.size = len(manifest)
        archive.addfile(entry, io.BytesIO(manifest))
        if member == "link":  # a link pointing out of the folder, then a file written through it
            link = tarfile.TarInfo("data")
            link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
            archive.addfile(link)
        else:
            archive.add(__file__, arcname=member)
    with pytest.raises(BackupError, match="not made by jisaku backup"):
        restore_backup(odd, tmp_path / "data")
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "data").exists()
