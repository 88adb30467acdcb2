"""Commands to devices and their answers: "switch the road heater on", then "done" or "refused, because …".

A command goes out on ``jisaku/<id>/cmd`` (QoS 1, not retained) and the device answers on
``jisaku/<id>/cmd/ack`` (docs/protocol.md; for switching, /work/switching-spec.md §2)::

    → {"id": "c-8f3a", "do": "switch", "args": {"output": "heater", "on": true}, "expires": 1764750000.0}
    ← {"id": "c-8f3a", "ok": true, "result": {"heater": 1, "pump_1": 0}}
    ← {"id": "c-8f3a", "ok": false, "code": "interlock", "reason": "pump_2 is on: …"}

Every command is kept in the ``commands`` table with its answer, so that the operator
pages can show "sent / done / refused (why) / no answer" and the audit log says who
switched what and what came of it. Whoever sends a command (the dashboard for an
operator, the gateway for an alert rule) first writes it here, then publishes it; the
gateway writes the answer when it arrives. A command still without an answer after its
expiry reads ``no_answer``: the device will refuse it if it comes late.

Example::

    book = CommandBook(Database(Path("data/jisaku.db")))
    command = book.issue("heater-1", "switch", {"output": "heater", "on": True},
                         source="operator", issued_by="tanaka")
    send(client, book, command)          # publishes it; withdraws it if the broker does not take it
    book.get(command.id).status          # "sent", later "done", "refused" or "no_answer"
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jisaku.contract import protocol

from .audit import AuditLog
from .db import Database, write

log = logging.getLogger(__name__)

# How long an operator's command is good for: long enough for a device on a slow link to
# get it, short enough that a heater switched on by mistake does not come on hours later.
COMMAND_EXPIRY_S = 120.0
# Refusal codes a device may give (spec §2); others are kept as the device said them.
REFUSAL_CODES = ("expired", "no_clock", "unknown_output", "interlock", "bad_request")
PUBLISH_WAIT_S = 10.0

Status = Literal["sent", "done", "refused", "no_answer"]


class Command(BaseModel):
    """One command and what came of it, as the ``commands`` table and the operator API have it."""

    id: str = Field(examples=["c-8f3a91c2"])
    device_id: str
    do: str = Field(examples=["switch"])
    args: dict[str, Any] = Field(examples=[{"output": "heater", "on": True}])
    source: Literal["operator", "rule"]
    issued_by: str = Field(description='the operator\'s name, or "rule:<rule name>"')
    issued_at: float
    expires_at: float = Field(description="UTC epoch seconds; the device refuses it after this")
    status: Status = Field(description="no_answer: expired without an answer")
    answered_at: float | None = None
    code: str | None = Field(None, description="why it was refused: expired, no_clock, unknown_output, interlock,"
                                               " bad_request")
    reason: str | None = Field(None, description="the device's own words")
    result: Any = Field(None, description="what the device did, e.g. every output's state {\"heater\": 1}")

    def wire(self) -> bytes:
        """The message for ``jisaku/<id>/cmd``."""
        return json.dumps({"id": self.id, "do": self.do, "args": self.args, "expires": self.expires_at},
                          separators=(",", ":"), allow_nan=False).encode()


class Answer(BaseModel):
    """A device's answer on ``cmd/ack``."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=100)
    ok: bool
    code: str | None = Field(None, max_length=100)
    reason: str | None = Field(None, max_length=2000)
    result: Any = None


class OutputInfo(BaseModel):
    """One output as a device describes it in its status ("outputs", spec §2)."""

    model_config = ConfigDict(extra="allow")
    name: str = ""
    safe: Literal["off", "on"] = "off"
    max_on_min: float = 0


def decode_answer(payload: bytes) -> Answer:
    """A ``cmd/ack`` message, or ProtocolError("bad_ack") saying what it should look like."""
    message = protocol.decode_object(payload)
    for key in ("id", "reason"):  # a number where text belongs is read as its text
        if isinstance(message.get(key), int | float) and not isinstance(message.get(key), bool):
            message[key] = str(message[key])
    try:
        return Answer.model_validate(message)
    except ValidationError:
        raise protocol.ProtocolError(
            "bad_ack", 'a command answer is {"id": "<the command\'s id>", "ok": true|false, "result"?: …,'
                       ' "code"?: "…", "reason"?: "…"}') from None


