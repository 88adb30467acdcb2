"""Update bundles on the town's server: admins publish them, devices of the right kind download them.

A real town (broker, gateway, dashboard under uvicorn) and real HTTP: the operator API to publish,
a device's own secret and HTTP Range to download in pieces, as a board with little memory would.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from jisaku.contract.bundles import verify_bundle
from jisaku.gateway.accounts import Accounts
from jisaku.gateway.audit import AuditLog
from jisaku.gateway.bundle_signing import build_bundle, load_private_key, make_keys
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord

REPO = Path(__file__).resolve().parent.parent
BOARD = REPO / "kinds" / "printer_tray" / "board"
PASSWORD = "correct horse battery staple"
PIECE = 1024  # a board's download buffer


class BundleTown:
    """A town with the signing key, an admin, an operator, two trays and a snow camera."""

    def __init__(self, town):
        self.town = town
        self.keys = make_keys(town.directory)  # beside jisaku.db, where the dashboard looks
        db = Database(town.db_path)
        accounts = Accounts(db)
        accounts.add("admin", PASSWORD, role="admin")
        accounts.add("suzuki", PASSWORD, role="operator")
        self.audit = AuditLog(db)
        self.secrets = {device_id: town.registry.add_device(DeviceRecord(device_id, kind, name=device_id))
                        for device_id, kind in (("tray-1", "printer_tray"), ("tray-2", "printer_tray"),
                                                ("cam-1", "snow_camera"))}
        self.url = town.start_dashboard(tiles="osm")

    def bundle(self, version: str, key_dir: Path | None = None, folder: Path = BOARD) -> Path:
        out = self.town.directory / f"printer_tray-{version}.bundle"
        build_bundle(folder, version, "printer_tray", "board", load_private_key(key_dir or self.town.directory), out)
        return out

    def operator(self, name: str = "admin") -> tuple[httpx.Client, str]:
        client = httpx.Client(base_url=self.url, timeout=10)
        answer = client.post("/api/v1/operator/login", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return client, answer.json()["csrf_token"]

    def publish(self, client: httpx.Client, token: str | None, data: bytes) -> httpx.Response:
        return client.post("/api/v1/operator/bundles", files={"bundle": ("b.bundle", data)},
                           headers={"X-CSRF-Token": token} if token else {})

    def download(self, device_id: str, version: str, secret: str | None = None,
                 headers: dict | None = None) -> httpx.Response:
        auth = (device_id, secret if secret is not None else self.secrets[device_id])
        return httpx.get(f"{self.url}/api/v1/devices/{device_id}/bundles/{version}", auth=auth,
                         headers=headers or {}, timeout=10)


@pytest.fixture
def bundle_town(make_town):
    return BundleTown(make_town())


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_an_admin_publishes_a_bundle_and_a_tray_downloads_it_in_pieces(bundle_town):
    bundle = bundle_town.bundle("1.4.0")
    data = bundle.read_bytes()
    client, token = bundle_town.operator()
    assert bundle_town.publish(client, None, data).status_code == 403  # no CSRF token
    operator, operator_token = bundle_town.operator("suzuki")
    assert bundle_town.publish(operator, operator_token, data).status_code == 403  # admins only
    answer = bundle_town.publish(client, token, data)
    assert answer.status_code == 201, answer.text
    assert answer.json()["new"] is True and answer.json()["version"] == "1.4.0"
    again = bundle_town.publish(client, token, data)
    assert again.status_code == 200 and again.json()["new"] is False
    listed = operator.get("/api/v1/operator/bundles").json()
    assert [(b["kind"], b["version"], b["runs_on"], b["bytes"]) for b in listed] == [
        ("printer_tray", "1.4.0", "board", len(data))]
    entries = [e for e in bundle_town.audit.entries() if e["action"] == "bundle.publish"]
    assert [(e["actor"], e["target"]) for e in entries] == [("admin", "printer_tray/1.4.0")]

    # A board with room for 1 kB at a time: piece after piece, joined, verifies.
    pieces, offset = [], 0
    while offset < len(data):
        answer = bundle_town.download("tray-1", "1.4.0", headers={"Range": f"bytes={offset}-{offset + PIECE - 1}"})
        assert answer.status_code == 206, answer.text
        assert answer.headers["content-range"].endswith(f"/{len(data)}")
        pieces.append(answer.content)
        offset += len(answer.content)
    assert len(pieces) > 3 and b"".join(pieces) == data
    joined = bundle_town.town.directory / "joined.bundle"
    joined.write_bytes(b"".join(pieces))
    assert verify_bundle(joined, bytes.fromhex(bundle_town.keys.public.read_text().strip())).version == "1.4.0"
    whole = bundle_town.download("tray-2", "1.4.0")
    assert whole.status_code == 200 and whole.content == data
    assert bundle_town.download("tray-1", "1.4.0", headers={"Range": f"bytes={len(data) + 10}-"}).status_code == 416


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_the_server_refuses_a_changed_bundle_or_another_key_and_a_version_taken(bundle_town, tmp_path):
    client, token = bundle_town.operator()
    changed = bytearray(bundle_town.bundle("2").read_bytes())
    changed[-3] ^= 0x20
    answer = bundle_town.publish(client, token, bytes(changed))
    assert answer.status_code == 400 and answer.json()["reason"] == "hash"
    assert "do not match the hash" in answer.json()["detail"]
    make_keys(tmp_path / "elsewhere")
    foreign = bundle_town.bundle("3", key_dir=tmp_path / "elsewhere")
    answer = bundle_town.publish(client, token, foreign.read_bytes())
    assert answer.status_code == 400 and answer.json()["reason"] == "signature"
    assert bundle_town.publish(client, token, b"not a bundle at all\n").json()["reason"] == "format"
    assert client.get("/api/v1/operator/bundles").json() == []
    # Version 4, published; then other files under version 4.
    assert bundle_town.publish(client, token, bundle_town.bundle("4").read_bytes()).status_code == 201
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('other')\n")
    answer = bundle_town.publish(client, token, bundle_town.bundle("4", folder=tmp_path / "app").read_bytes())
    assert answer.status_code == 409 and "give the new bundle a new --version" in answer.json()["detail"]


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_a_device_gets_only_its_kinds_bundles_and_only_with_its_own_secret(bundle_town):
    client, token = bundle_town.operator()
    assert bundle_town.publish(client, token, bundle_town.bundle("1.4.0").read_bytes()).status_code == 201
    assert bundle_town.download("tray-1", "1.4.0", secret=bundle_town.secrets["tray-2"]).status_code == 401
    assert bundle_town.download("tray-1", "1.4.0", secret="").status_code == 401
    assert httpx.get(f"{bundle_town.url}/api/v1/devices/tray-1/bundles/1.4.0").status_code == 401
    answer = bundle_town.download("cam-1", "1.4.0")  # a camera, with its own good secret
    assert answer.status_code == 404 and "no bundle '1.4.0' for snow_camera devices" in answer.json()["detail"]
    assert bundle_town.download("tray-1", "9.9").status_code == 404
    assert bundle_town.download("tray-1", "..%2F..%2Fkeys%2Fbundle-signing").status_code == 404
