"""The notification outbox: alert messages queued in SQLite, and the sender that delivers them.

Whoever changes an alert (the alert engine in the gateway, an operator's page in
the dashboard) queues one message with :func:`enqueue`, in the same transaction as
the change. The :class:`Notifier` runs in the gateway: its thread hands each
message to every channel (notify_channels.py) and retries a failing channel on its
own, waiting longer each time; a restart loses nothing. How it retries, and what a
message holds: docs/alerts.md.

Example::

    notifier = Notifier(db, NotifyConfig.from_settings(settings.notify), publish=gateway.publish)
    notifier.start()
    enqueue(db.connection, {"event": "raised", "title": "Deep snow", "text": "snow-1: depth_cm 31 ≥ 30"})
    notifier.stop()
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from typing import Any

from .db import Database, write
from .notify_channels import DeliveryError, Publish, in_language, publish_mqtt, send_mail, send_webhook
from .notify_config import NotifyConfig
from .notify_routes import Routes

log = logging.getLogger(__name__)

# How often the sender looks for messages queued by another process (the dashboard).
POLL_S = 2.0
# A delivery being sent is not tried by anyone else for this long (a crash mid-send: tried again after).
CLAIM_S = 300.0
# Sent and failed deliveries are kept this long for operators to look at.
KEEP_DONE_S = 30 * 86400


def enqueue(connection: sqlite3.Connection, payload: dict[str, Any]) -> None:
    """Queue one message for every channel; call it inside the transaction that changed the alert."""
    connection.execute("INSERT INTO notify_outbox (created, payload) VALUES (?, ?)",
                       (time.time(), json.dumps(payload, ensure_ascii=False, allow_nan=False)))


class Notifier:
    """Sends what is queued in ``notify_outbox`` to every channel, retrying each on its own.

    ``publish(topic, payload)`` is the gateway's own MQTT publish (``Gateway.publish``),
    needed only with ``[notify.mqtt]``.
    """

    def __init__(self, db: Database, config: NotifyConfig | None = None, publish: Publish | None = None):
        self.db = db
        self.config = config or NotifyConfig()
        self.publish = publish
        # Which channels each message goes to (a town's, a learner's): notify_routes.py decides.
        self.routes = Routes(db, self.config)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if self.config.mqtt and publish is None:
            raise ValueError("[notify.mqtt] needs the gateway's connection to publish on")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    # ------------------------------------------------------------ sender thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.run_once(time.time())
            except Exception:  # a bug here must not end notifications for good
                log.exception("the notifier failed; trying again shortly")
                wait = POLL_S
            self._wake.wait(timeout=min(wait, POLL_S))
            self._wake.clear()

    def run_once(self, now: float) -> float:
        """Fan out new messages and try every delivery that is due; return seconds until the next is."""
        self._fan_out(now)
        next_due = POLL_S
        pending = self.db.connection.execute(
            "SELECT d.id, d.channel, d.created, d.attempts, d.next_try, o.payload FROM notify_deliveries d"
            " JOIN notify_outbox o ON o.id = d.message_id WHERE d.state = 'pending' ORDER BY d.id").fetchall()
        blocked: set[str] = set()  # a channel waiting to retry: its later messages wait too, to stay in order
        for row in pending:
            if self._stop.is_set():
                break
            if row["channel"] in blocked:
                continue
            if row["next_try"] > now:
                blocked.add(row["channel"])
                next_due = min(next_due, row["next_try"] - now)
                continue
            # Claimed first, so that another gateway worker does not send it too.
            claimed = self.db.connection.execute(
                "UPDATE notify_deliveries SET next_try=? WHERE id=? AND state='pending' AND next_try=?",
                (now + CLAIM_S, row["id"], row["next_try"])).rowcount
            if not claimed or not self._deliver(row, now):
                blocked.add(row["channel"])
        return max(next_due, 0.05)

    def _fan_out(self, now: float) -> None:
        connection = self.db.connection
        if connection.execute("SELECT 1 FROM notify_outbox WHERE fanned_out = 0 LIMIT 1").fetchone() is None:
            return
        with write(connection):  # several gateway workers: one of them fans out each message
            rows = connection.execute("SELECT id, payload FROM notify_outbox WHERE fanned_out = 0 ORDER BY id")
            for row in rows.fetchall():
                channels = self.routes.channels(json.loads(row["payload"]))
                connection.executemany(
                    "INSERT INTO notify_deliveries (message_id, channel, created, state, next_try)"
                    " VALUES (?, ?, ?, 'pending', ?)", [(row["id"], name, now, now) for name in channels])
                connection.execute("UPDATE notify_outbox SET fanned_out = 1 WHERE id = ?", (row["id"],))
            # Old news: what was sent or given up on long ago.
            connection.execute("DELETE FROM notify_deliveries WHERE state != 'pending' AND done < ?",
                               (now - KEEP_DONE_S,))
            connection.execute("DELETE FROM notify_outbox WHERE fanned_out = 1 AND created < ? AND id NOT IN"
                               " (SELECT message_id FROM notify_deliveries)", (now - KEEP_DONE_S,))

    def _deliver(self, row: sqlite3.Row, now: float) -> bool:
        channel, payload = row["channel"], json.loads(row["payload"])
        attempts = row["attempts"] + 1
        try:
            self._send(channel, payload)
        except DeliveryError as err:
            give_up_at = row["created"] + self.config.give_up_after_min * 60
            delay = min(self.config.retry_first_s * 2 ** (attempts - 1), self.config.retry_max_s)
            delay *= random.uniform(0.5, 1.0)  # jitter
            if err.permanent or now + delay > give_up_at:
                log.error("gave up notifying %s after %d tries: %s (%s)", channel, attempts, err,
                          payload.get("title", ""))
                self._finish(row["id"], "failed", attempts, str(err))
            else:
                log.warning("could not notify %s (try %d): %s; trying again in %.1f s",
                            channel, attempts, err, delay)
                self.db.connection.execute(
                    "UPDATE notify_deliveries SET attempts=?, next_try=?, last_error=? WHERE id=?",
                    (attempts, now + delay, str(err), row["id"]))
            return False
        self._finish(row["id"], "sent", attempts, None)
        return True

    def _finish(self, delivery_id: int, state: str, attempts: int, error: str | None) -> None:
        self.db.connection.execute(
            "UPDATE notify_deliveries SET state=?, attempts=?, last_error=?, done=? WHERE id=?",
            (state, attempts, error, time.time(), delivery_id))

    def _send(self, channel: str, payload: dict[str, Any]) -> None:
        resolved = self.routes.resolve(channel)
        if resolved is None:
            raise DeliveryError(f"channel {channel!r} is no longer set up (the town's or the learner's"
                                " target was removed)", permanent=True)
        config, name = resolved
        # Whose it is was for choosing the channels; the receivers get the message itself.
        payload = in_language({k: v for k, v in payload.items() if k != "route"}, config.language)
        if name == "smtp" and config.smtp:
            send_mail(config.smtp, payload)
        elif name == "mqtt" and config.mqtt:
            if self.publish is None:
                raise DeliveryError("a town's [notify.mqtt] needs the gateway's connection", permanent=True)
            publish_mqtt(self.publish, config.mqtt, payload)
        else:
            hook = next((h for h in config.webhook if h.name == name), None)
            if hook is None:
                raise DeliveryError(f"channel {channel!r} is no longer in jisaku.toml [notify]", permanent=True)
            send_webhook(hook, payload)

    # ------------------------------------------------------------ for operators

    def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deliveries with their state (pending, sent, failed) and last error."""
        rows = self.db.connection.execute(
            "SELECT d.id, d.channel, d.state, d.attempts, d.last_error, d.created, d.done, o.payload"
            " FROM notify_deliveries d JOIN notify_outbox o ON o.id = d.message_id ORDER BY d.id DESC LIMIT ?",
            (limit,)).fetchall()
        return [{**{k: row[k] for k in row.keys() if k != "payload"}, "payload": json.loads(row["payload"])}
                for row in rows]
