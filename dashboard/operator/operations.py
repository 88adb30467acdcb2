"""What an operator sees, shared by the web pages and the JSON API; and where they change things.

Changes themselves (devices, settings, accounts, rules) go through
:class:`jisaku.gateway.changes.Changes`, as the ``jisaku`` command's do; ``ops.changes``
is the one the pages use, writing each change's audit entry with the operator's name.

Example::

    ops = Operations(db, store, registry, accounts, publisher)
    ops.devices()                                   # every device with its status
    secret = ops.changes.add_device("tanaka", DeviceRecord("snow-5", "snow_gauge"))
    ops.changes.push_settings("tanaka", "tray-1", {"left_after_s": 45})
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jisaku.gateway.accounts import Accounts
from jisaku.contract import kinds
from jisaku.gateway.changes import Changes, NotFound
from jisaku.gateway.db import Database
from jisaku.gateway.provisioning import DeviceSnippets, device_snippets
from jisaku.gateway.registry import DeviceRecord, Registry
# A device silent for STALE_AFTER_INTERVALS of its expected interval is "stale" (maybe its
# battery, maybe its network): the gateway marks it so every few seconds; the pages use the
# same rule, so a device shows stale even before the gateway's next look.
from jisaku.gateway.store import SQLiteStore, stale_after

from .publisher import ConfigPublisher


@dataclass
class SettingLimit:
    name: str
    low: float | None               # None for a schedule
    high: float | None
    current: Any = None             # a number, or a schedule's list of entries
    type: str = "number"            # number | schedule


@dataclass
class OutputView:
    """One output of a switch box: what its status says of it, and its state from the newest reading."""

    name: str                       # heater: as in commands and in the heater_on reading
    label: str                      # "Road heater"
    on: int | None                  # 1 on, 0 off, None: no reading yet
    safe: str                       # off | on: where the device puts it on a fault or link loss
    max_on_min: float               # 0: no limit


@dataclass
class DeviceView:
    """A device as the operator pages show it."""

    id: str
    kind: str
    name: str
    name_ja: str                    # the name on the Japanese pages; "" shows `name` there
    public: bool
    interval_s: float | None
    lat: float | None
    lon: float | None
    state: str                      # online, offline, stale, never (not heard from yet), revoked
    last_seen: float | None         # newest of its last reading and its last status message
    battery_pct: float | None
    firmware: str | None
    values: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None  # {"rev", "settings", "state": applied|refused|pending, "reason"}
    settings: list[SettingLimit] = field(default_factory=list)  # what may be changed from afar
    outputs: list[OutputView] = field(default_factory=list)     # what can be switched (switch boxes)
    schedule_note: str | None = None  # what the device says of its schedule, e.g. "no clock"
    practice: bool = False            # a learner's device: the practice map, never residents' pages
    town: str = ""                    # the town it belongs to (towns.py)


def device_state(status: str, kind: str, last_seen: float | None, interval_s: float | None, revoked: bool,
                 now: float) -> str:
    if revoked:
        return "revoked"
    if last_seen is None:
        return "never"
    if status in ("offline", "stale"):
        return status
    if now - last_seen > stale_after(kind, interval_s):
        return "stale"
    return "online"


class Operations:
    def __init__(self, db: Database, store: SQLiteStore, registry: Registry, accounts: Accounts,
                 publisher: ConfigPublisher | None = None, broker_url: str | None = None, alerts=None):
        self.db = db
        self.store = store
        self.registry = registry
        self.accounts = accounts
        self.changes = Changes(db, publisher, alerts)
        self.audit = self.changes.audit
        self.publisher = publisher
        # Where devices reach the broker, for the snippets; guessed from the page's address if None.
        self.broker_url = broker_url or (publisher.broker_url if publisher else None)

    # ------------------------------------------------------------ devices: looking

    def devices(self, town: str | None = None) -> list[DeviceView]:
        """Every device with its status, or one town's only."""
        now = time.time()
        info = {row["device_id"]: json.loads(row["info"] or "{}") for row in
                self.db.connection.execute("SELECT device_id, info FROM device_status")}
        revoked = {row[0] for row in self.db.connection.execute("SELECT id FROM devices WHERE secret_hash IS NULL")}
        outputs = {row["device_id"]: json.loads(row["outputs"]) for row in
                   self.db.connection.execute("SELECT device_id, outputs FROM device_outputs")}
        views = []
        for row in self.store.latest(public_only=False, town=town):
            view = self._view(row, info.get(row["id"], {}), row["id"] in revoked, now)
            view.outputs = _outputs(outputs.get(row["id"], {}), view.values)
            note = info.get(row["id"], {}).get("schedule")
            view.schedule_note = str(note)[:200] if note else None
            views.append(view)
        return views

    def device(self, device_id: str) -> DeviceView:
        for view in self.devices():
            if view.id == device_id:
                return view
        raise NotFound(f"no device {device_id!r}")

    def _view(self, row: dict[str, Any], info: dict[str, Any], revoked: bool, now: float) -> DeviceView:
        # A status's time is when we heard from the device, except "stale": when the gateway noticed.
        since = row["status_since"] if row["status"] in ("online", "offline") else None
        seen = [t for t in (row["ts"], since) if t is not None]
        last_seen = max(seen) if seen else None
        values = row["values"]
        battery = values.get("battery_pct", info.get("battery_pct", info.get("battery")))
        config = self.store.config_state(row["id"])
        current = (config or {}).get("settings", {})
        limits = [SettingLimit(name, s.low, s.high, current.get(name), s.type)
                  for name, s in sorted(kinds.settings_for(row["kind"]).items())]
        return DeviceView(
            id=row["id"], kind=row["kind"], name=row["name"], name_ja=row["name_ja"], public=row["public"],
            interval_s=row["interval_s"],
            lat=row["lat"], lon=row["lon"],
            state=device_state(row["status"], row["kind"], last_seen, row["interval_s"], revoked, now),
            last_seen=last_seen, battery_pct=battery if isinstance(battery, int | float) else None,
            firmware=str(info["fw"]) if info.get("fw") is not None else None,
            values=values, config=config, settings=limits, practice=bool(row.get("practice")), town=row["town"],
        )

    # ------------------------------------------------------------ devices: ready-to-copy settings

    def snippets(self, device: DeviceRecord, secret: str, page_url: str) -> DeviceSnippets:
        """Ready-to-copy settings for the device; addresses as the operator's browser reached us."""
        page = urlsplit(page_url)
        broker_url = self.broker_url or "mqtt://127.0.0.1:1883"
        broker_host = urlsplit(broker_url).hostname or ""
        if broker_host in ("127.0.0.1", "localhost", "0.0.0.0", "::1") and page.hostname not in (
                None, "127.0.0.1", "localhost", "testserver"):
            # The broker runs next to the dashboard: devices reach it where the operator reached us.
            broker_url = f"mqtt://{page.hostname}:{urlsplit(broker_url).port or 1883}"
        return device_snippets(device, secret, broker_url=broker_url, http_url=f"{page.scheme}://{page.netloc}")


def _outputs(described: dict[str, dict[str, Any]], values: dict[str, Any]) -> list[OutputView]:
    """The device's outputs in the order it listed them, each with the state of its newest ``<name>_on``."""
    views = []
    for name, spec in described.items():
        state = values.get(f"{name}_on")
        views.append(OutputView(name=name, label=str(spec.get("name") or name),
                                on=int(bool(state)) if isinstance(state, int | float) else None,
                                safe=str(spec.get("safe", "off")), max_on_min=float(spec.get("max_on_min") or 0)))
    return views


__all__ = ["Operations", "DeviceView", "OutputView", "SettingLimit", "device_state"]
