"""The towns one deployment serves: a joint body or a prefecture runs one jisaku for several.

Every device, operator account, alert rule and audit entry belongs to one town (its ``town``
column). Each town has its own public pages under ``/t/<id>/``; the first town also answers
the paths without it, so a deployment with one town keeps its addresses. A database made
before towns existed is the first town, ``main``, with everything in it.

A town's settings (name, base map, licence, where its alerts go) are kept here; one left
empty falls back to ``jisaku.toml``: every one for the first town, so a one-town deployment
keeps being set up there, and only the base map and the licence for the others, so that a
second town never sends its alerts to the first town's staff.

Example::

    towns = Towns(Database(Path("data/jisaku.db")))
    towns.add(Town("shirakawa", name="Shirakawa Village", name_ja="白川村", lat=36.27, lon=136.90))
    [t.id for t in towns.list()]                  # ["main", "shirakawa"]
    towns.settings("shirakawa", settings).name    # "Shirakawa Village"
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

from jisaku.contract.settings import Settings

from .db import Database, write

TOWN_ID = re.compile(r"[a-z][a-z0-9-]{0,31}")
FIRST_TOWN = "main"  # the id an upgraded database's town gets; `jisaku towns set main --id …` renames it

# Every table with a town column; a renamed town is renamed in each, in one transaction.
TOWN_COLUMNS = (("devices", "town"), ("users", "town"), ("alert_rules", "town"), ("audit_log", "town"),
                ("rollouts", "town"), ("town_state", "town"))

# The town of each kind of object, by the object's id: one row if it exists, its town NULL when it is
# no town's (a joint account; an alert or command of a removed device). The operators' guard and the
# audit log both place objects with it.
TOWN_OF_OBJECT = {
    "device": "SELECT town FROM devices WHERE id=?",
    "user": "SELECT town FROM users WHERE name=?",
    "rule": "SELECT town FROM alert_rules WHERE id=?",
    "alert": "SELECT d.town FROM alerts a LEFT JOIN devices d ON d.id = a.device_id WHERE a.id=?",
    "rollout": "SELECT town FROM rollouts WHERE id=?",
    "command": "SELECT d.town FROM commands c LEFT JOIN devices d ON d.id = c.device_id WHERE c.id=?",
    "town": "SELECT id FROM towns WHERE id=?",
}


class TownError(ValueError):
    """A request about towns that cannot be done; the message says what to do instead."""


@dataclass
class Town:
    id: str
    name: str = ""
    name_ja: str = ""
    lat: float | None = None
    lon: float | None = None
    zoom: int | None = None
    tiles: str | None = None              # None: jisaku.toml's
    tiles_attribution: str | None = None
    licence: str | None = None
    notify: dict | None = None            # None: jisaku.toml's [notify] (first town) or nowhere


@dataclass(frozen=True)
class TownSettings:
    """What a town's pages, exports and notifications use, once the empty ones are filled in."""

    id: str
    first: bool                 # answers the paths without /t/<id>/
    name: str                   # "" when neither the town nor jisaku.toml names it
    name_ja: str
    lat: float | None
    lon: float | None
    zoom: int | None
    tiles: str
    tiles_attribution: str
    licence: str
    notify: dict = field(default_factory=dict, hash=False)

    @property
    def base_path(self) -> str:
        """Where its public pages are: "" for the first town (``/``), else ``/t/<id>``."""
        return "" if self.first else f"/t/{self.id}"


def check_town_id(town_id: str) -> None:
    if not isinstance(town_id, str) or not TOWN_ID.fullmatch(town_id):
        raise TownError(f"town id {town_id!r} must be 1-32 of a-z 0-9 - starting with a letter: it is the"
                        " town's web address, /t/<id>/")


