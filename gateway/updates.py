"""Offering an update to devices, a few first, and following each device's progress.

An admin starts a **rollout**: one published bundle (kind, version) for every device of the
kind, or for the devices named. With ``first=2`` two devices get the offer first; the rest
get it only once those two have switched and are back online and reporting (``running``).
If one of the first goes back to its old version, refuses, or is not running within
``wait_min``, the rollout **stops** and the rest are never offered it.

The offer travels as a retained message on ``jisaku/<id>/update`` (docs/updates.md)::

    {"offer": 12, "version": "1.4.0", "runs_on": "board", "bytes": 23110,
     "manifest_sha256": "…", "path": "/api/v1/devices/snow-1/bundles/1.4.0", "trial_s": 300}

and the device reports each step as an event ``update`` with ``{"offer": 12, "state": …}``:
downloading, verified, switched, running, rolled_back or refused (with a reason). Only the
gateway publishes offers: the dashboard writes the rollout here, and the gateway's
housekeeping (every few seconds) publishes what is due, advances rollouts and removes the
retained offers of finished updates. So a rollout started while the broker is down goes out
when it is back, and several gateway workers never publish one offer twice.

Example::

    book = UpdateBook(db, BundleStore(Path("data")))
    rollout = book.start("snow_gauge", "1.4.0", devices=None, first=2, wait_min=30, actor="tanaka")
    book.due_offers()            # [(device_id, topic, payload)], for the gateway to publish
    book.advance()               # the rest once the first are running; or stopped
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from typing import Any, Iterable, Literal

from pydantic import BaseModel, Field

from jisaku.contract import protocol
from jisaku.contract.bundles import read_header

from .audit import AuditLog
from .bundle_store import BundleStore
from .db import Database, write

log = logging.getLogger(__name__)

# What a device reports, in the order an update goes through them.
PROGRESS = ("downloading", "verified", "switched", "running")
FINISHED = ("running", "rolled_back", "refused", "withdrawn")
FAILED = ("rolled_back", "refused")
STATES = ("waiting", "offered", *PROGRESS, "rolled_back", "refused", "withdrawn")
TRIAL_S = 300          # a device back within 5 minutes of switching is healthy
WAIT_MIN = 30.0        # the first wave's devices must be running within this (download included)
#: the package itself, for every Pi (a bundle holding jisaku's wheel)
PACKAGE_KIND = "jisaku"
#: the event a device reports each step with
UPDATE_EVENT = "update"

State = Literal["waiting", "offered", "downloading", "verified", "switched", "running", "rolled_back", "refused",
                "withdrawn"]


class UpdateError(ValueError):
    """A rollout that cannot start as asked; the message says what to do instead."""


class NoSuchBundle(UpdateError):
    pass


class DeviceUpdate(BaseModel):
    """One device's offer and how far it got."""

    offer: int = Field(description="the offer id the device reports with")
    rollout: int
    device_id: str
    version: str
    wave: int = Field(description="1: the first devices; 2: the rest, offered once those are running")
    state: State = Field(description="waiting: not offered yet (second wave); offered: sent, nothing heard yet")
    reason: str | None = Field(None, description="refused or rolled back: hash, signature, no_report, crash, …")
    detail: str | None = None
    from_version: str | None = None
    offered_at: float | None = Field(None, description="when the gateway published the offer")
    updated_at: float


class Rollout(BaseModel):
    """An update offered to some devices, a few first; and where it stands."""

    id: int
    kind: str
    version: str
    runs_on: str
    bytes: int
    target: Literal["kind", "devices"]
    first_wave: int = Field(description="how many devices go first; 0: every device at once")
    wait_min: float
    trial_s: int
    state: Literal["running", "done", "stopped"]
    reason: str | None = Field(None, description="why it stopped")
    created_by: str
    created_at: float
    finished_at: float | None = None
    town: str | None = Field(None, description="whose devices it offers to; null: several towns' (a joint body's)")
    counts: dict[str, int] = Field(default_factory=dict, description="devices in each state")
    devices: list[DeviceUpdate] = Field(default_factory=list)


class DeviceSoftware(BaseModel):
    """What a device last said it runs."""

    device_id: str
    runs_on: str | None = None
    version: str | None = Field(None, description="its app's (or firmware's) bundle version; null: as installed")
    fw: str | None = Field(None, description="the jisaku runtime's version")
    updated: float


