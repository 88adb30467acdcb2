"""The equipment watch (kinds/equipment_watch): real local services going down and up.

The pipeline test runs the watch as on a real box (no simulation): it checks a TCP port and
an HTTP status page that the test itself serves, closes and breaks, through the real broker
and gateway, with alert rules on ``<name>_up`` and a webhook that receives the notifications.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from jisaku.device.config import DeviceConfigError, load_device_config
from jisaku.device.runner import run_device
from jisaku.kinds.equipment_watch.checks import PingCheck, Result, TcpCheck, ping_ready, system_ping
from jisaku.kinds.equipment_watch.pi import EquipmentWatch
# Real local services, opened and closed by the test: the same the simulation points its checks at.
from jisaku.kinds.equipment_watch.simulate import EquipmentOnTheLan, PretendPort, PretendStatusPage

from .brokers import HOST
from .receivers import WebhookReceiver
from .town import KINDS, wait_until

ROUTER_DOWN = {"name": "Router down", "kind": "equipment_watch",
               "condition": {"type": "below", "metric": "router_up", "raise_at": 0}}
# On the watch's own "down" event, so staff are told why (an "event" rule, docs/alerts.md).
PAGE_DOWN = {"name": "File server down", "kind": "equipment_watch",
             "condition": {"type": "event", "event": "down", "match": {"check": "file_server"}, "clear_event": "up"}}


def write_device(folder: Path, checks: str, watch: str = "interval_s = 0.5\ntimeout_s = 3\ntries = 3\nretry_after_s = 0.1",
                 device_id: str = "watch-t"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "device.toml").write_text(
        f'[device]\nid = "{device_id}"\nkind = "equipment_watch"\nname = "Test watch"\n'
        f"public = false\ninterval_s = 1\n\n[watch]\n{watch}\n\n{checks}", encoding="utf-8")
    return load_device_config(folder)


class Link:
    """Stands in for the device's link: keeps what the app sends."""

    def __init__(self):
        self.readings: list[dict] = []
        self.events: list[tuple[str, dict]] = []

    def publish_reading(self, values, ts=None):
        self.readings.append(values)

    def publish_event(self, name, values=None):
        self.events.append((name, values or {}))


# ---------------------------------------------------------------- through the pipeline


def test_a_port_and_a_status_page_going_down_and_up_raise_and_clear_alerts_that_reach_staff(make_town, tmp_path):
    port, page, webhook = PretendPort(), PretendStatusPage(), WebhookReceiver()
    config = write_device(tmp_path / "watch", f'[[checks]]\nname = "router"\ntcp = "{HOST}:{port.port}"\n\n'
                                              f'[[checks]]\nname = "file_server"\nhttp = "{page.url}"\n')
    stop = threading.Event()
    try:
        town = make_town([config], notify={"webhook": [{"name": "office", "url": webhook.url + "/hook"}],
                                           "retry_first_s": 0.2})
        town.alerts.add_rule(ROUTER_DOWN)
        town.alerts.add_rule(PAGE_DOWN)
        # As on a real box: no simulation, the real checks against the test's services.
        device = threading.Thread(target=run_device, daemon=True, args=(
            config, town.broker_url, town.secrets["watch-t"], False, stop, tmp_path / "state"))
        device.start()

        def last_reading():
            readings = town.store.readings("watch-t")
            return readings[-1]["v"] if readings else {}

        def events(name):
            return [e["v"] for e in town.store.events("watch-t") if e["event"] == name]

        def active():
            return sorted(a.rule_name for a in town.alerts.alerts(active_only=True))

        first = wait_until(lambda: last_reading().get("router_up") == 1 and last_reading(), 20,
                           "the watch reports the router and the page up")
        assert first["file_server_up"] == 1 and first["down"] == 0
        assert first["router_ms"] >= 0 and first["file_server_ms"] >= 0  # response times

        port.close()
        wait_until(lambda: active() == ["Router down"], 20, "closing the port raises 'Router down'")
        (down,) = wait_until(lambda: events("down"), 10, "a 'down' event is stored")
        assert (down["check"], down["reason"], down["target"]) == ("router", "connection refused",
                                                                   f"{HOST}:{port.port}")
        now = last_reading()
        assert now["router_up"] == 0 and "router_ms" not in now and now["file_server_up"] == 1

        page.set_up(False)  # the page answers HTTP 503
        wait_until(lambda: active() == ["File server down", "Router down"], 20, "HTTP 503 raises 'File server down'")
        assert wait_until(lambda: len(events("down")) == 2 and events("down"), 10, "a second 'down' event")[0][
            "reason"] == "HTTP 503"

        port.open()  # the same port number again, as a router that has rebooted
        page.set_up(True)
        wait_until(lambda: active() == [], 20, "both alerts clear when the equipment answers again")
        ups = wait_until(lambda: len(events("up")) == 2 and events("up"), 10, "two 'up' events")
        assert {u["check"] for u in ups} == {"router", "file_server"} and all(u["down_s"] > 0 for u in ups)

        # Staff hear of it: raised and cleared for each, on the office webhook.
        wait_until(lambda: len(webhook.delivered("/hook")) == 4, 20, "four notifications reach the webhook")
        told = sorted((body["rule"], body["event"]) for body in webhook.delivered("/hook"))
        assert told == [("File server down", "cleared"), ("File server down", "raised"),
                        ("Router down", "cleared"), ("Router down", "raised")]
        assert {body["device_id"] for body in webhook.delivered("/hook")} == {"watch-t"}
        (page_down,) = [b for b in webhook.delivered("/hook") if (b["rule"], b["event"]) == ("File server down", "raised")]
        assert "reason HTTP 503" in page_down["message"] and "HTTP 503" in page_down["message_ja"], "staff are told why"
    finally:
        stop.set()
        port.close()
        page.close()
        webhook.close()


