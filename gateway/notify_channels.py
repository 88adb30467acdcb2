"""How a notification reaches people, one function per channel: webhook, mail, MQTT.

Each raises :class:`DeliveryError` when a try fails, ``permanent`` when trying
again cannot help; the outbox (notify_outbox.py) decides when to try again.

Example::

    hook = WebhookConfig(url="https://hooks.slack.com/services/T0/B0/XX", format="slack")
    send_webhook(hook, {"event": "raised", "title": "Deep snow", "text": "snow-1: depth_cm 31 ≥ 30"})
    send_mail(smtp_config, payload)
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from .notify_config import MqttConfig, SmtpConfig, WebhookConfig, mask_url

# The gateway's own MQTT publish (``Gateway.publish``): topic, payload.
Publish = Callable[[str, bytes], Any]


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


def publish_mqtt(publish: Publish, mqtt: MqttConfig, payload: dict[str, Any]) -> None:
    """Publish the alert on ``<topic>/<device id>`` through the gateway's own connection."""
    topic = mqtt.topic
    if payload.get("device_id"):
        topic += f"/{payload['device_id']}"
    try:
        info = publish(topic, json.dumps(payload, ensure_ascii=False).encode())
        if info is not None and hasattr(info, "wait_for_publish"):
            info.wait_for_publish(timeout=10)
            if not info.is_published():
                raise DeliveryError(f"the broker did not take the alert on {topic}")
    except (RuntimeError, ValueError, OSError) as err:  # paho: not connected / queue full
        raise DeliveryError(f"MQTT {topic}: {err}") from None