def decode_outputs(info: dict[str, Any]) -> dict[str, OutputInfo] | None:
    """The outputs a status object lists (None when it lists none, or not as the spec says)."""
    given = info.get("outputs")
    if not isinstance(given, dict) or not given:
        return None
    try:
        return {str(name): OutputInfo.model_validate(spec) for name, spec in given.items()
                if protocol.METRIC_NAME.match(str(name))}
    except ValidationError:
        log.warning("a status listed outputs in a shape jisaku does not know: %r", given)
        return None


def new_id() -> str:
    return "c-" + secrets.token_hex(6)


class CommandBook:
    """The ``commands`` table: commands as they were sent, and their answers."""

    def __init__(self, db: Database):
        self.db = db
        self.audit = AuditLog(db)

    def issue(self, device_id: str, do: str, args: dict[str, Any], source: Literal["operator", "rule"],
              issued_by: str, expires_in_s: float = COMMAND_EXPIRY_S, now: float | None = None) -> Command:
        """Write a new command (status ``sent``) and its audit entry; publish it with :func:`send` next."""
        now = time.time() if now is None else now
        command = Command(id=new_id(), device_id=device_id, do=do, args=args, source=source, issued_by=issued_by,
                          issued_at=now, expires_at=now + expires_in_s, status="sent")
        with write(self.db.connection) as connection:
            connection.execute(
                "INSERT INTO commands (id, device_id, do, args, source, issued_by, issued_at, expires_at, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'sent')",
                (command.id, device_id, do, json.dumps(args, ensure_ascii=False), source, issued_by, now,
                 command.expires_at))
            self.audit.record(issued_by, _action(do), device_id, None,
                              {"command": command.id, **args, "expires": command.expires_at})
        return command

    def withdraw(self, command: Command) -> None:
        """Forget a command the broker never took (nothing was sent), with an audit entry saying so."""
        with write(self.db.connection) as connection:
            connection.execute("DELETE FROM commands WHERE id=? AND status='sent'", (command.id,))
            self.audit.record(command.issued_by, _action(command.do), command.device_id,
                              {"command": command.id}, {"command": command.id, "status": "not_sent"})

    def get(self, command_id: str, now: float | None = None) -> Command | None:
        row = self.db.connection.execute("SELECT * FROM commands WHERE id=?", (command_id,)).fetchone()
        return _command(row, time.time() if now is None else now) if row else None

    def for_device(self, device_id: str, limit: int = 50, now: float | None = None) -> list[Command]:
        """A device's commands, newest first."""
        now = time.time() if now is None else now
        rows = self.db.connection.execute(
            "SELECT * FROM commands WHERE device_id=? ORDER BY issued_at DESC, rowid DESC LIMIT ?",
            (device_id, limit)).fetchall()
        return [_command(row, now) for row in rows]

    def record_answers(self, connection: sqlite3.Connection,
                       answers: list[tuple[str, Answer, float]]) -> list[Command]:
        """Keep each device's answer with its command, in the caller's write transaction.

        An answer to a command nobody here sent, or from another device than the one it was
        sent to, is logged and ignored. A late answer (after the expiry) is kept all the same:
        what the device says it did is what happened.
        """
        answered = []
        for device_id, answer, received in answers:
            row = connection.execute("SELECT * FROM commands WHERE id=?", (answer.id,)).fetchone()
            if row is None:
                log.info("%s answered command %r, which this server did not send: ignored", device_id, answer.id)
                continue
            if row["device_id"] != device_id:
                log.warning("%s answered command %s, which was sent to %s: ignored", device_id, answer.id,
                            row["device_id"])
                continue
            if row["status"] not in ("sent", "no_answer"):
                continue  # the broker delivered the answer twice (QoS 1): the first one counts
            status = "done" if answer.ok else "refused"
            code = None if answer.ok else (answer.code or "refused")
            reason = None if answer.ok else (answer.reason or "")
            result = json.dumps(answer.result, ensure_ascii=False, default=str) if answer.ok else None
            connection.execute("UPDATE commands SET status=?, answered_at=?, code=?, reason=?, result=? WHERE id=?",
                               (status, received, code, reason, result, answer.id))
            command = _command(connection.execute("SELECT * FROM commands WHERE id=?", (answer.id,)).fetchone(),
                               received)
            self._record_answer(command, row["status"])
            answered.append(command)
        return answered

    def expire(self, now: float | None = None) -> list[Command]:
        """Mark commands past their expiry without an answer as ``no_answer`` (the gateway does this
        every few seconds), each with its audit entry."""
        now = time.time() if now is None else now
        with write(self.db.connection) as connection:
            rows = connection.execute("SELECT * FROM commands WHERE status='sent' AND expires_at < ?",
                                      (now,)).fetchall()
            connection.execute("UPDATE commands SET status='no_answer' WHERE status='sent' AND expires_at < ?",
                               (now,))
            expired = [_command(row, now) for row in rows]
            for command in expired:
                self._record_answer(command, "sent")
        return expired

    def _record_answer(self, command: Command, before: str) -> None:
        after = {"command": command.id, "status": command.status}
        if command.status == "refused":
            after.update(code=command.code, reason=command.reason)
        elif command.status == "done":
            after["result"] = command.result
        self.audit.record(command.issued_by, _action(command.do), command.device_id,
                          {"command": command.id, "status": before}, after)