def offer_payload(offer_id: int, device_id: str, rollout: sqlite3.Row) -> bytes:
    """The retained message on ``jisaku/<id>/update``."""
    return json.dumps({"offer": offer_id, "version": rollout["version"], "runs_on": rollout["runs_on"],
                       "bytes": rollout["bytes"], "manifest_sha256": rollout["manifest_sha256"],
                       "path": f"/api/v1/devices/{device_id}/bundles/{rollout['version']}"
                               # the package's own version may also be an app's: say which is meant
                               + ("?kind=jisaku" if rollout["kind"] == PACKAGE_KIND else ""),
                       "trial_s": rollout["trial_s"]}, separators=(",", ":")).encode()


def save_software(connection: sqlite3.Connection, device_id: str, info: dict[str, Any], received: float) -> None:
    """Keep what a status object said the device runs (in the store's transaction).

    Only a status that says something about it counts: the last will ("offline") says nothing.
    """
    said = {key: info.get(key) for key in ("runs_on", "version", "fw") if key in info}
    if not said:
        return
    values = {key: None if value is None else str(value)[:64] for key, value in said.items()}
    connection.execute(
        "INSERT INTO device_software (device_id, runs_on, version, fw, updated) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (device_id) DO UPDATE SET"
        "  runs_on = COALESCE(excluded.runs_on, device_software.runs_on),"
        "  version = CASE WHEN ? THEN excluded.version ELSE device_software.version END,"
        "  fw = COALESCE(excluded.fw, device_software.fw), updated = excluded.updated",
        (device_id, values.get("runs_on"), values.get("version"), values.get("fw"), received, "version" in values))


def record_progress(connection: sqlite3.Connection, audit: AuditLog,
                    events: Iterable[tuple[str, protocol.Event]]) -> None:
    """File devices' ``update`` events against their offers, in the store's write transaction.

    A report for an offer that is not this device's is logged and ignored; a step reported
    twice (QoS 1 redelivers) or late (``downloading`` after ``running``) does not move the
    state back. ``rolled_back`` and ``refused`` are final and audited.
    """
    for device_id, event in events:
        values = event.values
        state, offer = values.get("state"), values.get("offer")
        if state not in (*PROGRESS, *FAILED) or isinstance(offer, bool) or not isinstance(offer, int | float):
            log.info("%s sent an update event without a known state and offer id: %r", device_id, values)
            continue
        row = connection.execute("SELECT * FROM device_updates WHERE id=?", (int(offer),)).fetchone()
        if row is None or row["device_id"] != device_id:
            log.info("%s reported on update offer %s, which is not its own: ignored", device_id, offer)
            continue
        # A withdrawn offer the device had already taken up goes on: what it does is what happened.
        if row["state"] in ("running", *FAILED) or (state in PROGRESS and row["state"] in PROGRESS
                                        and PROGRESS.index(state) <= PROGRESS.index(row["state"])):
            continue
        reason, detail = _text(values.get("reason")), _text(values.get("detail"))
        connection.execute(
            "UPDATE device_updates SET state=?, reason=COALESCE(?, reason), detail=COALESCE(?, detail),"
            " from_version=COALESCE(?, from_version), updated_at=? WHERE id=?",
            (state, reason, detail, _text(values.get("from")), event.ts, row["id"]))
        if state == "running":
            save_software(connection, device_id, {"version": row["version"]}, event.ts)
        if state in ("running", *FAILED):
            audit.record(device_id, f"update.{state}", device_id, {"state": row["state"]},
                              {"rollout": row["rollout_id"], "offer": row["id"], "version": row["version"],
                               **({"reason": reason, "detail": detail} if state in FAILED else {})})


