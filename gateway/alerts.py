"""The alert book: rules, alerts and their history, in SQLite, for any process.

Each alert goes raised → (acknowledged) → cleared; every step is kept in the
history and queued as a notification (notify_outbox.py). The operator pages change
rules and acknowledge alerts through gateway/changes.py; the gateway's
:class:`jisaku.gateway.alert_engine.AlertEngine` judges readings and raises and
clears alerts here. How it all behaves (restarts, several workers): docs/alerts.md.

Example::

    book = AlertBook(Database(Path("data/jisaku.db")))
    rule = book.add_rule({"name": "Deep snow", "kind": "snow_gauge", "condition": {
        "type": "above", "metric": "depth_cm", "raise_at": 30, "clear_at": 25}})
    book.alerts(active_only=True)              # list[Alert], newest first
    book.acknowledge(alert_id, user="tanaka")  # AlertNotFound / AlertError if it cannot be
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import sqlite3
import time
from typing import Any, Literal

from pydantic import BaseModel

from .alert_rules import Rule, RuleError
from .alert_words import LANGUAGES, Wording, say
from .commands import known_outputs
from .db import Database, write
from .notify_outbox import enqueue
from .notify_routes import route_for

log = logging.getLogger(__name__)


class AlertNotFound(LookupError):
    pass


class AlertError(ValueError):
    """An alert that cannot be acknowledged: already cleared, or already acknowledged."""


class Alert(BaseModel):
    id: int
    rule_id: int
    rule_name: str
    device_id: str
    state: Literal["raised", "acknowledged", "cleared"]
    message: str
    message_ja: str = ""
    value: Any = None
    raised: float
    acknowledged: float | None = None
    acknowledged_by: str | None = None
    cleared: float | None = None
    cleared_message: str | None = None
    cleared_message_ja: str | None = None
    practice: bool = False  # of a practice rule or device: only its rule's owner is notified


# An alert's row with whether it is a practice one (its rule's or its device's flag).
ALERT_SQL = ("SELECT *, (coalesce((SELECT practice FROM alert_rules WHERE id = alerts.rule_id), 0)"
             " OR coalesce((SELECT practice FROM devices WHERE id = alerts.device_id), 0)) AS practice FROM alerts")


class AlertChange(BaseModel):
    """One line of an alert's history."""

    id: int
    alert_id: int
    ts: float
    state: Literal["raised", "acknowledged", "cleared"]
    actor: str | None
    message: str
    message_ja: str = ""
    rule_name: str
    device_id: str