def known_outputs(db: Database, device_id: str) -> dict[str, OutputInfo]:
    """The outputs ``device_id`` last said it has ({} if it never said)."""
    row = db.connection.execute("SELECT outputs FROM device_outputs WHERE device_id=?", (device_id,)).fetchone()
    if row is None:
        return {}
    return {name: OutputInfo.model_validate(spec) for name, spec in json.loads(row["outputs"]).items()}


def save_outputs(connection: sqlite3.Connection, device_id: str, outputs: dict[str, OutputInfo],
                 received: float) -> None:
    """Keep what a status said of the device's outputs (in the store's transaction)."""
    connection.execute(
        "INSERT INTO device_outputs (device_id, outputs, updated) VALUES (?, ?, ?)"
        " ON CONFLICT (device_id) DO UPDATE SET outputs=excluded.outputs, updated=excluded.updated",
        (device_id, json.dumps({name: o.model_dump() for name, o in outputs.items()}, ensure_ascii=False),
         received))


def send(client: Any, book: CommandBook, command: Command, wait_s: float = PUBLISH_WAIT_S) -> Command:
    """Publish ``command`` on ``jisaku/<id>/cmd`` with QoS 1 through a connected paho client.

    If the broker has not taken it within ``wait_s`` the command is withdrawn and
    RuntimeError says so: nothing was sent. ``wait_s=0`` does not wait (the gateway's alert
    rules, which must not hold up readings): a command the broker never got then reads
    ``no_answer`` after its expiry, and the rule sends it again.
    """
    message = client.publish(protocol.topic(command.device_id, "cmd"), command.wire(), qos=1, retain=False)
    if wait_s <= 0:
        return command
    try:
        message.wait_for_publish(timeout=wait_s)
    except (RuntimeError, ValueError):
        pass  # not connected: paho says so by raising; handled below like a timeout
    if not message.is_published():
        book.withdraw(command)
        raise RuntimeError(f"the broker did not take the command for {command.device_id}; is it running?")
    return command


def _action(do: str) -> str:
    """The audit log's name for a command: ``device.switch``, else ``device.command``."""
    return "device.switch" if do == "switch" else "device.command"


def _command(row: sqlite3.Row, now: float) -> Command:
    status = row["status"]
    if status == "sent" and row["expires_at"] < now:
        status = "no_answer"  # the gateway marks it so within seconds; read it so at once
    return Command(id=row["id"], device_id=row["device_id"], do=row["do"], args=json.loads(row["args"]),
                   source=row["source"], issued_by=row["issued_by"], issued_at=row["issued_at"],
                   expires_at=row["expires_at"], status=status, answered_at=row["answered_at"],
                   code=row["code"], reason=row["reason"],
                   result=None if row["result"] is None else json.loads(row["result"]))