class UpdateBook:
    """The ``rollouts`` and ``device_updates`` tables."""

    def __init__(self, db: Database, bundles: BundleStore | None = None):
        # ``bundles``: where published bundles are; only starting a rollout needs them.
        self.db = db
        self.bundles = bundles
        self.audit = AuditLog(db)

    # ---------------------------------------------------------------- starting and stopping

    def start(self, kind: str, version: str, devices: list[str] | None, first: int = 0, wait_min: float = WAIT_MIN,
              trial_s: int = TRIAL_S, actor: str = "", now: float | None = None, within: str | None = None) -> Rollout:
        """Offer ``kind``'s bundle ``version`` to ``devices`` (None: every device it fits).

        The first ``first`` devices (0: all) are offered it at once, the rest once those run it.
        Raises :class:`UpdateError` saying why not: no such bundle, a device of another kind,
        or a device in the middle of another update. ``within``: the starting account's town (None:
        every town); only its devices are offered it, and another town's named device is "no device".
        """
        now = time.time() if now is None else now
        path = self.bundles.path_of(kind, version) if self.bundles is not None else None
        if path is None:
            raise NoSuchBundle(f"no bundle {kind} {version} is published: publish it first"
                               " (jisaku bundle publish, or the updates page)")
        with open(path, "rb") as stream:
            header = read_header(stream)
        if first < 0 or wait_min <= 0 or trial_s <= 0:
            raise UpdateError("first must be 0 or more, wait_min and trial_s more than 0")
        with write(self.db.connection) as connection:
            chosen = self._devices_for(connection, kind, header.manifest.runs_on, devices, within)
            # The rollout's town: the account's; a joint body's is its devices' town when they share one.
            towns = {row[0] for row in connection.execute(
                f"SELECT DISTINCT town FROM devices WHERE id IN ({','.join('?' * len(chosen))})", chosen)}
            town = within if within is not None else (next(iter(towns)) if len(towns) == 1 else None)
            unfinished = connection.execute(
                "SELECT u.id, u.device_id, u.version, u.rollout_id, r.state AS rollout_state FROM device_updates u"
                " JOIN rollouts r ON r.id = u.rollout_id WHERE u.state IN ('waiting', 'offered', 'downloading',"
                f" 'verified', 'switched') AND u.device_id IN ({','.join('?' * len(chosen))})", chosen).fetchall()
            busy = [row for row in unfinished if row["rollout_state"] == "running"]
            if busy:
                row = busy[0]
                raise UpdateError(f"{row['device_id']} is being updated to {row['version']} by rollout"
                                  f" {row['rollout_id']}: wait for it or stop that rollout first")
            # Left over from a rollout that is over (a device that was away the whole time): the new
            # offer replaces the old one on the broker, so the old one is withdrawn.
            connection.executemany("UPDATE device_updates SET state='withdrawn', updated_at=? WHERE id=?",
                                   [(now, row["id"]) for row in unfinished])
            cursor = connection.execute(
                "INSERT INTO rollouts (kind, version, runs_on, bytes, manifest_sha256, target, first_wave, wait_min,"
                " trial_s, state, created_by, created_at, town) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (kind, version, header.manifest.runs_on, path.stat().st_size,
                 hashlib.sha256(header.manifest_bytes).hexdigest(), "kind" if devices is None else "devices",
                 first, wait_min, int(trial_s), actor, now, town))
            rollout_id = cursor.lastrowid
            first_wave = len(chosen) if first == 0 else first
            connection.executemany(
                "INSERT INTO device_updates (rollout_id, device_id, version, wave, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(rollout_id, device_id, version, 1 if n < first_wave else 2,
                  "offered" if n < first_wave else "waiting", now) for n, device_id in enumerate(chosen)])
            self.audit.record(actor, "update.start", f"{kind}/{version}", None,
                              {"rollout": rollout_id, "devices": chosen, "first": first, "wait_min": wait_min,
                               "trial_s": trial_s})
        return self.rollout(rollout_id)

    def _devices_for(self, connection: sqlite3.Connection, kind: str, runs_on: str,
                     named: list[str] | None, within: str | None = None) -> list[str]:
        """The devices to offer to: those named (each checked), or every device the bundle fits;
        of the town ``within`` only (None: every town)."""
        rows = connection.execute(
            "SELECT d.id, d.kind, s.runs_on FROM devices d LEFT JOIN device_software s ON s.device_id = d.id"
            " WHERE ? IS NULL OR d.town = ? ORDER BY d.id", (within, within)).fetchall()
        fits = {row["id"]: row for row in rows
                if (row["kind"] == kind or kind == PACKAGE_KIND) and row["runs_on"] in (runs_on, None)}
        if named is None:
            # A device that never said what it runs could be a board or a Pi: name it to include it.
            chosen = [device_id for device_id, row in fits.items() if row["runs_on"] == runs_on]
            if not chosen:
                raise UpdateError(f"no device of kind {kind} has said it runs on a {runs_on}: nothing to offer"
                                  " (a device says so in its status once it runs this version of jisaku)")
            return chosen
        chosen = list(dict.fromkeys(named))
        if not chosen:
            raise UpdateError("name at least one device")
        known = {row["id"]: row for row in rows}
        for device_id in chosen:
            if device_id not in known:
                raise UpdateError(f"no device {device_id!r}")
            if device_id not in fits:
                row = known[device_id]
                if row["kind"] != kind and kind != PACKAGE_KIND:
                    raise UpdateError(f"{device_id} is a {row['kind']}: a {kind} bundle is not for it")
                raise UpdateError(f"{device_id} runs on a {row['runs_on']}: this bundle is for a {runs_on}")
        return chosen

    def stop(self, rollout_id: int, actor: str, reason: str = "stopped by an operator",
             now: float | None = None) -> Rollout:
        """Stop a rollout: devices not yet downloading are not offered it (any more)."""
        now = time.time() if now is None else now
        with write(self.db.connection) as connection:
            row = connection.execute("SELECT * FROM rollouts WHERE id=?", (rollout_id,)).fetchone()
            if row is None:
                raise UpdateError(f"no rollout {rollout_id}")
            if row["state"] == "running":
                self._stop(connection, row, reason, actor, now)
        return self.rollout(rollout_id)

    def _stop(self, connection: sqlite3.Connection, rollout: sqlite3.Row, reason: str, actor: str,
              now: float) -> None:
        withdrawn = [r["device_id"] for r in connection.execute(
            "SELECT device_id FROM device_updates WHERE rollout_id=? AND state IN ('waiting', 'offered')",
            (rollout["id"],))]
        # A device already downloading goes on: its own checks and trial keep it safe.
        connection.execute("UPDATE device_updates SET state='withdrawn', updated_at=? WHERE rollout_id=?"
                           " AND state IN ('waiting', 'offered')", (now, rollout["id"]))
        connection.execute("UPDATE rollouts SET state='stopped', reason=?, finished_at=? WHERE id=?",
                           (reason, now, rollout["id"]))
        self.audit.record(actor, "update.stop", f"{rollout['kind']}/{rollout['version']}", {"state": "running"},
                          {"rollout": rollout["id"], "state": "stopped", "reason": reason, "withdrawn": withdrawn})
        log.warning("rollout %s (%s %s) stopped: %s", rollout["id"], rollout["kind"], rollout["version"], reason)

    # ---------------------------------------------------------------- what devices report

    # ---------------------------------------------------------------- the gateway's rounds

    def due_offers(self, now: float | None = None) -> list[tuple[int, str, bytes]]:
        """Offers to publish now, each claimed so that no other gateway publishes it too:
        ``[(offer id, topic, payload)]``. Give back the ones the broker did not take with
        :meth:`unsent`."""
        now = time.time() if now is None else now
        with write(self.db.connection) as connection:
            rows = connection.execute(
                "SELECT u.id, u.device_id, r.* FROM device_updates u JOIN rollouts r ON r.id = u.rollout_id"
                " WHERE u.state='offered' AND u.offered_at IS NULL").fetchall()
            connection.executemany("UPDATE device_updates SET offered_at=? WHERE id=?",
                                   [(now, row[0]) for row in rows])
        return [(row[0], protocol.topic(row[1], "update"), offer_payload(row[0], row[1], row)) for row in rows]

    def unsent(self, offer_ids: list[int]) -> None:
        """The broker did not take these offers: publish them again next round."""
        with write(self.db.connection) as connection:
            connection.executemany("UPDATE device_updates SET offered_at=NULL WHERE id=? AND state='offered'",
                                   [(offer_id,) for offer_id in offer_ids])

    def waiting_offer(self, device_id: str) -> tuple[str, bytes] | None:
        """``(topic, payload)`` of an offer published to ``device_id`` that it has not taken up yet
        (to send again on a broker that keeps retained messages per node), or None."""
        row = self.db.connection.execute(
            "SELECT u.id, u.device_id, r.* FROM device_updates u JOIN rollouts r ON r.id = u.rollout_id"
            " WHERE u.device_id=? AND u.state='offered' AND u.offered_at IS NOT NULL ORDER BY u.id DESC LIMIT 1",
            (device_id,)).fetchone()
        return None if row is None else (protocol.topic(device_id, "update"), offer_payload(row[0], device_id, row))

    def due_clears(self) -> list[tuple[int, str]]:
        """Retained offers to remove from the broker (the update is over): ``[(offer id, topic)]``,
        claimed like :meth:`due_offers`."""
        with write(self.db.connection) as connection:
            rows = connection.execute(
                "SELECT u.id, u.device_id FROM device_updates u WHERE u.cleared=0 AND u.offered_at IS NOT NULL"
                f" AND u.state IN ({','.join('?' * len(FINISHED))})"
                # a newer offer to the same device replaced the retained message already
                " AND NOT EXISTS (SELECT 1 FROM device_updates n WHERE n.device_id = u.device_id AND n.id > u.id"
                "                 AND n.offered_at IS NOT NULL)", FINISHED).fetchall()
            connection.executemany("UPDATE device_updates SET cleared=1 WHERE id=?", [(row[0],) for row in rows])
        return [(row[0], protocol.topic(row[1], "update")) for row in rows]

    def advance(self, now: float | None = None) -> None:
        """Move every running rollout on: stop it if its first devices failed or are late; offer
        the rest once the first are running; mark it done when every device has finished."""
        now = time.time() if now is None else now
        with write(self.db.connection) as connection:
            for rollout in connection.execute("SELECT * FROM rollouts WHERE state='running'").fetchall():
                rows = connection.execute("SELECT * FROM device_updates WHERE rollout_id=? ORDER BY id",
                                          (rollout["id"],)).fetchall()
                first = [row for row in rows if row["wave"] == 1]
                why = _why_stop(first, rollout["wait_min"] * 60, now)
                if why is not None and any(row["wave"] == 2 for row in rows):
                    self._stop(connection, rollout, why, "gateway", now)
                    continue
                if all(row["state"] == "running" for row in first):
                    connection.execute("UPDATE device_updates SET state='offered', updated_at=? WHERE rollout_id=?"
                                       " AND state='waiting'", (now, rollout["id"]))
                late = {row["id"] for row in rows if row["offered_at"] is not None
                        and now - row["offered_at"] > rollout["wait_min"] * 60}
                if all(row["state"] in FINISHED or row["id"] in late for row in rows):
                    connection.execute("UPDATE rollouts SET state='done', finished_at=? WHERE id=?",
                                       (now, rollout["id"]))

    # ---------------------------------------------------------------- reading

    def rollout(self, rollout_id: int) -> Rollout | None:
        row = self.db.connection.execute("SELECT * FROM rollouts WHERE id=?", (rollout_id,)).fetchone()
        return None if row is None else self._rollout(row, with_devices=True)

    def rollouts(self, limit: int = 50, town: str | None = None) -> list[Rollout]:
        """The newest rollouts first, with how many devices are in each state; of one town when given."""
        rows = self.db.connection.execute("SELECT * FROM rollouts WHERE ? IS NULL OR town = ? ORDER BY id DESC"
                                          " LIMIT ?", (town, town, limit)).fetchall()
        return [self._rollout(row, with_devices=False) for row in rows]

    def for_device(self, device_id: str, limit: int = 10) -> list[DeviceUpdate]:
        """A device's offers, newest first."""
        rows = self.db.connection.execute(
            "SELECT * FROM device_updates WHERE device_id=? ORDER BY id DESC LIMIT ?", (device_id, limit)).fetchall()
        return [_device_update(row) for row in rows]

    def software(self, device_id: str) -> DeviceSoftware | None:
        row = self.db.connection.execute("SELECT * FROM device_software WHERE device_id=?", (device_id,)).fetchone()
        return None if row is None else DeviceSoftware(**dict(row))

    def _rollout(self, row: sqlite3.Row, with_devices: bool) -> Rollout:
        updates = [_device_update(r) for r in self.db.connection.execute(
            "SELECT * FROM device_updates WHERE rollout_id=? ORDER BY wave, device_id", (row["id"],))]
        counts: dict[str, int] = {}
        for update in updates:
            counts[update.state] = counts.get(update.state, 0) + 1
        fields = {key: row[key] for key in row.keys() if key != "manifest_sha256"}
        return Rollout(**fields, counts=counts, devices=updates if with_devices else [])


def _why_stop(first: list[sqlite3.Row], wait_s: float, now: float) -> str | None:
    """Why the rest must not get it: a first device failed, or is not running in time."""
    for row in first:
        if row["state"] in FAILED:
            said = f" ({row['reason']}: {row['detail']})" if row["detail"] else f" ({row['reason']})"
            word = "went back to its old version" if row["state"] == "rolled_back" else "refused it"
            return f"{row['device_id']} {word}{said if row['reason'] else ''}"
    for row in first:
        if row["state"] != "running" and row["offered_at"] is not None and now - row["offered_at"] > wait_s:
            return (f"{row['device_id']} was not back and running within {wait_s / 60:g} min"
                    f" (last heard: {row['state']})")
    return None


def _device_update(row: sqlite3.Row) -> DeviceUpdate:
    return DeviceUpdate(offer=row["id"], rollout=row["rollout_id"], device_id=row["device_id"],
                        version=row["version"], wave=row["wave"], state=row["state"], reason=row["reason"],
                        detail=row["detail"], from_version=row["from_version"], offered_at=row["offered_at"],
                        updated_at=row["updated_at"])


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:protocol.MAX_TEXT_VALUE]
