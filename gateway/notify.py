"""Notifications: tell people when an alert is raised or cleared, by webhook, e-mail or MQTT.

Whoever changes an alert (the alert engine in the gateway, an operator's page in
the dashboard) puts one message in the ``notify_outbox`` table with
:func:`enqueue`, in the same transaction as the change. The :class:`Notifier`
runs in the gateway: its sender thread hands each message to every channel set
up in ``jisaku.toml`` and retries a channel that fails, waiting twice as long
each time (with a little randomness, so a dozen gateways do not all knock at
once), and gives up after ``give_up_after_min`` with an error in the log.
Deliveries are kept in SQLite, so a restart loses none. Nothing here runs in
the gateway's writer thread: a dead mail server never holds up readings.

Settings, in ``jisaku.toml``::

    [notify]
    events = ["raised", "cleared"]          # add "acknowledged" to hear about those too
    language = "ja"                          # or "en": the language of the title and text

    [[notify.webhook]]
    url = "https://hooks.slack.com/services/T0000/B0000/XXXXXXXX"
    format = "slack"                         # generic | slack | teams | lineworks

    [notify.smtp]
    host = "smtp.example.lg.jp"
    port = 587
    starttls = true
    user = "jisaku"
    password = "..."
    from = "jisaku@example.lg.jp"
    to = ["road@example.lg.jp"]

    [notify.mqtt]
    topic = "jisaku/_alerts"                 # published as jisaku/_alerts/<device id>

Example::

    notifier = Notifier(db, NotifyConfig.from_settings(settings.notify), publish=gateway.publish)
    notifier.start()
    enqueue(db.connection, {"event": "raised", "title": "Deep snow", "text": "snow-1: depth_cm 31 ≥ 30"})
    notifier.stop()

A message is a JSON object with at least ``event`` (raised / acknowledged /
cleared), ``title`` and ``text``; the generic webhook and MQTT get all of it.
Alerts also give ``title_ja`` and ``text_ja``: with ``language = "ja"`` (the
default) people read those, and ``"en"`` keeps the English ones.
"""

from __future__ import annotations

import json
import logging
import random
import smtplib
import sqlite3
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .db import Database, write

log = logging.getLogger(__name__)

EVENTS = ("raised", "acknowledged", "cleared")
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


