"""What an operator can see and do, shared by the web pages and the JSON API.

Every change is written to the audit log (who, what, before and after) in the
same transaction as the change itself; secrets never are.

Example::

    ops = Operations(db, store, registry, accounts, auth, publisher)
    ops.devices()                                   # every device with its status
    secret, snippets = ops.add_device("tanaka", DeviceRecord("snow-5", "snow_gauge"), base)
    ops.push_settings("tanaka", "tray-1", {"left_after_s": 45})
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jisaku.device.apps import APPS
from jisaku.gateway.accounts import Accounts, AccountError
from jisaku.gateway.audit import AuditLog
from jisaku.gateway.db import Database, write
from jisaku.gateway.provisioning import APP_FOR_KIND, DeviceSnippets, device_snippets
from jisaku.gateway.registry import DeviceRecord, Registry, RegistryError
# A device silent for STALE_AFTER_INTERVALS of its expected interval is "stale" (maybe its
# battery, maybe its network): the gateway marks it so every few seconds; the pages use the
# same rule, so a device shows stale even before the gateway's next look.
from jisaku.gateway.store import SQLiteStore, stale_after

from .auth import Auth
from .publisher import BrokerUnavailable, ConfigPublisher



class OperationError(ValueError):
    """A change that cannot be made as asked; the message says what to do instead."""


class NotFound(LookupError):
    pass


class PublisherMissing(RuntimeError):
    """This dashboard has no broker account to send settings with."""


@dataclass
class SettingLimit:
    name: str
    low: float
    high: float
    current: float | None = None


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


def setting_limits(kind: str) -> dict[str, tuple[float, float]]:
    """The settings a device of ``kind`` takes from afar, with their limits (from its app's SETTINGS)."""
    app = APPS.get(APP_FOR_KIND.get(kind, kind))
    return dict(getattr(app, "SETTINGS", {}))


def check_settings(kind: str, changes: dict[str, Any]) -> dict[str, float | int]:
    """The changes as numbers, or :class:`OperationError` naming each one out of its limits."""
    limits = setting_limits(kind)
    if not limits:
        raise OperationError(f"a {kind} device has no settings that can be changed from here")
    if not changes:
        raise OperationError("nothing to change: give at least one setting")
    clean, problems = {}, []
    for name, value in changes.items():
        if name not in limits:
            problems.append(f"unknown setting {name!r} (a {kind} takes {', '.join(sorted(limits))})")
            continue
        low, high = limits[name]
        number = _number(value)
        if number is None or not low <= number <= high:
            problems.append(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")
            continue
        clean[name] = int(number) if float(number).is_integer() else number
    if problems:
        raise OperationError("; ".join(problems))
    return clean


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", "."))
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


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


def _record_dict(device: DeviceRecord) -> dict[str, Any]:
    return asdict(device)


class Operations:
    def __init__(self, db: Database, store: SQLiteStore, registry: Registry, accounts: Accounts, auth: Auth,
                 publisher: ConfigPublisher | None = None, broker_url: str | None = None):
        self.db = db
        self.store = store
        self.registry = registry
        self.accounts = accounts
        self.auth = auth
        self.audit = AuditLog(db)
        self.publisher = publisher
        # Where devices reach the broker, for the snippets; guessed from the page's address if None.
        self.broker_url = broker_url or (publisher.broker_url if publisher else None)

    def _transaction(self):
        """The change and its audit entry are kept together, or neither is."""
        return write(self.db.connection)

    # ------------------------------------------------------------ devices: looking

    def devices(self) -> list[DeviceView]:
        now = time.time()
        info = {row["device_id"]: json.loads(row["info"] or "{}") for row in
                self.db.connection.execute("SELECT device_id, info FROM device_status")}
        revoked = {row[0] for row in self.db.connection.execute("SELECT id FROM devices WHERE secret_hash IS NULL")}
        views = []
        for row in self.store.latest(public_only=False):
            views.append(self._view(row, info.get(row["id"], {}), row["id"] in revoked, now))
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
        limits = [SettingLimit(name, low, high, current.get(name))
                  for name, (low, high) in sorted(setting_limits(row["kind"]).items())]
        return DeviceView(
            id=row["id"], kind=row["kind"], name=row["name"], name_ja=row["name_ja"], public=row["public"],
            interval_s=row["interval_s"],
            lat=row["lat"], lon=row["lon"],
            state=device_state(row["status"], row["kind"], last_seen, row["interval_s"], revoked, now),
            last_seen=last_seen, battery_pct=battery if isinstance(battery, int | float) else None,
            firmware=str(info["fw"]) if info.get("fw") is not None else None,
            values=values, config=config, settings=limits,
        )

    # ------------------------------------------------------------ devices: changing

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

    def add_device(self, actor: str, device: DeviceRecord) -> str:
        """Register the device; returns its secret (show it once)."""
        with self._transaction():
            try:
                secret = self.registry.add_device(device)
            except RegistryError as err:
                raise OperationError(str(err)) from None
            self.audit.record(actor, "device.add", device.id, None, _record_dict(device))
        return secret

    def update_device(self, actor: str, device: DeviceRecord) -> None:
        with self._transaction():
            before = self.registry.get(device.id)
            if before is None:
                raise NotFound(f"no device {device.id!r}")
            if before == device:
                return
            self.registry.update_device(device)
            old, new = _record_dict(before), _record_dict(device)
            changed = [key for key in new if old[key] != new[key]]
            self.audit.record(actor, "device.update", device.id,
                              {key: old[key] for key in changed}, {key: new[key] for key in changed})

    def rotate_secret(self, actor: str, device_id: str) -> str:
        with self._transaction():
            self._must_exist(device_id)
            revoked = self.registry.is_revoked(device_id)
            secret = self.registry.rotate_secret(device_id)
            # That it happened, never the secret itself.
            self.audit.record(actor, "device.rotate_secret", device_id, {"revoked": revoked}, {"revoked": False})
        return secret

    def revoke(self, actor: str, device_id: str) -> None:
        with self._transaction():
            self._must_exist(device_id)
            if self.registry.is_revoked(device_id):
                return
            self.registry.revoke(device_id)
            self.audit.record(actor, "device.revoke", device_id, {"revoked": False}, {"revoked": True})

    def push_settings(self, actor: str, device_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Send the device new settings (checked against its limits first); returns the revision."""
        device = self._must_exist(device_id)
        clean = check_settings(device.kind, changes)
        if self.publisher is None:
            raise PublisherMissing("this dashboard has no broker account to send settings with:"
                                   " start it with `jisaku dashboard` or `jisaku demo`")
        before = (self.store.config_state(device_id) or {}).get("settings", {})
        config = self.publisher.push(self.store, self.registry, device_id, clean)
        after = {key: value for key, value in config.items() if key != "rev"}
        self.audit.record(actor, "device.settings", device_id,
                          {"settings": before}, {"rev": config["rev"], "settings": after})
        return config

    def _must_exist(self, device_id: str) -> DeviceRecord:
        device = self.registry.get(device_id)
        if device is None:
            raise NotFound(f"no device {device_id!r}")
        return device

    # ------------------------------------------------------------ users

    def add_user(self, actor: str, name: str, password: str, role: str) -> None:
        with self._transaction():
            self.accounts.add(name, password, role)
            self.audit.record(actor, "user.add", name, None, {"role": role, "disabled": False})

    def update_user(self, actor: str, name: str, role: str | None = None, disabled: bool | None = None) -> None:
        with self._transaction():
            user = self.accounts.get(name)
            if user is None:
                raise NotFound(f"no user {name!r}")
            before, after = {}, {}
            if role is not None and role != user.role:
                self.accounts.set_role(name, role)
                before["role"], after["role"] = user.role, role
            if disabled is not None and disabled != user.disabled:
                if disabled and name == actor:
                    raise AccountError("you cannot disable your own account; ask another admin")
                self.accounts.set_disabled(name, disabled)
                before["disabled"], after["disabled"] = user.disabled, disabled
            if after:
                self.audit.record(actor, "user.update", name, before, after)
        if disabled:
            self.auth.end_sessions_of(name)


__all__ = ["Operations", "OperationError", "NotFound", "PublisherMissing", "BrokerUnavailable", "DeviceView",
           "SettingLimit", "setting_limits", "check_settings", "device_state"]
