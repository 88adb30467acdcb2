"""Where an alert's notification goes: the one place that decides it.

Two questions, asked at two moments:

* :func:`route_for`, when the alert changes (in the same transaction, called by alerts.py):
  whose is it? A **practice** alert (its rule is a practice rule, or its device a practice
  device) belongs to the rule's owner, a learner; any other belongs to the device's town.
* :class:`Routes`, when the notifier fans the message out: to which channels?

  - practice → only the owner's own target (``users.notify``, set on "My notifications");
    none → no channel at all: the alert is on the operator alerts page only;
  - otherwise → the town's own ``[notify]`` (``towns.notify``), or, for the first town when
    it has none, ``jisaku.toml``'s ``[notify]``, as before towns existed; another town
    without its own gets nothing (never the first town's staff).

A learner's target is one channel, kept as JSON: a webhook, or an e-mail address sent
through ``jisaku.toml``'s mail server::

    {"webhook": {"url": "https://hooks.slack.com/services/T0/B0/XX", "format": "slack"}}
    {"email": "tanaka@town.example.jp", "language": "en"}

Example::

    route = route_for(connection, rule_id=3, device_id="snow-9")   # {"town": "main", "practice": True, "owner": "sato"}
    routes = Routes(db, NotifyConfig.from_settings(settings.notify))
    routes.channels({"event": "raised", "route": route})            # ["user:sato"]
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .db import Database
from .notify_config import NotifyConfig, SmtpConfig, WebhookConfig, mask_url
from .towns import Towns

USER_PREFIX = "user:"
TOWN_PREFIX = "town:"
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class LearnerTarget(BaseModel):
    """A learner's own notification target (``users.notify``): a webhook or an e-mail address."""

    model_config = ConfigDict(extra="forbid")
    webhook: WebhookConfig | None = None
    email: str | None = Field(None, max_length=254, examples=["tanaka@town.example.jp"])
    language: Literal["ja", "en"] = "ja"

    @model_validator(mode="after")
    def _one(self) -> "LearnerTarget":
        if (self.webhook is None) == (self.email is None):
            raise ValueError("give one target: a webhook url, or an e-mail address")
        if self.email is not None and not EMAIL.fullmatch(self.email):
            raise ValueError(f"{self.email!r} is not an e-mail address")
        return self

    def described(self) -> str:
        """What the pages and the audit log may show: the host or the address, never a token."""
        return mask_url(self.webhook.url) if self.webhook else str(self.email)


def learner_target(db: Database, user: str) -> LearnerTarget | None:
    row = db.connection.execute("SELECT notify FROM users WHERE name=?", (user,)).fetchone()
    if not row or not row[0]:
        return None
    try:
        return LearnerTarget.model_validate(json.loads(row[0]))
    except (ValueError, ValidationError):  # hand-edited: treated as none rather than failing the notifier
        return None


def route_for(connection: sqlite3.Connection, rule_id: int | None, device_id: str,
              alert_id: int | None = None) -> dict[str, Any]:
    """Whose an alert's notification is: ``{"town", "practice", "owner"}`` (see the module's text).

    A removed device is no longer in the registry: its alert's earlier messages say whose it was,
    so a practice device removed mid-alert does not tell the town that its alert cleared.
    """
    rule = connection.execute("SELECT town, practice, owner FROM alert_rules WHERE id=?",
                              (rule_id,)).fetchone() if rule_id is not None else None
    device = connection.execute("SELECT town, practice FROM devices WHERE id=?", (device_id,)).fetchone()
    if device is None and alert_id is not None:
        for (payload,) in connection.execute(
                "SELECT payload FROM notify_outbox WHERE json_extract(payload, '$.alert_id') = ?"
                " ORDER BY id DESC LIMIT 1", (alert_id,)):
            earlier = json.loads(payload).get("route")
            if earlier:
                return earlier
    practice = bool(rule and rule["practice"]) or bool(device and device["practice"])
    town = device["town"] if device else (rule["town"] if rule else None)
    return {"town": town, "practice": practice, "owner": rule["owner"] if rule else None}


class Routes:
    """Which channels a message goes to, and what each channel is (for the notifier).

    Channel names: ``jisaku.toml``'s as they always were (``webhook-1``, ``smtp``, ``mqtt``);
    a town's own ``town:<id>:<name>``; a learner's ``user:<name>``.
    """

    def __init__(self, db: Database, default: NotifyConfig):
        self.db = db
        self.default = default

    def channels(self, payload: dict[str, Any]) -> list[str]:
        """The channels this message goes to (none: the operator alerts page only)."""
        route = payload.get("route") or {}  # queued before towns: the first town's, as then
        event = payload.get("event")
        if route.get("practice"):
            owner = route.get("owner")
            if not owner or event not in self.default.events or learner_target(self.db, owner) is None:
                return []
            return [USER_PREFIX + owner]
        town = self._town_config(route.get("town"))
        if town is None:
            return []
        prefix, config = town
        return [prefix + name for name in config.channel_names()] if event in config.events else []

    def resolve(self, channel: str) -> tuple[NotifyConfig, str] | None:
        """The settings a channel is sent with and its name within them; None if it is gone."""
        if channel.startswith(USER_PREFIX):
            target = learner_target(self.db, channel[len(USER_PREFIX):])
            if target is None:
                return None
            if target.webhook is not None:
                hook = target.webhook.model_copy(update={"name": channel})
                return self.default.model_copy(update={"webhook": [hook], "smtp": None, "mqtt": None,
                                                       "language": target.language}), channel
            if self.default.smtp is None:
                return None
            smtp = self.default.smtp.model_copy(update={"to": [target.email]})
            return self.default.model_copy(update={"webhook": [], "smtp": smtp, "mqtt": None,
                                                   "language": target.language}), "smtp"
        if channel.startswith(TOWN_PREFIX):
            town_id, _, name = channel[len(TOWN_PREFIX):].partition(":")
            town = self._town_config(town_id)
            return (town[1], name) if town is not None and town[0] else None
        return self.default, channel

    def _town_config(self, town_id: str | None) -> tuple[str, NotifyConfig] | None:
        """(channel prefix, settings) of a town's notifications; as ``Towns.settings(…).notify`` decides."""
        towns = Towns(self.db)
        first = towns.first()
        town = towns.get(town_id or first)
        if town is None:
            return None
        if town.notify is not None:
            try:
                return f"{TOWN_PREFIX}{town.id}:", NotifyConfig.from_settings(town.notify)
            except ValueError:
                return None
        return ("", self.default) if town.id == first else None


def check_email_possible(default: NotifyConfig, target: LearnerTarget) -> None:
    """An e-mail target needs jisaku.toml's mail server; say so rather than fail silently later."""
    if target.email is not None and default.smtp is None:
        raise ValueError("this deployment has no mail server ([notify.smtp] in jisaku.toml): give a webhook url"
                         " instead, or ask the administrator to set one up")