def mask_url(url: str) -> str:
    """A URL fit for a log: webhook URLs carry their token in the path or query, so only the host shows."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"


# ---------------------------------------------------------------- settings


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    format: Literal["generic", "slack", "teams", "lineworks"] = "generic"
    name: str | None = None
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ValueError("a webhook url starts with https:// (or http:// on a closed network)")
        return url

    def __repr__(self) -> str:  # never show the token
        return f"WebhookConfig(url={mask_url(self.url)!r}, format={self.format!r})"


class SmtpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    host: str
    port: int = 587
    starttls: bool = True         # upgrade the connection to TLS (port 587); false only on a closed network
    ssl: bool = False             # TLS from the start instead (port 465)
    user: str | None = None
    password: str | None = Field(None, repr=False)
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    subject_prefix: str = "[jisaku]"
    timeout_s: float = Field(20.0, gt=0)

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, to: Any) -> Any:
        return [to] if isinstance(to, str) else to


class MqttConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str = "jisaku/_alerts"

    @field_validator("topic")
    @classmethod
    def _under_alerts(cls, topic: str) -> str:
        # The gateway may publish anywhere under jisaku/; jisaku/_… is never a device's topic.
        if not topic.startswith("jisaku/_") or set(topic) & set("+#"):
            raise ValueError("the alert topic must start with jisaku/_ (e.g. jisaku/_alerts), without + or #")
        return topic.rstrip("/")


class NotifyConfig(BaseModel):
    """The ``[notify]`` table of ``jisaku.toml``."""

    model_config = ConfigDict(extra="forbid")
    webhook: list[WebhookConfig] = []
    smtp: SmtpConfig | None = None
    mqtt: MqttConfig | None = None
    events: list[Literal["raised", "acknowledged", "cleared"]] = ["raised", "cleared"]
    language: Literal["ja", "en"] = "ja"         # of the title and text people read
    retry_first_s: float = Field(10.0, gt=0)     # the first wait after a failure; doubles each time
    retry_max_s: float = Field(600.0, gt=0)      # never waits longer than this between tries
    give_up_after_min: float = Field(24 * 60, gt=0)

    @field_validator("webhook", mode="before")
    @classmethod
    def _one_or_many(cls, webhook: Any) -> Any:
        # One table or a list of them; a plain URL is a generic webhook.
        if isinstance(webhook, (dict, str)):
            webhook = [webhook]
        return [{"url": w} if isinstance(w, str) else w for w in webhook] if isinstance(webhook, list) else webhook

    @model_validator(mode="after")
    def _names(self) -> "NotifyConfig":
        for number, hook in enumerate(self.webhook, 1):
            hook.name = hook.name or f"webhook-{number}"
        names = [hook.name for hook in self.webhook]
        if len(set(names)) != len(names) or {"smtp", "mqtt"} & set(names):
            raise ValueError("each webhook needs its own name (and not smtp or mqtt)")
        return self

    @classmethod
    def from_settings(cls, table: dict[str, Any] | None) -> "NotifyConfig":
        """Check the ``[notify]`` table; a mistake raises ValueError saying where (secrets left out)."""
        try:
            return cls.model_validate(table or {})
        except ValidationError as err:
            # Only where and what, never the input: it may be a password or a webhook token.
            problems = "; ".join(
                f"notify.{'.'.join(str(p) for p in e['loc'])}: "
                + ("unknown key (check its spelling in docs/alerts.md)" if e["type"] == "extra_forbidden" else e["msg"])
                for e in err.errors())
            raise ValueError(f"jisaku.toml: {problems}") from None

    def channel_names(self) -> list[str]:
        return ([hook.name for hook in self.webhook] + (["smtp"] if self.smtp else [])
                + (["mqtt"] if self.mqtt else []))


# ---------------------------------------------------------------- formats


def webhook_body(payload: dict[str, Any], fmt: str) -> dict[str, Any]:
    """What to POST to an incoming webhook of each kind."""
    title, text = payload.get("title", ""), payload.get("text", "")
    if fmt == "slack":
        return {"text": f"*{title}*\n{text}"}
    if fmt == "lineworks":
        return {"title": title, "body": {"text": text}}
    if fmt == "teams":
        # An Adaptive Card: what Teams Workflows ("when a Teams webhook request is received")
        # and the older incoming-webhook connectors both accept.
        card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                "version": "1.4", "body": [
                    {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True},
                    {"type": "TextBlock", "text": text, "wrap": True}]}
        return {"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}
    return payload


def in_language(payload: dict[str, Any], language: str) -> dict[str, Any]:
    """The payload with ``title`` and ``text`` in ``language``, when it carries them (``title_ja``…)."""
    if language == "en" or f"title_{language}" not in payload:
        return payload
    return {**payload, "title": payload[f"title_{language}"], "text": payload.get(f"text_{language}", "")}


class DeliveryError(Exception):
    """A try that failed; ``permanent`` when trying again cannot help (a wrong URL)."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def send_webhook(hook: WebhookConfig, payload: dict[str, Any]) -> None:
    body = json.dumps(webhook_body(payload, hook.format), ensure_ascii=False).encode()
    request = urllib.request.Request(hook.url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", "User-Agent": "jisaku-alerts"})
    try:
        with urllib.request.urlopen(request, timeout=hook.timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as err:
        # 4xx other than "too many / too early / timeout": the URL or format is wrong.
        permanent = 400 <= err.code < 500 and err.code not in (408, 425, 429)
        raise DeliveryError(f"HTTP {err.code} {err.reason}", permanent) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DeliveryError(f"cannot reach {mask_url(hook.url)}: {reason}") from None


def send_mail(smtp: SmtpConfig, payload: dict[str, Any]) -> None:
    message = EmailMessage()
    message["Subject"] = f"{smtp.subject_prefix} {payload.get('title', '')}".strip()
    message["From"] = smtp.sender
    message["To"] = ", ".join(smtp.to)
    message.set_content(f"{payload.get('text', '')}\n\n--\n"
                        + json.dumps(payload, ensure_ascii=False, indent=1) + "\n")
    context = ssl.create_default_context()
    try:
        if smtp.ssl:
            server: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
        else:
            server = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
        with server:
            if smtp.starttls and not smtp.ssl:
                server.starttls(context=context)
            if smtp.user:
                server.login(smtp.user, smtp.password or "")
            server.send_message(message)
    except smtplib.SMTPAuthenticationError as err:
        raise DeliveryError(f"the mail server {smtp.host} refused the login of {smtp.user!r}"
                            f" ({err.smtp_code}); check user and password", permanent=True) from None
    except smtplib.SMTPNotSupportedError:
        raise DeliveryError(f"the mail server {smtp.host}:{smtp.port} does not offer STARTTLS; use the"
                            " submission port 587, ssl = true on port 465, or starttls = false on a"
                            " closed network", permanent=True) from None
    except (smtplib.SMTPException, OSError) as err:
        raise DeliveryError(f"mail via {smtp.host}:{smtp.port}: {err}") from None


# ---------------------------------------------------------------- the sender


Publish = Callable[[str, bytes], Any]


class Notifier:
    """Sends what is queued in ``notify_outbox`` to every channel, retrying each on its own.

    ``publish(topic, payload)`` is the gateway's own MQTT publish (``Gateway.publish``),
    needed only with ``[notify.mqtt]``.
    """

    def __init__(self, db: Database, config: NotifyConfig | None = None, publish: Publish | None = None):
        self.db = db
        self.config = config or NotifyConfig()
        self.publish = publish
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
        channels = self.config.channel_names()
        with write(connection):  # several gateway workers: one of them fans out each message
            rows = connection.execute("SELECT id, payload FROM notify_outbox WHERE fanned_out = 0 ORDER BY id")
            for row in rows.fetchall():
                event = json.loads(row["payload"]).get("event")
                if event in self.config.events:
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
        payload = in_language(payload, self.config.language)
        if channel == "smtp" and self.config.smtp:
            send_mail(self.config.smtp, payload)
        elif channel == "mqtt" and self.config.mqtt:
            self._publish(payload)
        else:
            hook = next((h for h in self.config.webhook if h.name == channel), None)
            if hook is None:
                raise DeliveryError(f"channel {channel!r} is no longer in jisaku.toml [notify]", permanent=True)
            send_webhook(hook, payload)

    def _publish(self, payload: dict[str, Any]) -> None:
        topic = self.config.mqtt.topic
        if payload.get("device_id"):
            topic += f"/{payload['device_id']}"
        try:
            info = self.publish(topic, json.dumps(payload, ensure_ascii=False).encode())
            if info is not None and hasattr(info, "wait_for_publish"):
                info.wait_for_publish(timeout=10)
                if not info.is_published():
                    raise DeliveryError(f"the broker did not take the alert on {topic}")
        except (RuntimeError, ValueError, OSError) as err:  # paho: not connected / queue full
            raise DeliveryError(f"MQTT {topic}: {err}") from None

    # ------------------------------------------------------------ for operators

    def deliveries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deliveries with their state (pending, sent, failed) and last error."""
        rows = self.db.connection.execute(
            "SELECT d.id, d.channel, d.state, d.attempts, d.last_error, d.created, d.done, o.payload"
            " FROM notify_deliveries d JOIN notify_outbox o ON o.id = d.message_id ORDER BY d.id DESC LIMIT ?",
            (limit,)).fetchall()
        return [{**{k: row[k] for k in row.keys() if k != "payload"}, "payload": json.loads(row["payload"])}
                for row in rows]
