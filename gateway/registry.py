"""Which devices exist, who may see them, and how they prove who they are.

Example::

    registry = Registry(Database(Path("data/jisaku.db")))
    secret = registry.add_device(DeviceRecord("snow-1", "snow_gauge", name="Town hall"))
    registry.check_credentials("snow-1", secret)    # True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from jisaku.device import protocol

from .db import Database
from .secrets import hash_secret, new_secret, verify_secret


@dataclass
class DeviceRecord:
    id: str
    kind: str
    name: str = ""
    public: bool = True
    interval_s: float | None = None
    lat: float | None = None
    lon: float | None = None


class RegistryError(ValueError):
    pass


class Registry:
    def __init__(self, db: Database):
        self.db = db

    # ------------------------------------------------------------ devices

    def add_device(self, device: DeviceRecord) -> str:
        """Register a device and return its new secret: show it once, it is not kept."""
        if not protocol.DEVICE_ID.match(device.id):
            raise RegistryError(
                f"device id {device.id!r} must be 1-64 of a-z 0-9 . _ - starting with a letter or digit"
            )
        if self.get(device.id) is not None:
            raise RegistryError(f"device {device.id!r} is already registered")
        secret = new_secret()
        self.db.connection.execute(
            "INSERT INTO devices (id, kind, name, public, interval_s, lat, lon, secret_hash, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (device.id, device.kind, device.name, int(device.public), device.interval_s,
             device.lat, device.lon, hash_secret(secret), time.time()),
        )
        return secret

    def update_device(self, device: DeviceRecord) -> None:
        """Change what is known about a device; its secret stays."""
        self.db.connection.execute(
            "UPDATE devices SET kind=?, name=?, public=?, interval_s=?, lat=?, lon=? WHERE id=?",
            (device.kind, device.name, int(device.public), device.interval_s, device.lat, device.lon, device.id),
        )

    def set_secret(self, device_id: str, secret: str) -> None:
        self.db.connection.execute(
            "UPDATE devices SET secret_hash=? WHERE id=?", (hash_secret(secret), device_id)
        )

    def get(self, device_id: str) -> DeviceRecord | None:
        row = self.db.connection.execute(
            "SELECT id, kind, name, public, interval_s, lat, lon FROM devices WHERE id=?", (device_id,)
        ).fetchone()
        return _record(row) if row else None

    def devices(self, public_only: bool = False) -> list[DeviceRecord]:
        sql = "SELECT id, kind, name, public, interval_s, lat, lon FROM devices"
        if public_only:
            sql += " WHERE public=1"
        return [_record(row) for row in self.db.connection.execute(sql + " ORDER BY id")]

    def known_ids(self) -> set[str]:
        return {row[0] for row in self.db.connection.execute("SELECT id FROM devices")}

    # ------------------------------------------------------------ broker accounts

    def check_credentials(self, username: str, secret: str) -> bool:
        """What the broker asks on every connection: is this the device (or service) it says?"""
        if not username or secret is None:
            return False
        if username.startswith("_"):
            sql = "SELECT secret_hash FROM service_accounts WHERE username=?"
        else:
            sql = "SELECT secret_hash FROM devices WHERE id=?"
        row = self.db.connection.execute(sql, (username,)).fetchone()
        return bool(row) and verify_secret(secret, row[0])

    def service_secret(self, username: str, secrets_dir: Path) -> str:
        """The secret of a service account such as ``_gateway``, made on first use.

        The plain secret lives in ``secrets_dir`` (readable by its owner only) for
        the service to log in with; the registry keeps only its hash.
        """
        if not username.startswith("_"):
            raise RegistryError("service account names start with '_'")
        secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = secrets_dir / f"{username.lstrip('_')}.secret"
        if path.exists():
            secret = path.read_text().strip()
        else:
            secret = new_secret()
            path.touch(mode=0o600)
            path.write_text(secret + "\n")
        row = self.db.connection.execute(
            "SELECT secret_hash FROM service_accounts WHERE username=?", (username,)
        ).fetchone()
        if not row or not verify_secret(secret, row[0]):
            self.db.connection.execute(
                "INSERT OR REPLACE INTO service_accounts (username, secret_hash) VALUES (?, ?)",
                (username, hash_secret(secret)),
            )
        return secret


def _record(row) -> DeviceRecord:
    return DeviceRecord(
        id=row["id"], kind=row["kind"], name=row["name"], public=bool(row["public"]),
        interval_s=row["interval_s"], lat=row["lat"], lon=row["lon"],
    )