def local_time(ts: float) -> str:
    """A time as people read it: the gateway's own time zone (a town's Pi is set to the town's)."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


# ---------------------------------------------------------------- the book


class AlertBook:
    """Rules, alerts and their history in the SQLite database; safe from any thread or process."""

    def __init__(self, db: Database):
        self.db = db

    # ------------------------------------------------------------ rules

    def rules(self, town: str | None = None) -> list[Rule]:
        """Every rule, or one town's only."""
        rows = self.db.connection.execute("SELECT * FROM alert_rules WHERE ? IS NULL OR town = ? ORDER BY id",
                                          (town, town)).fetchall()
        return [_rule(row) for row in rows]

    def rule(self, rule_id: int) -> Rule | None:
        row = self.db.connection.execute("SELECT * FROM alert_rules WHERE id=?", (rule_id,)).fetchone()
        return _rule(row) if row else None

    def add_rule(self, rule: Rule | dict[str, Any]) -> Rule:
        """Save a new rule and return it with its id."""
        rule = self._checked(rule)
        now = time.time()
        connection = self.db.connection
        with write(connection):
            cursor = connection.execute(
                "INSERT INTO alert_rules (name, device_id, kind, enabled, condition, action, created, updated,"
                " practice, owner, town)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, coalesce(?, (SELECT id FROM towns ORDER BY position, id LIMIT 1)))",
                (rule.name, rule.device_id, rule.kind, int(rule.enabled), rule.condition.model_dump_json(),
                 _action_json(rule), now, now, int(rule.practice), rule.owner, rule.town))
            rule = rule.model_copy(update={"town": connection.execute(
                "SELECT town FROM alert_rules WHERE id=?", (cursor.lastrowid,)).fetchone()[0]})
            self._bump(connection)
        return rule.model_copy(update={"id": cursor.lastrowid})

    def update_rule(self, rule_id: int, rule: Rule | dict[str, Any], user: str | None = None) -> Rule:
        """Replace a rule. Its open alerts stay open and are judged by the new levels from the next
        reading on; those of devices the rule no longer covers, or of a disabled rule, are cleared."""
        rule = self._checked(rule).model_copy(update={"id": rule_id})
        connection = self.db.connection
        with write(connection):
            if rule.owner is None:  # whoever made it stays its owner: a change never moves its notifications
                row = connection.execute("SELECT owner FROM alert_rules WHERE id=?", (rule_id,)).fetchone()
                rule = rule.model_copy(update={"owner": row["owner"] if row else None})
            if self.rule(rule_id) != rule:  # a changed rule starts afresh: a pending duration meant the old levels
                connection.execute("DELETE FROM alert_tracks WHERE rule_id=?", (rule_id,))
            updated = connection.execute(
                "UPDATE alert_rules SET name=?, device_id=?, kind=?, enabled=?, condition=?, action=?, updated=?,"
                " practice=?, owner=?, town=coalesce(?, town) WHERE id=?",
                (rule.name, rule.device_id, rule.kind, int(rule.enabled), rule.condition.model_dump_json(),
                 _action_json(rule), time.time(), int(rule.practice), rule.owner, rule.town, rule_id)).rowcount
            if not updated:
                raise RuleError(f"there is no rule {rule_id}")
            devices = {row["id"]: row for row in connection.execute("SELECT id, kind, town FROM devices")}
            for alert in self._open(connection, "rule_id=?", (rule_id,)):
                device = devices.get(alert.device_id)
                if not rule.applies_to(alert.device_id, device["kind"] if device else None,
                                       device["town"] if device else None):
                    why = ("rule_disabled", {}) if not rule.enabled else ("rule_elsewhere", {})
                    self._clear(connection, alert, time.time(), why, None, actor=user)
            self._bump(connection)
        return rule

    def delete_rule(self, rule_id: int, user: str | None = None) -> None:
        """Remove a rule; its open alerts are cleared. Their history stays."""
        connection = self.db.connection
        with write(connection):
            for alert in self._open(connection, "rule_id=?", (rule_id,)):
                self._clear(connection, alert, time.time(), ("rule_deleted", {}), None, actor=user)
            if not connection.execute("DELETE FROM alert_rules WHERE id=?", (rule_id,)).rowcount:
                raise RuleError(f"there is no rule {rule_id}")
            connection.execute("DELETE FROM alert_tracks WHERE rule_id=?", (rule_id,))
            connection.execute("DELETE FROM rule_actions WHERE rule_id=?", (rule_id,))  # what it last switched
            self._bump(connection)

    def rules_revision(self) -> int:
        row = self.db.connection.execute("SELECT value FROM alert_meta WHERE key='rules_rev'").fetchone()
        return row[0] if row else 0

    def _checked(self, rule: Rule | dict[str, Any]) -> Rule:
        rule = rule if isinstance(rule, Rule) else Rule.model_validate(rule)
        if rule.device_id is not None and self.db.connection.execute(
                "SELECT 1 FROM devices WHERE id=?", (rule.device_id,)).fetchone() is None:
            raise RuleError(f"device {rule.device_id!r} is not registered: check the id, or add it first")
        if rule.action is not None and self.db.connection.execute(
                "SELECT 1 FROM devices WHERE id=?", (rule.action.switch.device_id,)).fetchone() is None:
            raise RuleError(f"the action's device {rule.action.switch.device_id!r} is not registered: check the id")
        if rule.action is not None:
            switch = rule.action.switch
            outputs = known_outputs(self.db, switch.device_id)
            if outputs and switch.output not in outputs:  # not known yet: the device refuses a wrong one itself
                raise RuleError(f"{switch.device_id} has no output {switch.output!r}; it has"
                                f" {', '.join(sorted(outputs))}")
        return rule

    @staticmethod
    def _bump(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO alert_meta (key, value) VALUES ('rules_rev', 1)"
                           " ON CONFLICT (key) DO UPDATE SET value = value + 1")

    # ------------------------------------------------------------ alerts

    def alerts(self, active_only: bool = False, device_id: str | None = None, limit: int = 200,
               town: str | None = None) -> list[Alert]:
        """Alerts, newest first; ``active_only``: raised or acknowledged, not yet cleared; ``town``: of
        that town's devices only."""
        where, args = ["1=1"], []
        if town is not None:
            where.append("device_id IN (SELECT id FROM devices WHERE town = ?)")
            args.append(town)
        if active_only:
            where.append("state != 'cleared'")
        if device_id is not None:
            where.append("device_id = ?")
            args.append(device_id)
        rows = self.db.connection.execute(
            f"{ALERT_SQL} WHERE {' AND '.join(where)} ORDER BY raised DESC, id DESC LIMIT ?",
            (*args, limit)).fetchall()
        return [_alert(row) for row in rows]

    def alert(self, alert_id: int) -> Alert | None:
        row = self.db.connection.execute(f"{ALERT_SQL} WHERE id=?", (alert_id,)).fetchone()
        return _alert(row) if row else None

    def acknowledge(self, alert_id: int, user: str) -> Alert:
        """An operator has seen the alert. It stays open until its condition clears."""
        if not user:
            raise AlertError("say who acknowledges the alert")
        connection = self.db.connection
        now = time.time()
        with write(connection):
            row = connection.execute("SELECT * FROM alerts WHERE id=?", (alert_id,)).fetchone()
            if row is None:
                raise AlertNotFound(f"there is no alert {alert_id}")
            alert = _alert(row)
            if alert.state == "cleared":
                raise AlertError(f"alert {alert_id} is already cleared")
            if alert.state == "acknowledged":
                raise AlertError(f"alert {alert_id} was already acknowledged by {alert.acknowledged_by}")
            connection.execute("UPDATE alerts SET state='acknowledged', acknowledged=?, acknowledged_by=? WHERE id=?",
                               (now, user, alert_id))
            alert = alert.model_copy(update={"state": "acknowledged", "acknowledged": now, "acknowledged_by": user})
            self._record(connection, alert, now, "acknowledged", ("acknowledged_by", {"user": user}), user,
                         alert.value)
        return alert

    def history(self, device_id: str | None = None, alert_id: int | None = None, rule_id: int | None = None,
                since: float | None = None, limit: int = 200, town: str | None = None) -> list[AlertChange]:
        """Every raise, acknowledgement and clear, newest first (``town``: of its devices only)."""
        where, args = ["1=1"], []
        if town is not None:
            where.append("a.device_id IN (SELECT id FROM devices WHERE town = ?)")
            args.append(town)
        for column, value in (("a.device_id", device_id), ("h.alert_id", alert_id), ("a.rule_id", rule_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("h.ts >= ?")
            args.append(since)
        rows = self.db.connection.execute(
            "SELECT h.id, h.alert_id, h.ts, h.state, h.actor, h.message, h.message_ja, a.rule_name, a.device_id"
            f" FROM alert_history h JOIN alerts a ON a.id = h.alert_id WHERE {' AND '.join(where)}"
            " ORDER BY h.ts DESC, h.id DESC LIMIT ?", (*args, limit)).fetchall()
        return [AlertChange(**dict(row)) for row in rows]

    # ------------------------------------------------------------ for the engine

    @contextlib.contextmanager
    def writing(self, connection: sqlite3.Connection | None = None):
        """A write transaction on this thread's connection, or the caller's own when given one."""
        if connection is not None:
            yield connection
            return
        with write(self.db.connection) as connection:
            yield connection

    def open_alerts(self, connection: sqlite3.Connection | None = None) -> dict[tuple[int, str], Alert]:
        """Open alerts by (rule id, device id)."""
        return {(a.rule_id, a.device_id): a for a in self._open(connection or self.db.connection, "1=1", ())}

    def raise_alert(self, rule: Rule, device_id: str, ts: float, message: Wording | str, value: Any,
                    connection: sqlite3.Connection | None = None) -> Alert | None:
        """Open an alert (None if one is already open for this rule and device).

        ``message`` is a wording (alert_words.py), or one text for both languages.
        Done in its own transaction, or in the caller's if given its ``connection``."""
        en, ja = (say(message, lang) for lang in LANGUAGES)
        with self.writing(connection) as connection:
            try:
                cursor = connection.execute(
                    "INSERT INTO alerts (rule_id, rule_name, device_id, state, message, message_ja, value, raised)"
                    " VALUES (?, ?, ?, 'raised', ?, ?, ?, ?)",
                    (rule.id, rule.name, device_id, en, ja, json.dumps(value), ts))
            except sqlite3.IntegrityError:
                return None  # raised meanwhile (another gateway, or the same one before a restart)
            alert = Alert(id=cursor.lastrowid, rule_id=rule.id, rule_name=rule.name, device_id=device_id,
                          state="raised", message=en, message_ja=ja, value=value, raised=ts)
            self._record(connection, alert, ts, "raised", message, None, value)
        log.info("alert %d raised: %s, %s: %s", alert.id, rule.name, device_id, en)
        return alert

    def clear_alert(self, alert: Alert, ts: float, message: Wording | str, value: Any,
                    connection: sqlite3.Connection | None = None) -> None:
        with self.writing(connection) as connection:
            self._clear(connection, alert, ts, message, value)
        log.info("alert %d cleared: %s, %s: %s", alert.id, alert.rule_name, alert.device_id, say(message, "en"))

    def _clear(self, connection: sqlite3.Connection, alert: Alert, ts: float, message: Wording | str, value: Any,
               actor: str | None = None) -> None:
        en, ja = (say(message, lang) for lang in LANGUAGES)
        changed = connection.execute(
            "UPDATE alerts SET state='cleared', cleared=?, cleared_message=?, cleared_message_ja=?"
            " WHERE id=? AND state != 'cleared'", (ts, en, ja, alert.id)).rowcount
        if changed:
            alert = alert.model_copy(update={"state": "cleared", "cleared": ts, "cleared_message": en,
                                             "cleared_message_ja": ja})
            self._record(connection, alert, ts, "cleared", message, actor, value)

    def _open(self, connection: sqlite3.Connection, where: str, args: tuple) -> list[Alert]:
        rows = connection.execute(f"SELECT * FROM alerts WHERE state != 'cleared' AND {where}", args).fetchall()
        return [_alert(row) for row in rows]

    def _record(self, connection: sqlite3.Connection, alert: Alert, ts: float, state: str,
                message: Wording | str, actor: str | None, value: Any) -> None:
        """Keep the step in the history and queue its notification, in the caller's transaction.

        The notification carries its title and text in both languages (``title``/``text`` in
        English, ``title_ja``/``text_ja``); the notifier sends the one its settings ask for."""
        en, ja = (say(message, lang) for lang in LANGUAGES)
        connection.execute("INSERT INTO alert_history (alert_id, ts, state, actor, message, message_ja)"
                           " VALUES (?, ?, ?, ?, ?, ?)", (alert.id, ts, state, actor, en, ja))
        device = connection.execute("SELECT kind, name, name_ja FROM devices WHERE id=?",
                                    (alert.device_id,)).fetchone()
        name = (device["name"] if device else "") or alert.device_id
        texts = {}
        for lang, said in (("en", en), ("ja", ja)):
            shown = ((device["name_ja"] if device and lang == "ja" else "") or name)
            words = {"state": say((f"state.{state}", {}), lang), "time": local_time(ts)}
            lines = [f"{alert.rule_name}: {alert.device_id}" + (f" ({shown})" if shown != alert.device_id else ""),
                     said, say(("when", words), lang)]
            if state == "cleared":
                raised_message = alert.message_ja if lang == "ja" and alert.message_ja else alert.message
                lines.append(say(("because", {"time": local_time(alert.raised), "what": raised_message}), lang))
            texts[lang] = (f"{words['state']}: {alert.rule_name} ({shown})", "\n".join(lines))
        enqueue(connection, {
            # Whose it is (a learner's practice alert, or the town's): notify_routes.py.
            "route": route_for(connection, alert.rule_id, alert.device_id, alert.id),
            "event": state, "title": texts["en"][0], "text": texts["en"][1],
            "title_ja": texts["ja"][0], "text_ja": texts["ja"][1],
            "alert_id": alert.id, "state": alert.state, "rule_id": alert.rule_id, "rule": alert.rule_name,
            "device_id": alert.device_id, "device_kind": device["kind"] if device else None,
            "device_name": name, "device_name_ja": (device["name_ja"] if device else "") or name,
            "message": en, "message_ja": ja, "value": value, "actor": actor,
            "ts": ts, "time": _iso(ts), "raised": alert.raised, "raised_message": alert.message,
        })


def _rule(row: sqlite3.Row) -> Rule:
    return Rule(id=row["id"], name=row["name"], device_id=row["device_id"], kind=row["kind"],
                enabled=bool(row["enabled"]), town=row["town"], condition=json.loads(row["condition"]),
                action=json.loads(row["action"]) if row["action"] else None,
                practice=bool(row["practice"]), owner=row["owner"])


def _action_json(rule: Rule) -> str | None:
    return rule.action.model_dump_json() if rule.action is not None else None


def _alert(row: sqlite3.Row) -> Alert:
    return Alert(**{**dict(row), "value": json.loads(row["value"]) if row["value"] else None})


# ---------------------------------------------------------------- wiring


def ensure_rules(book: AlertBook, rules: list[dict[str, Any]]) -> list[Rule]:
    """Add each of ``rules`` (e.g. a demo town's) the first time only: one an operator changed or
    deleted is left as the operator left it. Returns the rules added now."""
    added = []
    for rule in rules:
        key = f"seeded:{Rule.model_validate(rule).name}"
        if book.db.connection.execute("SELECT 1 FROM alert_meta WHERE key=?", (key,)).fetchone() is None:
            added.append(book.add_rule(rule))
            book.db.connection.execute("INSERT OR IGNORE INTO alert_meta (key, value) VALUES (?, 1)", (key,))
    return added