class Towns:
    def __init__(self, db: Database):
        self.db = db

    def list(self) -> list[Town]:
        return [_town(row) for row in self.db.connection.execute("SELECT * FROM towns ORDER BY position, id")]

    def ids(self) -> list[str]:
        return [row[0] for row in self.db.connection.execute("SELECT id FROM towns ORDER BY position, id")]

    def get(self, town_id: str) -> Town | None:
        row = self.db.connection.execute("SELECT * FROM towns WHERE id=?", (town_id,)).fetchone()
        return _town(row) if row else None

    def first(self) -> str:
        """The first town's id: where devices and accounts go when no town is named."""
        row = self.db.connection.execute("SELECT id FROM towns ORDER BY position, id LIMIT 1").fetchone()
        if row is None:
            raise TownError("this deployment has no town: add one with `jisaku towns add ID --name NAME`")
        return row[0]

    def must_exist(self, town_id: str) -> Town:
        town = self.get(town_id)
        if town is None:
            raise TownError(f"no town {town_id!r}; `jisaku towns list` shows them")
        return town

    def add(self, town: Town) -> Town:
        check_town_id(town.id)
        if self.get(town.id) is not None:
            raise TownError(f"town {town.id!r} already exists; `jisaku towns set {town.id} …` changes it")
        with write(self.db.connection) as connection:
            position = connection.execute("SELECT coalesce(max(position), -1) + 1 FROM towns").fetchone()[0]
            connection.execute(
                "INSERT INTO towns (id, name, name_ja, lat, lon, zoom, tiles, tiles_attribution, licence, notify,"
                " position, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (town.id, town.name, town.name_ja, town.lat, town.lon, town.zoom, town.tiles, town.tiles_attribution,
                 town.licence, _json(town.notify), position, time.time()))
        return self.must_exist(town.id)

    def update(self, town_id: str, **changes: Any) -> Town:
        """Change some of a town's settings (``name=…``, ``lat=…``); ``id=`` renames it everywhere."""
        town = self.must_exist(town_id)
        unknown = set(changes) - {f.name for f in fields(Town)}
        if unknown:
            raise TownError(f"a town has no {', '.join(sorted(unknown))}")
        new = replace(town, **changes)
        with write(self.db.connection) as connection:
            if new.id != town_id:
                check_town_id(new.id)
                if self.get(new.id) is not None:
                    raise TownError(f"town {new.id!r} already exists")
                connection.execute("UPDATE towns SET id=? WHERE id=?", (new.id, town_id))
                for table, column in TOWN_COLUMNS:
                    connection.execute(f"UPDATE {table} SET {column}=? WHERE {column}=?", (new.id, town_id))
            connection.execute(
                "UPDATE towns SET name=?, name_ja=?, lat=?, lon=?, zoom=?, tiles=?, tiles_attribution=?, licence=?,"
                " notify=? WHERE id=?",
                (new.name, new.name_ja, new.lat, new.lon, new.zoom, new.tiles, new.tiles_attribution, new.licence,
                 _json(new.notify), new.id))
        return self.must_exist(new.id)

    def settings(self, town_id: str, defaults: Settings) -> TownSettings:
        """The town's settings with the empty ones taken from ``jisaku.toml`` (see the module's text)."""
        town = self.must_exist(town_id)
        first = town.id == self.first()

        def either(own, default):
            return own if own not in (None, "") else default

        return TownSettings(
            id=town.id, first=first,
            name=either(town.name, defaults.town if first else town.id),
            name_ja=town.name_ja, lat=town.lat, lon=town.lon, zoom=town.zoom,
            tiles=either(town.tiles, defaults.tiles),
            tiles_attribution=either(town.tiles_attribution, defaults.tiles_attribution),
            licence=either(town.licence, defaults.licence),
            notify=town.notify if town.notify is not None else (dict(defaults.notify) if first else {}),
        )

    def of_device(self, device_id: str) -> str | None:
        row = self.db.connection.execute(TOWN_OF_OBJECT["device"], (device_id,)).fetchone()
        return row[0] if row else None


def _town(row) -> Town:
    return Town(id=row["id"], name=row["name"], name_ja=row["name_ja"], lat=row["lat"], lon=row["lon"],
                zoom=row["zoom"], tiles=row["tiles"], tiles_attribution=row["tiles_attribution"],
                licence=row["licence"], notify=json.loads(row["notify"]) if row["notify"] else None)


def _json(value: dict | None) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)
