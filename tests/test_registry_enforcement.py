"""The device registry, enforced by the broker: real Mosquitto and the embedded broker.

Each broker is fed by a real `Registry`: the embedded broker checks it on every CONNECT and
polls its change counter; Mosquitto gets its passwd/acl from `jisaku mosquitto sync`'s
`Syncer`, which sends it SIGHUP. A change (add, rotate, revoke) is made, then `apply()`
waits until the broker has taken it in, as an operator's change would be.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jisaku import cli
from jisaku.gateway.audit import AuditLog
from jisaku.gateway.broker import EmbeddedBroker
from jisaku.gateway.changes import Changes
from jisaku.gateway.db import Database
from jisaku.gateway.provisioning import device_snippets
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.store import SQLiteStore
from jisaku.cli.mosquitto import Syncer

from .brokers import HOST, EmbeddedBrokerThread, MosquittoServer, _mqtt_round_trip, free_port
from .test_broker import GRACE_S, WAIT_S, Peer, peers  # noqa: F401 (peers is a fixture)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.02)


class RegistryEmbeddedBroker:
    """The embedded broker as `jisaku broker` runs it, on its own loop in a thread."""

    def __init__(self, registry: Registry) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.broker = EmbeddedBroker(HOST, self.port, authenticate=registry.check_credentials,
                                     version=registry.version)
        asyncio.run_coroutine_threadsafe(self.broker.start(), self._loop).result(10)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.broker.stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


@dataclass
class Deployment:
    kind: str
    registry: Registry
    port: int
    apply: Callable[[], None]  # returns once the broker enforces the registry as it is now
    secrets: dict[str, str]

    def connect(self, peers, username: str | None, secret: str | None, client_id: str | None = None) -> Peer:
        return peers(self.port, client_id or f"jisaku-{username}", username, secret)


@pytest.fixture
def deployment(broker_kind: str, tmp_path: Path) -> Iterator[Deployment]:
    registry = Registry(Database(tmp_path / "jisaku.db"))
    secrets = {name: registry.add_device(DeviceRecord(name, "bus")) for name in ("bus-1", "bus-2")}
    secrets["_gateway"] = registry.service_secret("_gateway", tmp_path / "secrets")

    if broker_kind == "embedded":
        server = RegistryEmbeddedBroker(registry)

        def apply() -> None:
            wait_until(lambda: server.broker.checked_version == registry.version(), "the broker saw the change")

        try:
            yield Deployment("embedded", registry, server.port, apply, secrets)
        finally:
            server.stop()
        return

    directory = tmp_path / "mosquitto"
    with MosquittoServer(directory, registry.account_hashes()) as mosquitto:
        syncer = Syncer(registry, directory, user="root" if os.geteuid() == 0 else None)

        def apply() -> None:
            before = mosquitto.log().count("Reloading config")
            assert syncer.sync_if_changed()
            wait_until(lambda: mosquitto.log().count("Reloading config") > before, "Mosquitto reloaded")
            _mqtt_round_trip(mosquitto.port)  # the reload is complete once it answers

        yield Deployment("mosquitto", registry, mosquitto.port, apply, secrets)


def flows(gateway: Peer, device: Peer, device_id: str, tag: str) -> bool:
    """Whether a message from `device` (logged in as `device_id`) still reaches the gateway."""
    device.publish(f"jisaku/{device_id}/data", tag)
    return gateway.wait_for(f"jisaku/{device_id}/data", tag) is not None


# --- logging in --------------------------------------------------------------------------------


def test_anonymous_unknown_and_wrong_secrets_are_refused(deployment: Deployment, peers) -> None:
    d = deployment
    assert not d.connect(peers, None, None, "anon").accepted
    assert not d.connect(peers, "bus-1", "not-the-secret").accepted
    assert not d.connect(peers, "bus-1", d.secrets["bus-2"]).accepted  # another device's secret
    assert not d.connect(peers, "bus-9", d.secrets["bus-1"]).accepted  # not registered
    assert d.connect(peers, "bus-1", d.secrets["bus-1"]).accepted


def test_a_device_cannot_publish_as_another(deployment: Deployment, peers) -> None:
    d = deployment
    gateway = d.connect(peers, "_gateway", d.secrets["_gateway"], "jisaku-gateway")
    gateway.subscribe("jisaku/#")
    bus1 = d.connect(peers, "bus-1", d.secrets["bus-1"])
    bus1.publish("jisaku/bus-2/data", "forged")
    bus1.publish("jisaku/bus-2/status", "forged", retain=True)
    bus1.publish("jisaku/bus-1/data", "marker")
    assert gateway.wait_for("jisaku/bus-1/data", "marker")
    time.sleep(GRACE_S)  # the forged messages were sent first; give them a margin anyway
    assert gateway.received(lambda m: m.payload == b"forged") == []


# --- rotating and revoking ------------------------------------------------------------------------


def test_rotation_cuts_off_the_old_secret_and_the_new_one_works(deployment: Deployment, peers) -> None:
    d = deployment
    gateway = d.connect(peers, "_gateway", d.secrets["_gateway"], "jisaku-gateway")
    gateway.subscribe("jisaku/#")
    old = d.connect(peers, "bus-1", d.secrets["bus-1"])
    other = d.connect(peers, "bus-2", d.secrets["bus-2"])

    new_secret = d.registry.rotate_secret("bus-1")
    d.apply()
    wait_until(lambda: not old.client.is_connected(), "the session with the old secret is cut off")
    assert not d.connect(peers, "bus-1", d.secrets["bus-1"], "bus-1-again").accepted
    renewed = d.connect(peers, "bus-1", new_secret, "bus-1-renewed")
    assert renewed.accepted
    assert flows(gateway, renewed, "bus-1", "with the new secret")
    assert other.client.is_connected() and flows(gateway, other, "bus-2", "bus-2 carries on")


def test_a_revoked_device_is_cut_off_and_the_others_stay(deployment: Deployment, peers) -> None:
    d = deployment
    gateway = d.connect(peers, "_gateway", d.secrets["_gateway"], "jisaku-gateway")
    gateway.subscribe("jisaku/#")
    bus1 = d.connect(peers, "bus-1", d.secrets["bus-1"])
    bus2 = d.connect(peers, "bus-2", d.secrets["bus-2"])
    assert flows(gateway, bus1, "bus-1", "before")

    d.registry.revoke("bus-1")
    d.apply()
    wait_until(lambda: not bus1.client.is_connected(), "the revoked device is disconnected")
    assert not d.connect(peers, "bus-1", d.secrets["bus-1"], "bus-1-again").accepted
    assert bus2.client.is_connected() and gateway.client.is_connected()
    assert flows(gateway, bus2, "bus-2", "after")


def test_a_sync_keeps_connected_devices_and_adds_new_ones(deployment: Deployment, peers) -> None:
    d = deployment
    gateway = d.connect(peers, "_gateway", d.secrets["_gateway"], "jisaku-gateway")
    gateway.subscribe("jisaku/#")
    bus1 = d.connect(peers, "bus-1", d.secrets["bus-1"])
    assert not d.connect(peers, "bus-3", "nothing yet").accepted

    secret = d.registry.add_device(DeviceRecord("bus-3", "bus"))
    d.registry.update_device(DeviceRecord("bus-1", "bus", name="renamed"))
    d.apply()
    bus3 = d.connect(peers, "bus-3", secret)
    assert bus3.accepted and flows(gateway, bus3, "bus-3", "new")
    assert bus1.client.is_connected() and flows(gateway, bus1, "bus-1", "still here")


@pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)
def test_embedded_refuses_another_accounts_client_id(deployment: Deployment, peers) -> None:
    """Mosquitto lets a valid login take over any client id (docs/mosquitto.md); we do not."""
    d = deployment
    gateway = d.connect(peers, "_gateway", d.secrets["_gateway"], "jisaku-gateway")
    gateway.subscribe("jisaku/#")
    bus1 = d.connect(peers, "bus-1", d.secrets["bus-1"])
    assert not d.connect(peers, "bus-2", d.secrets["bus-2"], "jisaku-bus-1").accepted
    assert not d.connect(peers, "bus-2", d.secrets["bus-2"], "jisaku-gateway").accepted
    assert bus1.client.is_connected() and flows(gateway, bus1, "bus-1", "not taken over")
    # The same account may take its own session over (a device reconnecting after a reset).
    assert d.connect(peers, "bus-1", d.secrets["bus-1"]).accepted


# --- the command line -----------------------------------------------------------------------------


def test_cli_add_rotate_revoke_are_audited_without_secrets(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("JISAKU_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("JISAKU_CONFIG", str(tmp_path / "none.toml"))
    cli.main(["devices", "add", "snow-3", "--kind", "snow_gauge", "--location", "36.1,137.2",
              "--broker-url", "mqtt://192.168.1.10:1883"])
    added = capsys.readouterr().out
    registry = Registry(Database(tmp_path / "data" / "jisaku.db"))
    first = next(line.strip() for line in added.splitlines()[2:] if line.strip())
    assert registry.check_credentials("snow-3", first)
    assert '"host": "192.168.1.10"' in added and "osmand" not in added

    cli.main(["devices", "rotate", "snow-3"])
    rotated = capsys.readouterr().out
    second = next(line.strip() for line in rotated.splitlines()[2:] if line.strip())
    assert not registry.check_credentials("snow-3", first) and registry.check_credentials("snow-3", second)

    cli.main(["devices", "revoke", "snow-3"])
    assert not registry.check_credentials("snow-3", second) and registry.is_revoked("snow-3")
    with pytest.raises(SystemExit, match="no device 'nope'"):
        cli.main(["devices", "revoke", "nope"])

    entries = AuditLog(registry.db).entries()
    assert [e["action"] for e in entries] == ["device.revoke", "device.rotate_secret", "device.add"]
    assert all(e["actor"].startswith("cli:") and e["target"] == "snow-3" for e in entries)
    dump = json.dumps(entries)
    assert first not in dump and second not in dump


def test_mosquitto_sync_once_writes_the_registrys_accounts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JISAKU_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("JISAKU_CONFIG", str(tmp_path / "none.toml"))
    registry = Registry(Database(tmp_path / "data" / "jisaku.db"))
    registry.add_device(DeviceRecord("bus-1", "bus"))
    registry.add_device(DeviceRecord("bus-2", "bus"))
    registry.revoke("bus-2")
    cli.main(["mosquitto", "sync", "--dir", str(tmp_path / "m"), "--once"])  # no Mosquitto yet: files only
    users = [line.split(":")[0] for line in (tmp_path / "m" / "passwd").read_text().splitlines()]
    assert users == ["bus-1"]  # a revoked device has no password line at all


# --- what a new device is given -------------------------------------------------------------------


def test_snippets_for_a_board_a_pi_and_a_phone() -> None:
    bus = DeviceRecord("bus-7", "bus", name="Loop 7", interval_s=5)
    snippets = device_snippets(bus, "s3cret-_x", "mqtt://192.168.1.10:1883", "https://jisaku.example.jp/")
    assert json.loads(snippets.config_json) == {
        "device_id": "bus-7", "secret": "s3cret-_x", "wifi": {"ssid": "", "password": ""},
        "broker": {"host": "192.168.1.10", "port": 1883}}
    device = tomllib.loads(snippets.device_toml)["device"]
    assert device == {"id": "bus-7", "kind": "bus", "name": "Loop 7",
                      "public": True, "interval_s": 5}
    assert snippets.traccar_url == "https://jisaku.example.jp/osmand?key=s3cret-_x"
    assert snippets.traccar_identifier == "bus-7" and snippets.warnings == ()

    gauge = DeviceRecord("snow-1", "snow_gauge", public=False, lat=36.1462, lon=137.25225)
    snippets = device_snippets(gauge, "x", "mqtt://127.0.0.1:1883", "127.0.0.1:8000")
    assert snippets.traccar_url is None
    assert tomllib.loads(snippets.device_toml)["device"]["location"] == [36.1462, 137.25225]
    assert any("only works on this computer" in w for w in snippets.warnings)


def test_cli_configure_checks_the_limits_like_the_operator_pages(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JISAKU_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("JISAKU_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("JISAKU_BROKER", f"mqtt://127.0.0.1:{free_port()}")  # nobody there: it must not get that far
    registry = Registry(Database(tmp_path / "data" / "jisaku.db"))
    registry.add_device(DeviceRecord("tray-1", "printer_tray"))
    with pytest.raises(SystemExit, match=r"left_after_s must be a number from 1 to 3600, not 99999"):
        cli.main(["devices", "configure", "tray-1", "left_after_s=99999"])
    with pytest.raises(SystemExit, match=r"unknown setting 'volume'.*left_after_s, report_every_s"):
        cli.main(["devices", "configure", "tray-1", "volume=3"])
    with pytest.raises(SystemExit, match="no device 'tray-9'"):
        cli.main(["devices", "configure", "tray-9", "left_after_s=45"])
    assert SQLiteStore(registry.db).config_state("tray-1") is None, "nothing was sent"
    assert AuditLog(registry.db).entries() == []


def test_cli_configure_sends_the_settings_and_leaves_an_audit_entry(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("JISAKU_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("JISAKU_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("JISAKU_GATEWAY_SECRET", "gateway-secret")
    registry = Registry(Database(tmp_path / "data" / "jisaku.db"))
    registry.add_device(DeviceRecord("tray-1", "printer_tray"))
    with EmbeddedBrokerThread({"_gateway": "gateway-secret"}) as broker:
        monkeypatch.setenv("JISAKU_BROKER", broker.url)
        cli.main(["devices", "configure", "tray-1", "left_after_s=45", "--wait", "0"])
    assert "tray-1: sent rev 1" in capsys.readouterr().out
    assert SQLiteStore(registry.db).config_state("tray-1")["settings"] == {"left_after_s": 45}
    (entry,) = AuditLog(registry.db).entries()
    assert (entry["action"], entry["target"], entry["actor"].startswith("cli:")) == ("device.settings", "tray-1", True)
    assert entry["after"] == {"rev": 1, "settings": {"left_after_s": 45}}


def test_cli_users_changes_are_audited_and_disabling_ends_sessions(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JISAKU_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("JISAKU_CONFIG", str(tmp_path / "none.toml"))
    db = Database(tmp_path / "data" / "jisaku.db")
    Changes(db).add_user("demo", "tanaka", "a long passphrase", "admin")  # suzuki is not the last admin
    Changes(db).add_user("tanaka", "suzuki", "a long passphrase", "operator")
    db.connection.execute("INSERT INTO operator_sessions (token_hash, user, csrf, created, expires)"
                          " VALUES ('h', 'suzuki', 'c', 0, 9e99)")
    cli.main(["users", "role", "suzuki", "admin"])
    cli.main(["users", "disable", "suzuki"])
    assert db.connection.execute("SELECT count(*) FROM operator_sessions").fetchone()[0] == 0
    actions = [(e["actor"].split(":")[0], e["action"], e["after"]) for e in AuditLog(db).entries()]
    assert actions == [("cli", "user.update", {"disabled": True}), ("cli", "user.update", {"role": "admin"}),
                       ("tanaka", "user.add", {"role": "operator", "disabled": False}),
                       ("demo", "user.add", {"role": "admin", "disabled": False})]
    with pytest.raises(SystemExit, match="no user 'nobody'"):
        cli.main(["users", "role", "nobody", "admin"])
