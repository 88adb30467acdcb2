"""Alert rules that switch things: "snow ≥ 5 cm for 10 min: sprinklers on; below 2 cm: off".

A rule's ``action`` (alert_rules.Action) names one output of a switch box. While any alert
of the rule is open the output should be ``on_raise``; otherwise ``on_clear``. The alert
engine calls :meth:`RuleActions.run` after every batch that raised or cleared an alert and
on every tick; it sends a ``switch`` command (commands.py, issued by ``rule:<rule name>``,
in the audit log as ``device.switch``) when the output should change, and:

- not more often than every ``min_interval_min`` per rule and device: a change held back
  is sent on the first run after the interval has passed, if the rule still wants it (a
  quick flip there and back sends nothing);
- a command that got no answer because the device was offline (``no_answer``, or refused
  as ``expired`` when it arrived late) is sent again once the device is back online, as
  long as the rule still wants it. A refusal for another reason (an interlock, say) is
  left as the device decided: an operator sees it on the device page.
- A rule that is new, or just got its action, switches nothing until its alert is raised.

What was last sent is kept in the ``rule_actions`` table, so a gateway restart forgets
neither the rate limit nor what a device missed.

Example::

    actions = RuleActions(db, send=gateway.send_command)
    actions.run(engine_rules, now=time.time())      # the engine does this itself
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from .alert_rules import Rule
from .commands import COMMAND_EXPIRY_S, Command, CommandBook
from .db import Database, write

log = logging.getLogger(__name__)


class RuleActions:
    """``send`` publishes a command already written to the command book (Gateway.send_command)."""

    def __init__(self, db: Database, send: Callable[[Command], Any], expires_in_s: float = COMMAND_EXPIRY_S):
        self.db = db
        self.send = send
        self.commands = CommandBook(db)
        # How long a rule's switch stays good on its way to the device (tests shorten it).
        self.expires_in_s = expires_in_s

    def run(self, rules: list[Rule], now: float) -> list[Command]:
        """Send what the rules' actions want now; returns the commands sent."""
        with_action = [rule for rule in rules if rule.action is not None]
        if not with_action:
            return []
        connection = self.db.connection
        raised = {row[0] for row in connection.execute("SELECT DISTINCT rule_id FROM alerts WHERE state != 'cleared'")}
        sent = []
        for rule in with_action:
            # Decided and written down in one write transaction: gateway workers (--workers N)
            # each run this, and only one of them may send a given switch.
            with write(connection):
                command = self._decide(connection, rule, rule.id in raised, now)
            if command is not None:  # published after the transaction: the broker may be slow
                self._publish(rule, command)
                sent.append(command)
        return sent

    def _decide(self, connection: sqlite3.Connection, rule: Rule, raised: bool, now: float) -> Command | None:
        """The command to send now for ``rule`` (already written down), or None."""
        switch = rule.action.switch
        wanted = switch.on_raise if raised else switch.on_clear
        key = (rule.id, switch.device_id, switch.output)
        row = connection.execute("SELECT * FROM rule_actions WHERE rule_id=? AND device_id=? AND output=?",
                                 key).fetchone()
        if row is None:
            # New: nothing happened yet. Only an alert that is already open switches now.
            self._save(connection, key, wanted, None if raised else wanted, None, None)
            if not raised:
                return None
            row = connection.execute("SELECT * FROM rule_actions WHERE rule_id=? AND device_id=? AND output=?",
                                     key).fetchone()
        elif row["wanted"] != wanted:
            connection.execute("UPDATE rule_actions SET wanted=? WHERE rule_id=? AND device_id=? AND output=?",
                               (int(wanted), *key))
        if not self._due(rule, row, wanted, now):
            return None
        command = self.commands.issue(switch.device_id, "switch", {"output": switch.output, "on": wanted},
                                      source="rule", issued_by=f"rule:{rule.name}",
                                      expires_in_s=self.expires_in_s, now=now)
        self._save(connection, key, wanted, wanted, now, command.id)
        return command

    def _due(self, rule: Rule, row: sqlite3.Row, wanted: bool, now: float) -> bool:
        """Whether the switch to ``wanted`` should be sent now."""
        last = self.commands.get(row["command_id"], now) if row["command_id"] else None
        if last is not None and last.status == "sent":
            return False  # the device has not answered yet: wait for it, or for the expiry
        if row["sent_on"] is not None and bool(row["sent_on"]) == wanted:
            if last is None or not _missed(last) or not self._back_online(last):
                return False
            log.info("rule %r: %s was offline and missed %s; sending it again", rule.name, last.device_id, last.id)
            return True
        # A change: held back by the rate limit until the interval has passed (a later run sends it).
        return row["sent_at"] is None or now - row["sent_at"] >= rule.action.min_interval_min * 60

    def _publish(self, rule: Rule, command: Command) -> None:
        try:
            self.send(command)
        except Exception:  # no broker: it reads no_answer after its expiry and goes again when the device is back
            log.exception("rule %r: could not send %s to %s", rule.name, command.id, command.device_id)
            return
        log.info("rule %r switched %s of %s %s (%s)", rule.name, command.args["output"], command.device_id,
                 "on" if command.args["on"] else "off", command.id)

    def _back_online(self, command: Command) -> bool:
        """Whether the device came (back) online after the command was sent."""
        row = self.db.connection.execute("SELECT state, since FROM device_status WHERE device_id=?",
                                         (command.device_id,)).fetchone()
        return row is not None and row["state"] == "online" and row["since"] > command.issued_at

    @staticmethod
    def _save(connection: sqlite3.Connection, key: tuple[int, str, str], wanted: bool, sent_on: bool | None,
              sent_at: float | None, command_id: str | None) -> None:
        connection.execute(
            "INSERT INTO rule_actions (rule_id, device_id, output, wanted, sent_on, sent_at, command_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule_id, device_id, output) DO UPDATE SET"
            " wanted=excluded.wanted, sent_on=excluded.sent_on, sent_at=excluded.sent_at,"
            " command_id=excluded.command_id",
            (*key, int(wanted), None if sent_on is None else int(sent_on), sent_at, command_id))


def _missed(command: Command) -> bool:
    """The device never acted on it: no answer, or it came too late and was refused as expired."""
    return command.status == "no_answer" or (command.status == "refused" and command.code == "expired")
