"""Which devices exist, who may see them, and how they prove who they are.

Example::

    registry = Registry(Database(Path("data/jisaku.db")))
    secret = registry.add_device(DeviceRecord("snow-1", "snow_gauge", name="Town hall", name_ja="市役所"))
    registry.check_credentials("snow-1", secret)    # True
    new = registry.rotate_secret("snow-1")          # the old secret stops working at once
    registry.revoke("snow-1")                       # no secret works any more

Every change bumps `version()`, so the broker, the Mosquitto sync and the gateway (each
its own process) notice a change made by the command line or the web pages.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from jisaku.contract import protocol

from .db import Database, write
from .secrets import hash_secret, new_secret, verify_secret
from .towns import Towns


@dataclass
class DeviceRecord:
    id: str
    kind: str
    name: str = ""
    public: bool = True
    interval_s: float | None = None
    lat: float | None = None
    lon: float | None = None
    # The name in Japanese, for the Japanese pages; "" shows `name` there too.
    name_ja: str = ""
    # What a kind keeps beyond the fields above (a shelter: its row of the national dataset).
    # None on an update means "leave them as they are".
    attributes: dict | None = None
    # The town it belongs to (towns.py); None when adding: the first town. An update leaves it.
    town: str | None = None
    # A learner's device: the whole pipeline, but never on the residents' pages, open data or feeds.
    # An update leaves it; `set_practice` changes it (promotion).
    practice: bool = False

    @property
    def shown_to_residents(self) -> bool:
        """Whether residents may see it: public, and not a practice device."""
        return self.public and not self.practice


class RegistryError(ValueError):
    pass


# The one test of whether residents may see a device (table alias-free: devices' own columns).
# Every public page, export and feed goes through it, here or in SQLiteStore.latest.
SHOWN_TO_RESIDENTS = "public=1 AND practice=0"
COLUMNS = "id, kind, name, name_ja, public, interval_s, lat, lon, attributes, town, practice"

# How many (stored hash, secret) pairs check_credentials remembers as good.
VERIFIED_CACHE_SIZE = 10_000


class Registry:
    def __init__(self, db: Database):
        self.db = db
        self._seen_version: int | None = None
        self._verified: dict[tuple[str, bytes], bool] = {}

    # ------------------------------------------------------------ change counter

    def version(self) -> int:
        """A number that grows with every add, update, rotation, revocation or removal.

        Cheap (one row): long-running processes poll it, e.g. every second.
        """
        return self.db.connection.execute("SELECT version FROM registry_version WHERE id=1").fetchone()[0]

    def changed(self) -> bool:
        """True if the registry changed since this object last asked (True on the first call)."""
        now = self.version()
        changed, self._seen_version = now != self._seen_version, now
        return changed

    def _write(self, sql: str, params: tuple) -> int:
        """Run one change and bump the version in the same transaction; return the rows changed."""
        # Inside a caller's write() (e.g. with an audit entry) it joins it: both commit together.
        with write(self.db.connection) as connection:
            rows = connection.execute(sql, params).rowcount
            if rows:
                connection.execute("UPDATE registry_version SET version = version + 1 WHERE id=1")
        return rows

    # ------------------------------------------------------------ devices

    def add_device(self, device: DeviceRecord) -> str:
        """Register a device and return its new secret: show it once, it is not kept."""
        if not protocol.DEVICE_ID.match(device.id):
            raise RegistryError(
                f"device id {device.id!r} must be 1-64 of a-z 0-9 . _ - starting with a letter or digit"
            )
        if self.get(device.id) is not None:
            # Ids are unique in the whole deployment (the broker's rules go by them); never say whose it is.
            raise RegistryError(f"device id {device.id!r} is taken: choose another")
        town = device.town or Towns(self.db).first()
        Towns(self.db).must_exist(town)
        secret = new_secret()
        self._write(
            "INSERT INTO devices (id, kind, name, name_ja, public, interval_s, lat, lon, attributes, secret_hash,"
            " created, town, practice) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (device.id, device.kind, device.name, device.name_ja, int(device.public), device.interval_s,
             device.lat, device.lon, _attributes_json(device.attributes), hash_secret(secret), time.time(),
             town, int(device.practice)),
        )
        return secret

    def update_device(self, device: DeviceRecord) -> None:
        """Change what is known about a device; its secret stays (and its attributes, if None)."""
        if device.attributes is not None:
            self._write("UPDATE devices SET attributes=? WHERE id=?", (_attributes_json(device.attributes), device.id))
        self._write(
            "UPDATE devices SET kind=?, name=?, name_ja=?, public=?, interval_s=?, lat=?, lon=? WHERE id=?",
            (device.kind, device.name, device.name_ja, int(device.public), device.interval_s, device.lat,
             device.lon, device.id),
        )

    def set_practice(self, device_id: str, practice: bool) -> None:
        """Make a device a practice device, or (promotion) a production one."""
        if not self._write("UPDATE devices SET practice=? WHERE id=?", (int(practice), device_id)):
            raise RegistryError(f"no device {device_id!r}: jisaku devices list shows the registered ones")

    def set_secret(self, device_id: str, secret: str) -> None:
        """Give a device this secret (the demo keeps its devices' secrets); see rotate_secret."""
        self._write("UPDATE devices SET secret_hash=? WHERE id=?", (hash_secret(secret), device_id))

    def rotate_secret(self, device_id: str) -> str:
        """Give a device a new secret and return it: show it once. The old one stops working now.

        Also re-enables a revoked device. A connected session of the device is cut off by
        the broker (embedded: within a second or so; Mosquitto: at the next `jisaku
        mosquitto sync`), and the device must log in again with the new secret.
        """
        secret = new_secret()
        if not self._write("UPDATE devices SET secret_hash=? WHERE id=?", (hash_secret(secret), device_id)):
            raise RegistryError(f"no device {device_id!r}: jisaku devices list shows the registered ones")
        return secret

    def revoke(self, device_id: str) -> None:
        """Take a device's secret away: it can no longer log in, and a connected session is cut off.

        The device and its data stay; `rotate_secret` gives it a new secret later.
        """
        if not self._write("UPDATE devices SET secret_hash=NULL WHERE id=?", (device_id,)):
            raise RegistryError(f"no device {device_id!r}: jisaku devices list shows the registered ones")

    def is_revoked(self, device_id: str) -> bool:
        """True for a registered device without a secret (revoked); False otherwise."""
        row = self.db.connection.execute("SELECT secret_hash FROM devices WHERE id=?", (device_id,)).fetchone()
        return bool(row) and row[0] is None

    def remove_device(self, device_id: str) -> None:
        """Forget a device: it can no longer log in. Its stored readings stay where they are."""
        if not self._write("DELETE FROM devices WHERE id=?", (device_id,)):
            raise RegistryError(f"no device {device_id!r}: jisaku devices list shows the registered ones")

    def get(self, device_id: str) -> DeviceRecord | None:
        row = self.db.connection.execute(f"SELECT {COLUMNS} FROM devices WHERE id=?", (device_id,)).fetchone()
        return _record(row) if row else None

    def devices(self, public_only: bool = False, town: str | None = None) -> list[DeviceRecord]:
        """Every device, or those residents may see (``public_only``), of one town or of all (None)."""
        sql, params = f"SELECT {COLUMNS} FROM devices WHERE 1=1", []
        if public_only:
            sql += " AND " + SHOWN_TO_RESIDENTS
        if town is not None:
            sql += " AND town=?"
            params.append(town)
        return [_record(row) for row in self.db.connection.execute(sql + " ORDER BY id", params)]

    def known_ids(self) -> set[str]:
        return {row[0] for row in self.db.connection.execute("SELECT id FROM devices")}

    def account_hashes(self) -> dict[str, str]:
        """Every account that may log in (service accounts and devices not revoked): name -> hash.

        What the Mosquitto password file is made of, in one query.
        """
        rows = self.db.connection.execute(
            "SELECT username, secret_hash FROM service_accounts"
            " UNION ALL SELECT id, secret_hash FROM devices WHERE secret_hash IS NOT NULL"
        )
        return {row[0]: row[1] for row in rows}

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
        if not row or not row[0]:
            return False
        # Each check is a PBKDF2 hash; the broker checks every connected client again after
        # any registry change, so remember which (stored hash, secret) pairs already matched.
        # A rotation changes the stored hash, so a remembered pair can never outlive it.
        key = (row[0], hashlib.sha256(secret.encode()).digest())
        if key in self._verified:
            return True
        if not verify_secret(secret, row[0]):
            return False
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[key] = True
        return True

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
            self._write(
                "INSERT OR REPLACE INTO service_accounts (username, secret_hash) VALUES (?, ?)",
                (username, hash_secret(secret)),
            )
        return secret


def _record(row) -> DeviceRecord:
    return DeviceRecord(
        id=row["id"], kind=row["kind"], name=row["name"], public=bool(row["public"]),
        interval_s=row["interval_s"], lat=row["lat"], lon=row["lon"], name_ja=row["name_ja"],
        # None when there are none, as a record made in code has: the two compare equal.
        attributes=json.loads(row["attributes"]) or None,
        town=row["town"], practice=bool(row["practice"]),
    )


def _attributes_json(attributes: dict | None) -> str:
    return json.dumps(attributes or {}, ensure_ascii=False, sort_keys=True)
