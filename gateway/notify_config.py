"""Where alert notifications go: the ``[notify]`` table of ``jisaku.toml``, checked.

Webhooks (generic, Slack, Teams, LINE WORKS), one mail server, and MQTT; which
events to send, and in which language. docs/alerts.md has every key.

Example::

    config = NotifyConfig.from_settings({"webhook": [{"url": "https://hooks.slack.com/services/T0/B0/XX",
                                                      "format": "slack"}], "events": ["raised", "cleared"]})
    config.channel_names()      # ["webhook-1"]
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

EVENTS = ("raised", "acknowledged", "cleared")


def mask_url(url: str) -> str:
    """A URL fit for a log: webhook URLs carry their token in the path or query, so only the host shows."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"



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
