"""The alert engine: judges what the gateway stores against the alert rules.

It runs in the gateway (each worker of ``jisaku gateway --workers N`` has one) and
keeps everything in SQLite through :class:`jisaku.gateway.alerts.AlertBook`. The
rules are in alert_rules.py; what is remembered between readings, and why, is in
docs/alerts.md ("For developers")::

    engine = AlertEngine(db, Registry(db), notifier)
    gateway.listeners.append(engine.on_batch)
    engine.start()       # the clock for no-data and minimum-duration rules, and the notifier
    ...
    engine.stop()

or, wired to a gateway and its ``[notify]`` settings in one call::

    engine = start_alerts(gateway, settings.notify)
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from jisaku.contract import protocol
from jisaku.contract.geo import distance_m

from .alert_rules import NotMoved, OnEvent, Rule
from .alert_words import Wording, held
from .alerts import Alert, AlertBook, AlertChange, local_time
from .areas import Area, parse_area
from .db import Database
from .notify_config import NotifyConfig
from .notify_outbox import Notifier
from .registry import Registry
from .rule_actions import RuleActions
from .store import Batch

log = logging.getLogger(__name__)

# How often the engine's clock runs tick() (no data, minimum durations, rule changes).
TICK_S = 5.0


@dataclass
class _Track:
    """What the engine remembers about one rule and one device between readings (kept in alert_tracks)."""

    pending_since: float | None = None   # the condition has held since then (for for_min)
    pending_message: Wording | None = None
    pending_value: Any = None
    last_ts: float = 0.0                 # newest reading judged (older, late ones are skipped)
    anchor: tuple[float, float] | None = None   # not_moved: where the vehicle stopped...
    anchor_ts: float = 0.0                      # ...and since when


class _Tracks(dict):
    """The tracks of some rules and devices, read and written back in the caller's write transaction."""

    COLUMNS = ("rule_id, device_id, pending_since, pending_message, pending_value, last_ts,"
               " anchor_lat, anchor_lon, anchor_ts")

    def __init__(self, connection: sqlite3.Connection, where: str = "1=1", args: tuple = ()):
        super().__init__()
        self._saved: dict[tuple[int, str], tuple] = {}
        for row in connection.execute(f"SELECT {self.COLUMNS} FROM alert_tracks WHERE {where}", args):
            row = tuple(row)
            self._saved[row[0], row[1]] = row
            (_, _, pending_since, pending_message, pending_value, last_ts, lat, lon, anchor_ts) = row
            self[row[0], row[1]] = _Track(
                pending_since, None if pending_message is None else tuple(json.loads(pending_message)),
                None if pending_value is None else json.loads(pending_value),
                last_ts, None if lat is None else (lat, lon), anchor_ts)

    def __missing__(self, key: tuple[int, str]) -> _Track:
        track = self[key] = _Track()
        return track

    def save(self, connection: sqlite3.Connection) -> None:
        rows = []
        for key, t in self.items():
            lat, lon = t.anchor if t.anchor is not None else (None, None)
            value = None if t.pending_value is None else json.dumps(t.pending_value)
            message = None if t.pending_message is None else json.dumps(t.pending_message, ensure_ascii=False)
            row = (*key, t.pending_since, message, value, t.last_ts, lat, lon, t.anchor_ts)
            if self._saved.get(key) != row:
                rows.append(row)
                self._saved[key] = row
        connection.executemany(f"INSERT OR REPLACE INTO alert_tracks ({self.COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                               rows)


def _event_wording(event: protocol.Event) -> Wording:
    """What an alert says of an event: its name and the device's own words ("down: check router,
    reason connection refused")."""
    if not event.values:
        return ("event", {"event": event.name})
    details = ", ".join(f"{key} {value}" for key, value in event.values.items())
    return ("event_with", {"event": event.name, "details": details})


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


class AlertEngine:
    """Judges every stored batch against the rules; see the module's docstring."""

    def __init__(self, db: Database, registry: Registry | None = None,
                 notifier: Notifier | None = None, tick_s: float = TICK_S, actions: RuleActions | None = None):
        self.book = AlertBook(db)
        # Rules that switch an output (rule_actions.py); None: their actions are not carried out here.
        self.actions = actions
        self.registry = registry or Registry(db)
        self.notifier = notifier
        self.tick_s = tick_s
        self._lock = threading.RLock()
        self._rules: list[Rule] = []
        self._rules_rev = -1
        self._kinds: dict[str, str] = {}
        self._towns: dict[str, str] = {}  # each device's town: a kind rule watches its own town's only
        # Newest reading per device (no_data); devices never heard from count from when first seen here.
        self._last_seen: dict[str, float] = {
            row["device_id"]: row["ts"] for row in db.connection.execute("SELECT device_id, ts FROM latest")}
        self._first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._clock: threading.Thread | None = None
        self._reload(time.time())

    # ------------------------------------------------------------ the operator pages' API

    def rules(self) -> list[Rule]:
        return self.book.rules()

    def add_rule(self, rule: Rule | dict[str, Any]) -> Rule:
        rule = self.book.add_rule(rule)
        self._reload_soon()
        return rule

    def update_rule(self, rule_id: int, rule: Rule | dict[str, Any], user: str | None = None) -> Rule:
        rule = self.book.update_rule(rule_id, rule, user)
        self._reload_soon()
        return rule

    def delete_rule(self, rule_id: int, user: str | None = None) -> None:
        self.book.delete_rule(rule_id, user)
        self._reload_soon()

    def acknowledge(self, alert_id: int, user: str) -> Alert:
        alert = self.book.acknowledge(alert_id, user)
        self._notified()
        return alert

    def alerts(self, active_only: bool = False, device_id: str | None = None, limit: int = 200) -> list[Alert]:
        return self.book.alerts(active_only, device_id, limit)

    def history(self, **filters: Any) -> list[AlertChange]:
        return self.book.history(**filters)

    # ------------------------------------------------------------ running

    def start(self) -> None:
        """Start the clock thread (and the notifier's sender, when there is one)."""
        if self.notifier is not None:
            self.notifier.start()
        self._stop.clear()
        self._clock = threading.Thread(target=self._clock_loop, name="alert-clock", daemon=True)
        self._clock.start()

    def stop(self) -> None:
        self._stop.set()
        if self._clock is not None:
            self._clock.join(timeout=10)
            self._clock = None
        if self.notifier is not None:
            self.notifier.stop()

    def _clock_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick(time.time())
            except Exception:  # keep the clock going; the next tick may well work
                log.exception("alert tick failed")

    # ------------------------------------------------------------ judging

    def on_batch(self, batch: Batch) -> None:
        """Judge a stored batch's readings and events (the gateway's writer thread calls this:
        no network here)."""
        if not batch.readings and not batch.events:
            return
        with self._lock:
            now = time.time()
            self._reload_if_changed(now)
            by_device: dict[str, list[protocol.Reading]] = {}
            for device_id, reading in batch.readings:
                by_device.setdefault(device_id, []).append(reading)
            events: dict[str, list[protocol.Event]] = {}
            if any(rule.condition.type == "event" for rule in self._rules):
                for device_id, event in batch.events:
                    events.setdefault(device_id, []).append(event)
            if any(device_id not in self._kinds for device_id in [*by_device, *events]):
                self._reload_devices(now)
            to_judge = []
            for device_id in [*by_device, *(d for d in events if d not in by_device)]:
                readings = sorted(by_device.get(device_id, []), key=lambda r: r.ts)
                if readings:
                    self._last_seen[device_id] = max(self._last_seen.get(device_id, 0.0), readings[-1].ts)
                rules = [r for r in self._rules
                         if r.applies_to(device_id, self._kinds.get(device_id), self._towns.get(device_id))]
                if rules:
                    to_judge.append((device_id, readings, sorted(events.get(device_id, []), key=lambda e: e.ts),
                                     rules))
            if not to_judge:  # most batches: no rule applies, no transaction
                return
            changed = False
            with self.book.writing() as connection:
                devices = [device_id for device_id, _, _, _ in to_judge]
                tracks = _Tracks(connection, f"device_id IN ({','.join('?' * len(devices))})", tuple(devices))
                open_alerts = self.book.open_alerts(connection)
                for device_id, readings, device_events, rules in to_judge:
                    for rule in rules:
                        track = tracks[(rule.id, device_id)]
                        if isinstance(rule.condition, OnEvent):
                            for event in device_events:
                                changed |= self._judge_event(connection, rule, device_id, event, open_alerts, track)
                            continue
                        for reading in readings:
                            changed |= self._judge(connection, rule, device_id, reading, open_alerts, track)
                tracks.save(connection)
            if changed:
                self._notified()
                self._act(now)

    def tick(self, now: float) -> None:
        """Judge what depends on time passing: no data for N minutes, minimum durations; send the
        rules' switches that were held back or that a device missed while it was offline."""
        with self._lock:
            self._reload_if_changed(now)
            self._reload_devices(now)
            with self.book.writing() as connection:
                changed = self._tick(connection, now)
            if changed:
                self._notified()
            self._act(now)

    def _act(self, now: float) -> None:
        """Carry out the rules' actions (after the judging's transaction: sending must not hold it)."""
        if self.actions is None:
            return
        try:
            self.actions.run(self._rules, now)
        except Exception:  # switching must never stop alerts being judged
            log.exception("an alert rule's action failed")

    def _tick(self, connection: sqlite3.Connection, now: float) -> bool:
        open_alerts = self.book.open_alerts(connection)
        # Other gateway workers (jisaku gateway --workers) store readings this one never sees.
        for device_id, ts in connection.execute("SELECT device_id, ts FROM latest"):
            self._last_seen[device_id] = max(self._last_seen.get(device_id, 0.0), ts)
        changed = False
        for (_, device_id), alert in list(open_alerts.items()):
            if device_id not in self._kinds:
                self.book.clear_alert(alert, now, ("device_removed", {}), None, connection)
                changed = True
        connection.execute("DELETE FROM alert_tracks WHERE device_id NOT IN (SELECT id FROM devices)")
        tracks = _Tracks(connection, "pending_since IS NOT NULL")
        # A revoked device may not send: its silence is no news.
        revoked = {row[0] for row in connection.execute("SELECT id FROM devices WHERE secret_hash IS NULL")}
        for rule in self._rules:
            if not rule.enabled:
                continue
            condition = rule.condition
            for device_id, kind in self._kinds.items():
                if not rule.applies_to(device_id, kind, self._towns.get(device_id)):
                    continue
                key = (rule.id, device_id)
                if condition.type == "no_data" and device_id not in revoked:
                    heard = device_id in self._last_seen
                    last = self._last_seen[device_id] if heard else self._first_seen.get(device_id, now)
                    silent_min = (now - last) / 60
                    if key not in open_alerts and silent_min >= condition.minutes:
                        wording = (("no_data", {"min": round(silent_min), "last": local_time(last)}) if heard
                                   else ("no_data_ever", {"min": round(silent_min)}))
                        changed |= self._raise(connection, rule, device_id, now, open_alerts, wording,
                                               {"last_reading": last if heard else None})
                elif getattr(condition, "for_min", 0) > 0 and key in tracks:
                    track = tracks[key]
                    if key not in open_alerts and now - track.pending_since >= condition.for_min * 60:
                        held_min = (now - track.pending_since) / 60
                        changed |= self._raise(connection, rule, device_id, now, open_alerts,
                                               held(track.pending_message, held_min), track.pending_value, track)
        changed |= self._quiet_events(connection, now, open_alerts)
        tracks.save(connection)
        return changed

    def _judge(self, connection: sqlite3.Connection, rule: Rule, device_id: str, reading: protocol.Reading,
               open_alerts: dict[tuple[int, str], Alert], track: _Track) -> bool:
        """One reading against one rule: raise or clear an alert; True if either happened."""
        key = (rule.id, device_id)
        if reading.ts < track.last_ts:
            return False
        track.last_ts = reading.ts
        active = key in open_alerts
        condition = rule.condition
        # verdict: True = the alarming condition holds, False = all clear, None = nothing to say
        verdict, message, value = None, None, None
        if condition.type in ("above", "below"):
            v = reading.values.get(condition.metric)
            if not _number(v):
                return False
            value = v
            sign = 1 if condition.type == "above" else -1  # "below" is "above" for -value
            if active:
                verdict = sign * v >= sign * condition.clear_at
                message = ("back_below" if sign > 0 else "back_above",
                           {"metric": condition.metric, "value": v, "level": condition.clear_at})
            else:
                verdict = sign * v >= sign * condition.raise_at
                message = ("above" if sign > 0 else "below",
                           {"metric": condition.metric, "value": v, "level": condition.raise_at})
        elif condition.type == "no_data":
            verdict, message = False, ("data_again", {})
        else:
            position = reading.position
            if position is None:
                return False
            value = {"lat": position[0], "lon": position[1]}
            if condition.type == "not_moved":
                verdict, message = self._stood_still(condition, track, reading.ts, position)
            else:
                area = self._areas.get(rule.id) or parse_area(condition.area)
                inside = area.contains(*position)
                verdict = inside == (condition.alert_when == "inside")
                message = ("entered", {}) if inside else ("left", {})
        if verdict is None:
            return False
        if active:
            track.pending_since = None
            if not verdict:
                self.book.clear_alert(open_alerts.pop(key), reading.ts, message, value, connection)
                return True
            return False
        if not verdict:
            track.pending_since = None
            return False
        for_min = getattr(condition, "for_min", 0)
        if track.pending_since is None:
            track.pending_since = reading.ts
        track.pending_message, track.pending_value = message, value
        if reading.ts - track.pending_since >= for_min * 60:
            if for_min:
                message = held(message, (reading.ts - track.pending_since) / 60)
            return self._raise(connection, rule, device_id, reading.ts, open_alerts, message, value, track)
        return False

    def _judge_event(self, connection: sqlite3.Connection, rule: Rule, device_id: str, event: protocol.Event,
                     open_alerts: dict[tuple[int, str], Alert], track: _Track) -> bool:
        """One event against an ``event`` rule: raise or clear an alert; True if either happened."""
        condition: OnEvent = rule.condition
        if event.name not in (condition.event, condition.clear_event) or not condition.matches(event.values):
            return False
        if event.ts < track.last_ts:  # an "up" sent before the "down" that raised the alert
            return False
        track.last_ts = event.ts
        key = (rule.id, device_id)
        said = _event_wording(event)
        if event.name == condition.event:
            if key in open_alerts:  # still down: one alert, not one per event
                return False
            return self._raise(connection, rule, device_id, event.ts, open_alerts, said, event.values)
        if key not in open_alerts:
            return False
        self.book.clear_alert(open_alerts.pop(key), event.ts, said, event.values, connection)
        return True

    def _quiet_events(self, connection: sqlite3.Connection, now: float,
                      open_alerts: dict[tuple[int, str], Alert]) -> bool:
        """Clear ``event`` alerts whose event has not come again for ``clear_after_min``."""
        changed = False
        rules = {rule.id: rule for rule in self._rules
                 if isinstance(rule.condition, OnEvent) and rule.condition.clear_after_min}
        for (rule_id, device_id), alert in list(open_alerts.items()):
            rule = rules.get(rule_id)
            if rule is None:
                continue
            condition: OnEvent = rule.condition
            newest = alert.raised
            for ts, values in connection.execute(
                    "SELECT ts, v FROM events WHERE device_id = ? AND event = ? AND ts > ? ORDER BY ts DESC LIMIT 50",
                    (device_id, condition.event, alert.raised)):
                if condition.matches(json.loads(values)):
                    newest = ts
                    break
            quiet_min = (now - newest) / 60
            if quiet_min >= condition.clear_after_min:
                self.book.clear_alert(open_alerts.pop((rule_id, device_id)), now,
                                      ("event_quiet", {"event": condition.event, "min": round(quiet_min)}), None,
                                      connection)
                changed = True
        return changed

    @staticmethod
    def _stood_still(condition: NotMoved, track: _Track, ts: float,
                     position: tuple[float, float]) -> tuple[bool | None, Wording | None]:
        if track.anchor is None:
            # The first position since start: no idea yet how long it has stood here.
            track.anchor, track.anchor_ts = position, ts
            return None, None
        moved_m = distance_m(*track.anchor, *position)
        if moved_m > condition.radius_m:
            track.anchor, track.anchor_ts = position, ts
            return False, ("moving_again", {"moved": round(moved_m)})
        still_min = (ts - track.anchor_ts) / 60
        if still_min >= condition.minutes:
            return True, ("not_moved", {"radius": condition.radius_m, "min": round(still_min)})
        return None, None

    def _raise(self, connection: sqlite3.Connection, rule: Rule, device_id: str, ts: float,
               open_alerts: dict[tuple[int, str], Alert], message: Wording, value: Any,
               track: _Track | None = None) -> bool:
        alert = self.book.raise_alert(rule, device_id, ts, message, value, connection)
        if track is not None:
            track.pending_since = None
        if alert is None:
            return False
        open_alerts[(rule.id, device_id)] = alert
        return True

    # ------------------------------------------------------------ keeping up with changes

    def _reload_soon(self) -> None:
        with self._lock:
            self._rules_rev = -1

    def _reload_if_changed(self, now: float) -> None:
        if self.book.rules_revision() != self._rules_rev:
            self._reload(now)

    def _reload(self, now: float) -> None:
        with self._lock:
            self._rules_rev = self.book.rules_revision()
            self._rules = self.book.rules()
            self._areas: dict[int, Area] = {}
            for rule in self._rules:
                if rule.condition.type == "area":
                    self._areas[rule.id] = parse_area(rule.condition.area)
            self._reload_devices(now)

    def _reload_devices(self, now: float) -> None:
        devices = self.registry.devices()
        self._kinds = {device.id: device.kind for device in devices}
        self._towns = {device.id: device.town for device in devices}
        for device_id in self._kinds:
            self._first_seen.setdefault(device_id, now)

    def _notified(self) -> None:
        if self.notifier is not None:
            self.notifier.wake()


# ---------------------------------------------------------------- wiring


def start_alerts(gateway: Any, notify_settings: dict[str, Any] | None = None) -> AlertEngine:
    """Attach an alert engine (its notifier, and its rules' switching) to a gateway and start it;
    stop it with ``.stop()``.

    ``notify_settings`` is the ``[notify]`` table of ``jisaku.toml`` (``settings.notify``).
    """
    db = gateway.store.db
    config = NotifyConfig.from_settings(notify_settings)
    notifier = Notifier(db, config, publish=getattr(gateway, "publish", None))
    actions = RuleActions(db, gateway.send_command) if hasattr(gateway, "send_command") else None
    engine = AlertEngine(db, gateway.registry, notifier, actions=actions)
    gateway.listeners.append(engine.on_batch)
    engine.start()
    return engine
