"""The demo town of ``jisaku demo``: a whole small town in one process, through the real pipeline.

The embedded broker, the gateway writing to SQLite, the dashboard, and the
simulated devices of ``examples/demo-city/city.toml``: two neighbouring towns on one
deployment (the first at ``/``, the other at ``/t/<id>/``), and one practice device that
goes through the whole pipeline but never reaches the residents' pages. Every simulated device is
the real device code on gpiozero mock pins; it logs in to the broker with its
own secret like a board in the field would. Nothing writes to the store
directly. Data is kept in the data folder, so a second run carries on.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from jisaku.contract import kinds
from jisaku.contract.mqtt import BrokerAddress
from jisaku.contract.settings import Settings
from jisaku.dashboard.app import create_app
from jisaku.dashboard.operator import ConfigPublisher
from jisaku.dashboard.osmand import PhonePublisher
from jisaku.device.config import DeviceConfig, load_device_config
from jisaku.device.runner import run_device
from jisaku.gateway.alert_engine import start_alerts
from jisaku.gateway.alerts import ensure_rules
from jisaku.gateway.broker import EmbeddedBroker
from jisaku.gateway.changes import Changes
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.retention import RetentionPolicy
from jisaku.gateway.secrets import new_secret
from jisaku.gateway.service import Gateway
from jisaku.gateway.towns import FIRST_TOWN, Town, Towns

from .stores import open_stores

log = logging.getLogger(__name__)

DEFAULT_CITY = Path("examples/demo-city/city.toml")


class DemoError(RuntimeError):
    pass


def load_city(city_file: Path) -> list[DeviceConfig]:
    """The devices of a demo town: each an example folder with its own settings laid over."""
    if not city_file.exists():
        raise DemoError(f"{city_file} not found: run jisaku demo from the repository root, or pass --city")
    city = tomllib.loads(city_file.read_text(encoding="utf-8"))
    devices = []
    for entry in city.get("device", []):
        folder = kinds.folder(entry.get("example", ""))
        if folder is None or folder.example is None:
            known = ", ".join(name for name, f in kinds.registry().folders.items() if f.example)
            raise DemoError(f"{city_file}: example {entry.get('example')!r} is not a kind folder with a"
                            f" device.toml; those are: {known}")
        # `town` says whose device it is (city_towns); the device itself does not know
        overrides = {key: value for key, value in entry.items() if key not in ("example", "town")}
        devices.append(load_device_config(folder.example, overrides))
    return devices


@dataclass
class CityTowns:
    """The towns of a demo city file: the first from its top-level ``name``, ``centre`` and ``zoom``,
    the others from its ``[[town]]`` tables; ``of_device`` names the town of each device that has
    ``town = "<id>"`` (the others are the first town's)."""

    first: Town
    others: list[Town] = field(default_factory=list)
    of_device: dict[str, str] = field(default_factory=dict)


def city_towns(city_file: Path) -> CityTowns:
    """The towns ``city_file`` describes.

    Example (examples/demo-city/city.toml)::

        towns = city_towns(DEFAULT_CITY)
        towns.first.name, [t.id for t in towns.others]     # "Takayama (demo)", ["hida"]
        towns.of_device["hida-snow-1"]                      # "hida"
    """
    city = tomllib.loads(city_file.read_text(encoding="utf-8"))

    def town(table: dict, town_id: str) -> Town:
        centre = table.get("center") or table.get("centre") or (None, None)
        return Town(town_id, name=table.get("name", ""), name_ja=table.get("name_ja", ""), lat=centre[0],
                    lon=centre[1], zoom=table.get("zoom"))

    others = [town(table, table["id"]) for table in city.get("town", [])]
    known = {t.id for t in others}
    of_device = {}
    for entry in city.get("device", []):
        if "town" in entry:
            if entry["town"] not in known:
                raise DemoError(f"{city_file}: device {entry.get('device', {}).get('id')!r} names town"
                                f" {entry['town']!r}, which no [[town]] table describes")
            of_device[entry["device"]["id"]] = entry["town"]
    return CityTowns(town(city, FIRST_TOWN), others, of_device)


def set_up_towns(db, towns: CityTowns) -> None:
    """The demo's towns in the database: the first town gets the city's name and centre where it
    has none, the others are added once (operators change them with `jisaku towns set`)."""
    book = Towns(db)
    first = book.must_exist(book.first())
    unset = {key: getattr(towns.first, key) for key in ("name", "name_ja", "lat", "lon", "zoom")
             if getattr(first, key) in (None, "")}
    if unset:
        book.update(first.id, **unset)
    for town in towns.others:
        if book.get(town.id) is None:
            book.add(town)


def register(registry: Registry, devices: list[DeviceConfig], secrets_file: Path,
             towns: dict[str, str] | None = None) -> dict[str, str]:
    """Register the demo's devices (once) and return their secrets.

    ``towns``: device id -> town id for the devices not of the first town (CityTowns.of_device).
    A device with ``practice = true`` in its [device] table is a practice device.
    A real device keeps its secret on its own disk; the demo keeps all of them
    in one file in the data folder, readable by its owner only.
    """
    towns = towns or {}
    secrets: dict[str, str] = json.loads(secrets_file.read_text()) if secrets_file.exists() else {}
    changes = Changes(registry.db)  # the audit log says the demo registered them
    for config in devices:
        location = config.location
        record = DeviceRecord(
            id=config.id, kind=config.kind, name=config.name, public=config.public,
            interval_s=config.interval_s, lat=location[0] if location else None,
            lon=location[1] if location else None,
            # city.toml's Japanese name, for the Japanese pages. A data folder made before
            # names had a Japanese half gets it here too: update_device below rewrites the row.
            name_ja=config.device.get("name_ja", ""),
            town=towns.get(config.id), practice=bool(config.device.get("practice", False)),
        )
        if registry.get(config.id) is None:
            secrets[config.id] = changes.add_device("demo", record)
        else:
            changes.update_device("demo", record)  # leaves town and practice alone
            if registry.get(config.id).practice != record.practice:
                registry.set_practice(config.id, record.practice)
            if config.id not in secrets:
                secrets[config.id] = new_secret()
                registry.set_secret(config.id, secrets[config.id])
    secrets_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secrets_file.touch(mode=0o600)
    secrets_file.write_text(json.dumps(secrets, indent=1))
    return secrets


async def _serve(settings: Settings, devices: list[DeviceConfig], rules: list[dict] = (),
                 towns: CityTowns | None = None) -> None:
    registry, store, influx = open_stores(settings)
    if towns is not None:
        set_up_towns(registry.db, towns)
    secrets = register(registry, devices, settings.secrets_dir / "demo-devices.json",
                       towns.of_device if towns else None)
    gateway_secret = registry.service_secret("_gateway", settings.secrets_dir)

    broker_address = BrokerAddress.parse(settings.broker)
    broker = EmbeddedBroker(broker_address.host, broker_address.port, authenticate=registry.check_credentials,
                            version=registry.version)  # cuts off rotated and revoked devices
    try:
        await broker.start()
    except OSError as err:
        if err.errno == errno.EADDRINUSE or "in use" in str(err):
            raise DemoError(
                f"port {broker_address.port} is taken, so the embedded broker cannot start. Is a Mosquitto"
                " service running? Stop it (sudo systemctl stop mosquitto) or pick another port:"
                f" JISAKU_BROKER=mqtt://{broker_address.host}:1884 make demo"
            ) from None
        raise

    gateway = Gateway(store, registry, settings.broker, "_gateway", gateway_secret, readings=influx,
                      retention=RetentionPolicy(*settings.retention_days))
    alerts = start_alerts(gateway, settings.notify)
    ensure_rules(alerts.book, rules)  # the town's [[alert_rule]]s, added once; operators may change them
    gateway.start()
    # Devices start once the gateway listens: what they kept from the last run must not
    # reach a broker with nobody subscribed.
    await asyncio.to_thread(gateway.connected.wait, 10)
    phones = PhonePublisher(settings.broker, "_dashboard", registry.service_secret("_dashboard", settings.secrets_dir))
    phones.start()
    config_publisher = ConfigPublisher(settings.broker, "_dashboard",
                                       registry.service_secret("_dashboard", settings.secrets_dir))
    admin_password = first_admin(registry.db)  # only when there is no operator account yet

    stop = threading.Event()
    threads = [
        threading.Thread(target=run_device, name=config.id, daemon=True, args=(
            config, settings.broker, secrets[config.id], True, stop, settings.data_dir / "devices" / config.id),
            kwargs={"server_url": "http://" + settings.http.replace("0.0.0.0", "127.0.0.1")})  # pictures
        for config in devices
    ]
    for thread in threads:
        thread.start()

    host, port = settings.http_host_port
    server = uvicorn.Server(uvicorn.Config(create_app(settings.sqlite_path, phones, readings=influx,
                                                      config_publisher=config_publisher), host=host, port=port,
                                           log_level="warning"))
    neighbours = "".join(f"  {town.name or town.id}: http://{host}:{port}/t/{town.id}/\n"
                         for town in (towns.others if towns else []))
    print(f"\n  jisaku demo: {len(devices)} simulated devices in town.\n"
          f"  Open http://{host}:{port}/  (API: http://{host}:{port}/docs)\n{neighbours}"
          f"  Data is kept in {settings.data_dir.resolve()}. Press Ctrl-C to stop.\n", flush=True)
    print(f"  Operators: http://{host}:{port}/operator  " + (
        f"user admin, password {admin_password} (shown once; change it: jisaku users passwd admin)\n"
        if admin_password else "(log in with your account; jisaku users add NAME --role admin makes one)\n")
        + f"  Practice map (learners' devices, never shown to residents): http://{host}:{port}/operator/practice\n",
        flush=True)
    try:
        await server.serve()
        if not server.started:
            raise DemoError(f"the dashboard could not listen on {host}:{port}: is it taken? Set JISAKU_HTTP=127.0.0.1:8001")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        # Let the devices' last "offline" reach the gateway before it leaves too.
        await asyncio.sleep(1)
        phones.stop()
        config_publisher.stop()
        gateway.stop()
        alerts.stop()
        await broker.stop()
        print("  jisaku demo stopped; its data is kept for next time.", flush=True)



def first_admin(db) -> str | None:
    """For ``jisaku demo``: with no account yet, make ``admin`` and return its password (print it once).

    Returns None when accounts exist already; they keep their passwords.
    """
    changes = Changes(db)
    if changes.accounts.users():
        return None
    password = new_secret(12)
    # A joint body's account: the demo's operator pages show both towns, each device with its town.
    changes.add_user("demo", "admin", password, "admin", town=None)
    return password


def run_demo(settings: Settings, city_file: Path = DEFAULT_CITY) -> None:
    devices = load_city(city_file)
    rules = tomllib.loads(city_file.read_text(encoding="utf-8")).get("alert_rule", [])
    asyncio.run(_serve(settings, devices, rules, city_towns(city_file)))