def test_the_simulation_takes_its_pretend_router_down_and_up_through_the_gateway(make_town):
    config = load_device_config(KINDS / "equipment_watch", {
        "device": {"id": "watch-sim"},
        "watch": {"interval_s": 0.3, "timeout_s": 0.5, "tries": 2, "retry_after_s": 0.05},
        "simulate": {"cycle_s": 60, "down": [{"check": "router", "at_s": 1, "for_s": 2}]}})
    town = make_town([config])
    town.run_devices()

    def events(name):
        return [(e["v"]["check"], e["v"].get("reason")) for e in town.store.events("watch-sim") if e["event"] == name]

    wait_until(lambda: events("up") == [("router", None)], 20, "the pretend router goes down and comes back")
    assert events("down") == [("router", "connection refused")]

    def latest():
        v = town.store.readings("watch-sim")[-1]["v"]
        return v["phone_exchange_up"], v["router_up"], v["file_server_up"], v["down"]
    wait_until(lambda: latest() == (1, 1, 1, 0), 10, "the next reading has everything up")


# ---------------------------------------------------------------- the watch on its own


def test_one_lost_ping_is_tried_again_and_is_no_alarm(tmp_path):
    config = write_device(tmp_path, '[[checks]]\nname = "phone_exchange"\nping = "192.168.1.20"\n',
                          watch="tries = 2\nretry_after_s = 0.01")
    link = Link()
    watch = EquipmentWatch(config, link)
    world = EquipmentOnTheLan(config)
    world.attach(watch)  # a pretend network: no ICMP needed
    try:
        world.boxes["phone_exchange"].lose_next = True
        watch.check_all()
        assert link.readings[-1]["phone_exchange_up"] == 1 and link.events == []

        watch.tries = 1  # with no second try, the same lost ping would be an alarm
        world.boxes["phone_exchange"].lose_next = True
        watch.check_all()
        assert link.readings[-1] == {"phone_exchange_up": 0, "down": 1}
        assert link.events == [("down", {"check": "phone_exchange", "target": "192.168.1.20",
                                         "reason": "timed out", "tries": 1})]
    finally:
        watch.close()


def test_a_dead_host_does_not_hold_up_the_others(tmp_path):
    config = write_device(tmp_path, '[[checks]]\nname = "dead_box"\nping = "192.168.1.99"\n\n'
                                    '[[checks]]\nname = "live_box"\ntcp = "127.0.0.1:9"\n', watch="tries = 1")
    watch = EquipmentWatch(config, Link())
    live_answered = threading.Event()
    # The dead box answers only once the live one has been checked, or gives up after 10 s:
    # checked one after the other, dead box first, it would be down.
    watch.checks[0].pinger = lambda host, timeout_s: Result(live_answered.wait(10), 1.0)
    watch.checks[1].probe = lambda: (live_answered.set(), Result(True, 0.5))[1]
    try:
        results = watch.check_all()
    finally:
        watch.close()
    assert results["dead_box"].up and results["live_box"].up


def test_settings_from_afar_change_the_interval_and_timeouts_but_not_a_checks_own(tmp_path):
    config = write_device(tmp_path, '[[checks]]\nname = "router"\ntcp = "192.168.1.1:443"\n\n'
                                    '[[checks]]\nname = "slow_server"\nhttp = "http://192.168.1.30/"\ntimeout_s = 9\n')
    watch = EquipmentWatch(config, Link())
    watch.apply_settings({"interval_s": 30, "timeout_s": 2, "tries": 4})
    watch.close()
    assert (watch.interval_s, watch.tries) == (30, 4)
    assert [c.timeout_s for c in watch.checks] == [2, 9]


