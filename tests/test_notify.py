"""Notifications: real HTTP and SMTP receivers; retries driven with chosen clock times, not waits."""

from __future__ import annotations

import logging

import pytest

from jisaku.contract import settings
from jisaku.gateway.db import Database
from jisaku.gateway.notify_config import NotifyConfig, mask_url
from jisaku.gateway.notify_outbox import Notifier, enqueue

from .brokers import HOST, free_port
from .receivers import MailReceiver, WebhookReceiver
from .town import wait_until

T0 = 1_750_000_000.0
TOKEN = "B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"
MESSAGE = {"event": "raised", "title": "RAISED: Deep snow (City hall)", "text": "snow-1: depth_cm 31 ≥ 30",
           "device_id": "snow-1", "value": 31}


@pytest.fixture
def db(tmp_path) -> Database:
    return Database(tmp_path / "jisaku.db")


@pytest.fixture
def receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def notifier(db: Database, **config) -> Notifier:
    return Notifier(db, NotifyConfig.from_settings(config))


def test_a_webhook_that_fails_twice_gets_the_message_exactly_once_after_backing_off(db, receiver):
    receiver.fail_first = 2
    sender = notifier(db, webhook=[{"name": "office", "url": f"{receiver.url}/services/{TOKEN}"}], retry_first_s=10)
    enqueue(db.connection, MESSAGE)
    sender.run_once(T0)
    sender.run_once(T0 + 4.9)    # the first wait is 5-10 s (10 s, less up to half at random)
    assert [status for _, status, _ in receiver.posts] == [500]
    sender.run_once(T0 + 10)
    sender.run_once(T0 + 14.9)   # the second wait is twice as long: 10-20 s
    assert [status for _, status, _ in receiver.posts] == [500, 500]
    sender.run_once(T0 + 30)
    sender.run_once(T0 + 100)
    assert [status for _, status, _ in receiver.posts] == [500, 500, 200]
    assert receiver.delivered() == [MESSAGE]
    (delivery,) = sender.deliveries()
    assert (delivery["state"], delivery["attempts"]) == ("sent", 3)


def test_the_sender_thread_delivers_what_another_process_queued(db, receiver):
    # The dashboard's operator pages queue an acknowledgement; the gateway's notifier sends it.
    enqueue(db.connection, {**MESSAGE, "event": "acknowledged"})
    enqueue(db.connection, {**MESSAGE, "event": "cleared"})
    sender = notifier(db, webhook=f"{receiver.url}/hook", events=["raised", "acknowledged", "cleared"])
    sender.start()
    try:
        wait_until(lambda: len(receiver.delivered()) == 2, 10, "both messages arrive")
    finally:
        sender.stop()
    assert [body["event"] for body in receiver.delivered()] == ["acknowledged", "cleared"]


def test_acknowledgements_are_not_sent_unless_asked_for(db, receiver):
    sender = notifier(db, webhook=f"{receiver.url}/hook")
    for event in ("raised", "acknowledged", "cleared"):
        enqueue(db.connection, {**MESSAGE, "event": event})
    sender.run_once(T0)
    assert [body["event"] for body in receiver.delivered()] == ["raised", "cleared"]


def test_queued_messages_survive_a_restart(db, tmp_path, receiver):
    receiver.fail_first = 1
    first = notifier(db, webhook=f"{receiver.url}/hook")
    enqueue(db.connection, MESSAGE)
    first.run_once(T0)  # fails; the gateway is then stopped
    again = notifier(Database(tmp_path / "jisaku.db"), webhook=f"{receiver.url}/hook")
    again.run_once(T0 + 60)
    again.run_once(T0 + 120)
    assert receiver.delivered() == [MESSAGE]


