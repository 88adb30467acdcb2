"""A device that knows two broker addresses moves to the second when the first box is gone.

Two real brokers stand for two boxes: box A runs Mosquitto, box B the embedded amqtt broker.
Each has its own gateway, and both gateways write into one store, as gateway replicas on a
cluster do; the store keeps one reading per (device, ts, seq), so a batch that reached box A
but whose acknowledgement was lost, and was then sent again to box B, is stored once.
The board side of the same rule is tests/test_firmware.py's
test_board_moves_to_the_next_broker_round_the_list.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from jisaku.contract.mqtt import BrokerAddress
from jisaku.device import link as link_module
from jisaku.device.config import DeviceConfigError, load_device_config
from jisaku.device.link import DeviceLink
from jisaku.device.runner import broker_addresses
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.secrets import new_secret
from jisaku.gateway.service import Gateway
from jisaku.gateway.store import SQLiteStore

from .brokers import EmbeddedBrokerThread, MosquittoServer, free_port, mosquitto_available
from .conftest import require
from .sensor_loop import Sensor
from .town import wait_until

DEVICE = "snow-1"
EVERY_S = 0.2
# The documented time to move (docs/deploy.md "More than one broker address"): at most
# 21 s of pauses before the move, 3 s before the first try at the next broker, 2 s of
# backlog grace there; generously more, as a limit for a failure, not a measurement.
MOVE_LIMIT_S = 50


def test_broker_addresses_are_one_or_several_and_mistakes_say_what_to_write():
    parse = BrokerAddress.parse_list
    a, b = BrokerAddress("box-a", 1883), BrokerAddress("box-b", 1884)
    assert parse("mqtt://box-a:1883 mqtt://box-b:1884") == [a, b]
    assert parse("mqtt://box-a:1883, mqtt://box-b:1884") == [a, b]
    assert parse("box-a,box-b:1884") == [a, b]
    assert parse(["mqtt://box-a:1883", "mqtt://box-b:1884"]) == [a, b]   # a list in device.toml
    assert parse("mqtt://box-a:1883") == [a]
    for wrong, says in [("mqtt://box-a:1883;mqtt://box-b:1883", "several are written mqtt://box-a:1883 mqtt://box-b"),
                        ("http://box-a", "should look like mqtt://host:1883"),
                        ("mqtt://box-a:port", "should look like mqtt://host:1883"),
                        ("mqtt://box-a mqtts://box-b", "mix mqtt:// and mqtts://"),
                        ("mqtt://box-a mqtt://box-a:1883", "the same address twice"),
                        ("  ", "no broker address given"),
                        ([1883], "should be text")]:
        with pytest.raises(ValueError, match=says):
            parse(wrong)
    # The gateway, the dashboard and the command line talk to one broker, that of their box.
    with pytest.raises(ValueError, match="only a device takes more than one"):
        BrokerAddress.parse("mqtt://box-a:1883 mqtt://box-b:1883")


def test_jisaku_device_run_takes_the_brokers_from_the_flag_then_device_toml_then_the_setting(tmp_path):
    (tmp_path / "device.toml").write_text('[device]\nid = "snow-1"\nkind = "snow_gauge"\n')
    plain = load_device_config(tmp_path)
    with_list = load_device_config(tmp_path, {"device": {"broker": ["mqtt://box-a:1883", "mqtt://box-b:1883"]}})
    setting = "mqtt://127.0.0.1:1883"
    assert broker_addresses(plain, None, setting) == setting
    assert broker_addresses(with_list, None, setting) == ["mqtt://box-a:1883", "mqtt://box-b:1883"]
    assert broker_addresses(with_list, "mqtt://box-c:1883 mqtt://box-d:1883", setting) == \
        "mqtt://box-c:1883 mqtt://box-d:1883"
    with pytest.raises(DeviceConfigError, match="several are written mqtt://box-a:1883 mqtt://box-b:1883"):
        broker_addresses(plain, "mqtt://box-a:1883;mqtt://box-b:1883", setting)
    done = subprocess.run([sys.executable, "-m", "jisaku.cli", "device", "run", str(tmp_path),
                           "--broker", "mqtt://box-a:1883;mqtt://box-b:1883"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "JISAKU_DEVICE_SECRET": "x"})
    assert done.returncode != 0 and "several are written mqtt://box-a:1883 mqtt://box-b:1883" in done.stderr


class Boxes:
    """Box A (Mosquitto) and box B (embedded), a gateway on each, one store."""

    def __init__(self, directory):
        db = Database(directory / "jisaku.db")
        self.registry, self.store = Registry(db), SQLiteStore(db)
        self.secret = self.registry.add_device(DeviceRecord(DEVICE, "snow_gauge"))
        gateway_secret = new_secret()
        accounts = {DEVICE: self.secret, "_gateway": gateway_secret}
        self.a = MosquittoServer(directory / "box-a", accounts)
        self.b = EmbeddedBrokerThread(accounts)
        self.gateway_a = Gateway(self.store, self.registry, self.a.url, "_gateway", gateway_secret,
                                 client_id="jisaku-gateway-a")
        self.gateway_b = Gateway(self.store, self.registry, self.b.url, "_gateway", gateway_secret,
                                 client_id="jisaku-gateway-b")
        for gateway in (self.gateway_a, self.gateway_b):
            gateway.start()
            wait_until(gateway.connected.is_set, 10, "each gateway connects to its broker")

    def close(self) -> None:
        for part in (self.gateway_a, self.gateway_b, self.a, self.b):
            part.stop()


def test_a_device_moves_to_the_second_broker_when_the_first_box_dies_and_loses_nothing(tmp_path, caplog):
    require(mosquitto_available(), "Mosquitto", "sudo apt-get install mosquitto")
    caplog.set_level("INFO", logger=link_module.__name__)
    boxes = Boxes(tmp_path)
    configs: list[dict] = []
    # persistent: a device with outputs keeps a session, and that session lives in one broker.
    link = DeviceLink(DEVICE, boxes.secret, f"{boxes.a.url} {boxes.b.url}", tmp_path / "device",
                      on_config=lambda settings: (configs.append(settings), (True, "ok"))[1], persistent=True)
    link.start()
    sensor = Sensor(link, EVERY_S, metric="depth_cm")
    try:
        wait_until(lambda: boxes.gateway_a.stored_readings >= 5, 20, "readings flow through box A")
        assert link.broker == BrokerAddress.parse(boxes.a.url), "the first address is preferred"
        assert boxes.gateway_b.stored_readings == 0

        boxes.a.stop()  # box A dies for good, while the device goes on measuring
        died = time.monotonic()
        wait_until(lambda: boxes.gateway_b.stored_readings > 0, MOVE_LIMIT_S, "readings arrive through box B")
        moved_after = time.monotonic() - died
        print(f"the device's readings arrived through box B {moved_after:.1f} s after box A died")
        assert link.broker == BrokerAddress.parse(boxes.b.url)
        assert f"moving from {boxes.a.url} to {boxes.b.url}" in caplog.text
        assert f"connected to {boxes.b.url}\n" in caplog.text

        # It subscribed again on box B: settings sent there reach it and are acknowledged there.
        boxes.gateway_b.push_config(DEVICE, {"interval_s": 30})
        wait_until(lambda: (boxes.store.config_state(DEVICE) or {}).get("state") == "applied", 10,
                   "the device applies settings sent through box B")
        assert configs == [{"interval_s": 30}]

        # Box A comes back: the device stays on box B (it moves only when its broker is lost).
        boxes.a.start()
        wait_until(boxes.gateway_a.connected.is_set, 10, "box A's gateway is back")
        through_b = boxes.gateway_b.stored_readings
        wait_until(lambda: boxes.gateway_b.stored_readings >= through_b + 10, 20, "readings go on through box B")
        taken = sensor.pause()
        wait_until(lambda: len(link.outbox) == 0, 20, "the outbox empties")
        wait_until(lambda: boxes.store.reading_count(DEVICE) >= taken, 10, f"all {taken} readings are stored")
        # (Box A's own gateway may get a message that box A kept from before it died: its session.)
        assert link.broker == BrokerAddress.parse(boxes.b.url), "it stays on box B"
        assert caplog.text.count(f"connected to {boxes.a.url}\n") == 1, "it did not go back to box A"
    finally:
        sensor.stop.set()
        link.stop()
        boxes.close()

    # Every reading the device took is stored once: the store keeps one per (device, ts, seq),
    # whichever box brought it and however often it came.
    readings = boxes.store.readings(DEVICE, since=0, limit=10_000)
    seqs = [r["seq"] for r in readings]
    assert sorted(r["v"]["depth_cm"] for r in readings) == [float(n) for n in range(taken)], "none lost"
    assert len(seqs) == len(set(seqs)) == taken, "none twice"


def test_a_device_starts_with_the_first_broker_that_answers(tmp_path):
    accounts = {DEVICE: new_secret()}
    dead = [f"mqtt://127.0.0.1:{free_port()}" for _ in range(2)]  # nothing listens there
    with EmbeddedBrokerThread(accounts) as alive:
        link = DeviceLink(DEVICE, accounts[DEVICE], f"{dead[0]}, {dead[1]}, {alive.url}", tmp_path)
        link.start()
        try:
            # One failed try at each dead address, with 1-3 s and 2-6 s of pause.
            wait_until(link.connected.is_set, 20, "the device connects to the third address")
            assert link.broker == BrokerAddress.parse(alive.url)
        finally:
            link.stop()