@pytest.mark.parametrize("checks, message", [
    ('[[checks]]\nname = "Phone exchange"\nping = "192.168.1.20"\n',
     'line 14: name \'Phone exchange\' cannot name readings: use a-z, 0-9 and _ (starting with a letter, at most 40),'
     ' e.g. name = "phone_exchange"'),
    ('[[checks]]\nname = "router"\ntcp = "192.168.1.1:443"\n\n[[checks]]\nname = "2nd-router"\ntcp = "192.168.1.2:443"\n',
     'line 18: name \'2nd-router\' cannot name readings'),
    ('[[checks]]\nname = "router"\ntcp = "192.168.1.1"\n', 'line 14 (router): tcp must be "host:port"'),
    ('[[checks]]\nname = "router"\nping = "192.168.1.1"\ntcp = "192.168.1.1:443"\n',
     'line 14 (router): give exactly one of ping = '),
    ('[[checks]]\nname = "nas"\nhttp = "192.168.1.30/status"\n', 'line 14 (nas): http must be an address starting with'),
    ('[[checks]]\nname = "nas"\nhttp = "http://192.168.1.30/"\nexpect = 200\n',
     'line 14: unknown expect; a check may have name, ping, tcp, http, expect_status'),
    ('[[checks]]\nname = "a"\nping = "10.0.0.1"\n\n[[checks]]\nname = "a"\nping = "10.0.0.2"\n',
     "line 18: a second check called 'a'"),
    ("", "nothing to watch. Add a [[checks]] table"),
])
def test_a_mistake_in_the_checks_stops_it_at_start_naming_the_line_and_what_to_write(tmp_path, checks, message):
    config = write_device(tmp_path, checks)
    with pytest.raises(DeviceConfigError) as caught:
        EquipmentWatch(config, Link())
    assert message in str(caught.value)
    assert str(tmp_path / "device.toml") in str(caught.value)


# ---------------------------------------------------------------- the system's ping command


def fake_ping(folder: Path, script: str, monkeypatch) -> None:
    """A ``ping`` on PATH that prints what iputils' would (tests need no network and no ping)."""
    folder.mkdir(exist_ok=True)
    path = folder / "ping"
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("script, expected", [
    # iputils in a Japanese locale says 時間=…ミリ秒: the watch asks for LC_ALL=C and gets this.
    ('[ "$LC_ALL" = C ] || exit 3\necho "64 bytes from 192.168.1.20: icmp_seq=1 ttl=64 time=0.412 ms"\n',
     Result(True, 0.412)),
    ('echo "1 packets transmitted, 0 received, 100% packet loss, time 0ms"\nexit 1\n', Result(False, None, "timed out")),
    ('echo "From 192.168.1.5 icmp_seq=1 Destination Host Unreachable"\nexit 1\n',
     Result(False, None, "host unreachable")),
    ('echo "ping: nosuchbox: Name or service not known" >&2\nexit 2\n',
     Result(False, None, "nosuchbox: Name or service not known")),
])
def test_the_ping_commands_answers_are_read(tmp_path, monkeypatch, script, expected):
    fake_ping(tmp_path / "bin", script, monkeypatch)
    assert system_ping("192.168.1.20", 1) == expected
    assert PingCheck("phone_exchange", "192.168.1.20", 1).probe() == expected


def test_a_box_that_may_not_ping_is_told_how_to_allow_it_at_start(tmp_path, monkeypatch):
    fake_ping(tmp_path / "bin", 'echo "ping: socktype: SOCK_RAW" >&2\necho "ping: socket: Operation not permitted" >&2\n'
                                'echo "ping: => missing cap_net_raw+p capability or setuid?" >&2\nexit 2\n', monkeypatch)
    assert "net.ipv4.ping_group_range" in ping_ready()
    config = write_device(tmp_path / "watch", '[[checks]]\nname = "phone_exchange"\nping = "192.168.1.20"\n')
    watch = EquipmentWatch(config, Link())
    try:
        with pytest.raises(DeviceConfigError, match="ping_group_range"):
            watch.run(threading.Event())
    finally:
        watch.close()


def test_a_tcp_check_says_why_a_port_is_down():
    port = PretendPort()
    check = TcpCheck("router", HOST, port.port, timeout_s=1)
    assert check.probe().up
    port.close()
    assert check.probe() == Result(False, None, "connection refused")


def test_a_check_that_fails_unforeseen_is_down_with_the_error_and_the_watch_goes_on(tmp_path):
    config = write_device(tmp_path, '[[checks]]\nname = "odd_box"\nping = "192.168.1.98"\n\n'
                                    '[[checks]]\nname = "live_box"\nping = "192.168.1.99"\n', watch="tries = 1")
    link = Link()
    watch = EquipmentWatch(config, link)

    def broken(host, timeout_s):
        raise ValueError("something nobody foresaw")
    watch.checks[0].pinger = broken
    watch.checks[1].pinger = lambda host, timeout_s: Result(True, 0.7)
    try:
        watch.check_all()
    finally:
        watch.close()
    assert link.readings == [{"odd_box_up": 0, "live_box_up": 1, "live_box_ms": 0.7, "down": 1}]
    assert link.events[0][1]["reason"] == "the check failed: something nobody foresaw"