def test_slack_teams_and_line_works_get_their_own_format(db, receiver):
    sender = notifier(db, webhook=[{"name": f, "url": f"{receiver.url}/{f}", "format": f}
                                   for f in ("generic", "slack", "teams", "lineworks")])
    enqueue(db.connection, MESSAGE)
    sender.run_once(T0)
    assert receiver.delivered("/generic") == [MESSAGE]
    assert receiver.delivered("/slack") == [{"text": "*RAISED: Deep snow (City hall)*\nsnow-1: depth_cm 31 ≥ 30"}]
    assert receiver.delivered("/lineworks") == [
        {"title": "RAISED: Deep snow (City hall)", "body": {"text": "snow-1: depth_cm 31 ≥ 30"}}]
    (teams,) = receiver.delivered("/teams")
    card = teams["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert [block["text"] for block in card["content"]["body"]] == [MESSAGE["title"], MESSAGE["text"]]


def test_people_read_the_language_the_settings_name(tmp_path, receiver):
    bilingual = {**MESSAGE, "title_ja": "発生: 積雪注意 (市役所)", "text_ja": "snow-1: depth_cm が 31（30 以上）"}
    for language in ("ja", "en"):
        db = Database(tmp_path / f"{language}.db")
        enqueue(db.connection, bilingual)
        notifier(db, language=language, webhook=[{"name": language, "url": f"{receiver.url}/{language}",
                                                  "format": "slack"}]).run_once(T0)
    assert receiver.delivered("/ja") == [{"text": "*発生: 積雪注意 (市役所)*\nsnow-1: depth_cm が 31（30 以上）"}]
    assert receiver.delivered("/en") == [{"text": "*RAISED: Deep snow (City hall)*\nsnow-1: depth_cm 31 ≥ 30"}]


def test_mail_goes_through_a_real_smtp_server(db):
    mail = MailReceiver()
    try:
        sender = notifier(db, smtp={"host": HOST, "port": mail.port, "starttls": False,
                                    "from": "jisaku@city.example", "to": "road@city.example"})
        enqueue(db.connection, MESSAGE)
        sender.run_once(T0)
    finally:
        mail.close()
    (message,) = mail.messages
    assert (message["From"], message["To"], message["Subject"]) == (
        "jisaku@city.example", "road@city.example", "[jisaku] RAISED: Deep snow (City hall)")
    assert message.get_content().startswith("snow-1: depth_cm 31 ≥ 30")


def test_a_mail_server_without_starttls_is_named_and_not_retried(db, caplog):
    mail = MailReceiver()
    try:
        sender = notifier(db, smtp={"host": HOST, "port": mail.port, "user": "jisaku", "password": "hunter2-secret",
                                    "from": "jisaku@city.example", "to": ["road@city.example"]})
        enqueue(db.connection, MESSAGE)
        with caplog.at_level(logging.WARNING):
            sender.run_once(T0)
    finally:
        mail.close()
    assert mail.messages == []
    (delivery,) = sender.deliveries()
    assert delivery["state"] == "failed" and "does not offer STARTTLS" in delivery["last_error"]
    assert "hunter2-secret" not in caplog.text


def test_giving_up_is_logged_without_the_webhook_token(db, caplog):
    dead = f"http://{HOST}:{free_port()}/services/{TOKEN}"
    sender = notifier(db, webhook=[{"name": "office", "url": dead}], retry_first_s=10, give_up_after_min=1)
    enqueue(db.connection, MESSAGE)
    with caplog.at_level(logging.WARNING):
        sender.run_once(T0)
        sender.run_once(T0 + 59)  # the next wait (10-20 s) would end past the minute: give up
    (delivery,) = sender.deliveries()
    assert (delivery["state"], delivery["attempts"]) == ("failed", 2)
    assert "gave up notifying office after 2 tries" in caplog.text
    assert TOKEN not in caplog.text and "services" not in caplog.text
    assert mask_url(dead) == f"http://{HOST}/…"


def test_a_wrong_webhook_url_fails_at_once(db):
    typo = WebhookReceiver(fail_first=1000, fail_status=404)  # the path is wrong: retrying cannot help
    try:
        sender = notifier(db, webhook=f"{typo.url}/hook")
        enqueue(db.connection, MESSAGE)
        sender.run_once(T0)
        sender.run_once(T0 + 3600)
    finally:
        typo.close()
    assert len(typo.posts) == 1
    assert [(d["state"], d["last_error"]) for d in sender.deliveries()] == [("failed", "HTTP 404 Not Found")]


def test_notify_settings_come_from_jisaku_toml(tmp_path):
    file = tmp_path / "jisaku.toml"
    file.write_text(
        '[notify]\nevents = ["raised", "cleared", "acknowledged"]\n'
        '[[notify.webhook]]\nurl = "https://hooks.slack.com/services/T0/B0/XX"\nformat = "slack"\n'
        '[notify.smtp]\nhost = "smtp.city.example"\nfrom = "jisaku@city.example"\nto = ["road@city.example"]\n'
        'password = "hunter2-secret"\n')
    config = NotifyConfig.from_settings(settings.load(file, environ={}).notify)
    assert config.channel_names() == ["webhook-1", "smtp"]
    assert (config.smtp.port, config.smtp.starttls, config.webhook[0].format) == (587, True, "slack")
    assert "hunter2" not in repr(config) and "XX" not in repr(config)


@pytest.mark.parametrize("table, error", [
    ({"webhok": "https://x.example/"}, "notify.webhok: unknown key"),
    ({"webhook": {"url": "hooks.slack.com/services/T0/B0/XX"}}, "notify.webhook.0.url: Value error, a webhook url starts with https://"),
    ({"webhook": {"url": "https://x.example/", "format": "discord"}}, "webhook.0.format: Input should be 'generic', 'slack'"),
    ({"smtp": {"host": "smtp.city.example", "password": "hunter2-secret", "to": ["a@b"]}}, "notify.smtp.from: Field required"),
    ({"mqtt": {"topic": "alerts/#"}}, "must start with jisaku/_"),
])
def test_notify_mistakes_are_named_and_secrets_kept_out(table, error):
    with pytest.raises(ValueError, match=error) as raised:
        NotifyConfig.from_settings(table)
    assert "hunter2" not in str(raised.value) and "XX" not in str(raised.value)
