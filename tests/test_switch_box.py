"""The switch box on a Raspberry Pi (gpiozero's MockFactory) with a real broker and gateway.

What an operator would notice: a switch command is done and the relay's pin follows; an
interlock and the longest on-time hold whatever the commands say; a command that expired
while the device was away is refused when it finally arrives and the pin does not move;
the broker gone too long puts the outputs where device.toml says; a schedule switches
on and off with the broker down.

Time that matters to the rules (minutes, hours) comes from a clock the test drives
(``DrivenClock``), so nothing here waits for it; the network parts are real.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory

from jisaku.contract import kinds
from jisaku.device.config import load_device_config
from jisaku.device.link import DeviceLink
from jisaku.device.remote_settings import RemoteSettings
from jisaku.device.runner import run_command
from jisaku.firmware.lib.switchboard import DrivenClock
from jisaku.kinds.switch_box.pi import SwitchBox

from .brokers import HOST, free_port, mosquitto_available
from .conftest import require
from .town import KINDS, wait_until

WEDNESDAY_0450_JST = 1764705000
HEATER, SPRINKLER, PUMP_1, PUMP_2 = 17, 27, 22, 23     # the example's pins; its relay board is active-low


@pytest.fixture
def mosquitto_only():
    require(mosquitto_available(), "Mosquitto", "sudo apt-get install mosquitto")
    return "mosquitto"


# The rules are the device's own; one broker is enough to show them (Mosquitto, as in the field).
ON_MOSQUITTO = pytest.mark.parametrize("broker_kind", ["mosquitto"])


def box_config(**switching):
    """The example device.toml, without the simulated operator."""
    return load_device_config(KINDS / "switch_box", {"switching": switching, "simulate": {"presses": []}})


class Cable:
    """A TCP cable between the device and the broker that the test can pull out and plug in again.

    The broker stays up, so what is published meanwhile waits in the device's session.
    """

    def __init__(self, broker_port: int):
        self.broker_port = broker_port
        self.port = free_port()
        self._sockets: list[socket.socket] = []
        self._listener: threading.Thread | None = None
        self._plugged = False
        self.plug_in()

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def plug_in(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen()
        listener.settimeout(0.1)
        self._plugged = True
        self._listener = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._listener.start()

    def pull_out(self) -> None:
        self._plugged = False
        if self._listener is not None:
            self._listener.join(5)   # it closes the listening socket: connecting is refused
            self._listener = None
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while self._plugged:
                try:
                    device, _ = listener.accept()
                except TimeoutError:
                    continue
                device.settimeout(None)
                broker = socket.create_connection((HOST, self.broker_port))
                self._sockets += [device, broker]
                for a, b in ((device, broker), (broker, device)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Box:
    """The switch box app on mock pins, wired to the broker as ``jisaku device run`` wires it."""

    def __init__(self, town, config, broker_url: str | None = None, clock=None):
        self.factory = MockFactory()
        state_dir = town.directory / "devices" / config.id
        self.link = DeviceLink(config.id, town.secrets[config.id], broker_url or town.broker_url, state_dir,
                               info={"fw": "test"}, persistent=True)
        self.app = SwitchBox(config, self.link, pin_factory=self.factory, clock=clock)
        settings = RemoteSettings(self.app, kinds.folder("switch_box").device_settings(), state_dir)
        self.link.on_config = settings.apply
        self.link.on_command = lambda do, args: run_command(self.app, do, args)
        self.link.on_request = self.app.answer
        self.stop = threading.Event()
        self.link.start()
        self.thread = threading.Thread(target=self.app.run, args=(self.stop,), daemon=True)
        self.thread.start()
        wait_until(self.link.connected.is_set, 10, "the switch box connects")

    def on(self, pin: int) -> bool:
        """Whether the relay on ``pin`` is on: the example's board switches on LOW."""
        return not self.factory.pin(pin).state

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.app.close()
        self.link.stop()


class Operator:
    """Sends commands as the gateway would and collects the device's answers."""

    def __init__(self, town, device_id: str = "heater-1"):
        self.device_id = device_id
        self.answers: dict[str, dict] = {}
        self.statuses: list[dict] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"op-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set("_tester", town.tester_secret)
        self.client.on_message = self._on_message
        host, port = town.broker_url.removeprefix("mqtt://").split(":")
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.client.subscribe([(f"jisaku/{device_id}/cmd/ack", 1), (f"jisaku/{device_id}/status", 1)])
        time.sleep(0.3)  # let the subscription settle before asking

    def _on_message(self, client, userdata, message) -> None:
        if message.topic.endswith("/status"):
            if message.payload.startswith(b"{"):   # "offline" (the last will) is plain text
                self.statuses.append(json.loads(message.payload))
            return
        payload = json.loads(message.payload)
        self.answers[payload["id"]] = payload

    def send(self, command_id: str, output: str, on: bool, expires: float | None = None) -> None:
        command = {"id": command_id, "do": "switch", "args": {"output": output, "on": on}}
        if expires is not None:
            command["expires"] = expires
        self.client.publish(f"jisaku/{self.device_id}/cmd", json.dumps(command), qos=1).wait_for_publish(5)

    def switch(self, command_id: str, output: str, on: bool, expires: float | None = None) -> dict:
        self.send(command_id, output, on, expires)
        return wait_until(lambda: self.answers.get(command_id), 10, f"an answer to {command_id}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def events(town, device_id: str = "heater-1") -> list[dict]:
    found = sorted(town.store.events(device_id, limit=1000), key=lambda e: e["seq"])
    return [e["v"] for e in found if e["event"] == "switched"]


def test_a_switch_command_is_done_and_answered_through_jisaku_device_run(make_town):
    """The runner's own wiring (simulated, as in the demo): answers with the states, or a code."""
    config = box_config()
    town = make_town([config])
    town.run_devices()
    operator = Operator(town)
    try:
        wait_until(lambda: any("outputs" in s for s in operator.statuses), 15, "the box says it is online")
        assert operator.statuses[-1]["outputs"]["heater"] == {"name": "Road heater", "safe": "off", "max_on_min": 180}
        done = operator.switch("c-1", "heater", True, expires=time.time() + 60)
        assert done == {"id": "c-1", "ok": True, "result": {"heater": 1, "pump_1": 0, "pump_2": 0, "sprinkler": 0}}
        operator.switch("c-2", "pump_1", True)
        refused = operator.switch("c-3", "pump_2", True)
        assert refused == {"id": "c-3", "ok": False, "code": "interlock",
                           "reason": "pump_1 is on: pump_1 and pump_2 may never be on together"}
        assert operator.switch("c-4", "boiler", True)["code"] == "unknown_output"
        assert operator.switch("c-5", "heater", True, expires=time.time() - 5)["code"] == "expired"
    finally:
        operator.close()
    # The gateway stored the states as readings and each change as an event.
    wait_until(lambda: any(r["v"].get("heater_on") == 1 and r["v"].get("pump_1_on") == 1
                           for r in town.store.readings("heater-1", since=0, limit=100)), 10,
               "the reading with heater and pump 1 on is stored")
    wait_until(lambda: {"output": "heater", "on": 1, "by": "command", "cmd": "c-1"} in events(town), 10,
               "the switched event names the command")
    assert {"output": "pump_2", "on": 1, "by": "command", "cmd": "c-3"} not in events(town)


@ON_MOSQUITTO
def test_interlock_and_longest_on_time_hold_whatever_the_commands_say(make_town, mosquitto_only):
    clock = DrivenClock(WEDNESDAY_0450_JST)
    config = box_config()
    town = make_town([config])
    box = Box(town, config, clock=clock)
    operator = Operator(town)
    try:
        assert not any(box.on(pin) for pin in (HEATER, SPRINKLER, PUMP_1, PUMP_2)), "all safe (off) at start"
        assert operator.switch("p1", "pump_1", True)["ok"]
        assert box.on(PUMP_1)
        for attempt in range(3):  # asking again and again changes nothing
            answer = operator.switch(f"p2-{attempt}", "pump_2", True)
            assert answer["code"] == "interlock"
        assert box.on(PUMP_1) and not box.on(PUMP_2), "the running pump was not switched off to make room"

        assert operator.switch("h1", "heater", True)["ok"] and box.on(HEATER)
        clock.advance(179 * 60)
        assert operator.switch("h2", "heater", True)["result"]["heater"] == 1   # on again: no fresh 180 min
        time.sleep(0.5)
        assert box.on(HEATER)
        clock.advance(60)
        wait_until(lambda: not box.on(HEATER), 5, "the heater switches itself off after 180 min")
        assert not box.on(PUMP_2)
        wait_until(lambda: {"output": "heater", "on": 0, "by": "max_on"} in events(town), 10,
                   "the gateway gets the max_on event")
        # pump 1 had its 60 min long ago: it went off by itself too, so pump 2 may now start
        assert not box.on(PUMP_1)
        assert operator.switch("p2-now", "pump_2", True)["ok"] and box.on(PUMP_2)
    finally:
        operator.close()
        box.close()


@pytest.mark.parametrize("broker_kind", ["embedded", "mosquitto"])
def test_a_command_that_expired_while_the_box_was_away_is_refused_and_the_pin_stays(make_town, broker_kind):
    if broker_kind == "mosquitto":
        require(mosquitto_available(), "Mosquitto", "sudo apt-get install mosquitto")
    clock = DrivenClock(WEDNESDAY_0450_JST)
    config = box_config()
    town = make_town([config])
    cable = Cable(int(town.broker_url.rsplit(":", 1)[1]))
    box = Box(town, config, broker_url=cable.url, clock=clock)
    operator = Operator(town)
    try:
        cable.pull_out()
        wait_until(lambda: not box.link.connected.is_set(), 10, "the box notices it is cut off")
        # The operator switches while the box is away: the broker keeps both in the box's session.
        operator.send("late", "heater", True, expires=WEDNESDAY_0450_JST + 60)
        operator.send("in-time", "sprinkler", True, expires=WEDNESDAY_0450_JST + 600)
        clock.advance(120)   # the box comes back two minutes later (on its clock)
        assert "late" not in operator.answers
        cable.plug_in()
        late = wait_until(lambda: operator.answers.get("late"), 40, "the box answers the late command")
        assert late["ok"] is False and late["code"] == "expired"
        assert "expired 60 s before it arrived" in late["reason"]
        in_time = wait_until(lambda: operator.answers.get("in-time"), 10, "the box answers the other one")
        assert in_time["ok"] is True and in_time["result"]["sprinkler"] == 1
        assert box.on(SPRINKLER)
        assert not box.on(HEATER), "the late command did not move the heater's pin"
        assert not [e for e in events(town) if e["output"] == "heater" and e["on"] == 1]
    finally:
        operator.close()
        box.close()
        cable.pull_out()


@ON_MOSQUITTO
@pytest.mark.parametrize("on_link_loss", ["safe", "stay"])
def test_without_the_broker_beyond_the_limit_outputs_go_where_device_toml_says(make_town, mosquitto_only,
                                                                                 on_link_loss):
    clock = DrivenClock(WEDNESDAY_0450_JST)
    config = box_config(link_loss_min=15, on_link_loss=on_link_loss)
    town = make_town([config])
    box = Box(town, config, clock=clock)
    operator = Operator(town)
    try:
        assert operator.switch("h", "heater", True)["ok"] and operator.switch("s", "sprinkler", True)["ok"]
        operator.close()
        town.broker.stop()
        wait_until(lambda: not box.link.connected.is_set(), 10, "the box notices the broker is gone")
        time.sleep(0.5)                       # the box sees the loss at a tick: the 15 min count from there
        clock.advance(14 * 60)
        time.sleep(0.5)
        assert box.on(HEATER) and box.on(SPRINKLER), "14 min without the broker: nothing changes yet"
        clock.advance(2 * 60)
        if on_link_loss == "safe":
            wait_until(lambda: not box.on(HEATER) and not box.on(SPRINKLER), 5,
                       "beyond 15 min every output goes to its safe state (off)")
        else:
            time.sleep(1)
            assert box.on(HEATER) and box.on(SPRINKLER), '"stay": the outputs keep what they had'
        town.broker.start()
        wait_until(box.link.connected.is_set, 40, "the box is back")
        wanted = {"output": "heater", "on": 0, "by": "link_loss"}
        if on_link_loss == "safe":
            wait_until(lambda: wanted in events(town), 15, "the link_loss event arrives once the broker is back")
        else:
            time.sleep(1)
            assert wanted not in events(town)
    finally:
        box.close()


@ON_MOSQUITTO
def test_a_schedule_switches_on_and_off_while_the_broker_is_down(make_town, mosquitto_only):
    clock = DrivenClock(WEDNESDAY_0450_JST)
    config = box_config(on_link_loss="stay")  # "safe" would switch it off 15 min into the outage
    town = make_town([config])
    box = Box(town, config, clock=clock)
    try:
        schedule = [{"output": "sprinkler", "on": "05:00", "off": "06:00", "days": "mon-fri"}]
        town.gateway.push_config("heater-1", {"schedule": schedule})
        wait_until(lambda: (town.store.config_state("heater-1") or {}).get("state") == "applied", 10,
                   "the box applies the schedule")
        town.gateway.push_config("heater-1", {"schedule": [{"output": "boiler", "on": "05:00", "off": "06:00"}]})
        refused = wait_until(lambda: (s := town.store.config_state("heater-1")) and s["state"] == "refused" and s,
                             10, "the box refuses a schedule for an output it does not have")
        assert "output 'boiler' is not one of this device's outputs" in refused["reason"]

        town.broker.stop()
        wait_until(lambda: not box.link.connected.is_set(), 10, "the box notices the broker is gone")
        clock.advance(9 * 60)
        time.sleep(0.5)
        assert not box.on(SPRINKLER)
        clock.advance(60)                                         # 05:00 in Japan
        wait_until(lambda: box.on(SPRINKLER), 5, "the schedule switches the sprinkler on at 05:00")
        clock.advance(60 * 60)                                    # 06:00
        wait_until(lambda: not box.on(SPRINKLER), 5, "and off at 06:00, still without the broker")
        town.broker.start()
        wait_until(lambda: [e for e in events(town) if e["by"] == "schedule"] == [
            {"output": "sprinkler", "on": 1, "by": "schedule"}, {"output": "sprinkler", "on": 0, "by": "schedule"}],
            40, "both switches reach the gateway once the broker is back")
    finally:
        box.close()


@pytest.mark.parametrize(("switching", "outputs", "message"), [
    ({"interlocks": [["pump_1", "pump_9"]]}, {},
     "[switching] interlocks name 'pump_9', which is not an output (there are heater, pump_1, pump_2, sprinkler)"),
    ({"on_link_loss": "off"}, {}, '[switching] on_link_loss must be "safe" or "stay", not \'off\''),
    ({}, {"heater": {"pin": 17, "safe": "maybe"}}, "[outputs.heater]: safe must be \"off\" or \"on\", not 'maybe'"),
    ({}, {"heater": {"pin": 17, "active_high": "no"}}, "[outputs.heater]: active_high must be true or false"),
    ({}, {"heater": {"pin": 17, "colour": "red"}}, "[outputs.heater]: unknown key 'colour'"),
])
def test_a_mistake_in_device_toml_names_the_file_and_what_to_write(tmp_path, switching, outputs, message):
    from jisaku.device.config import DeviceConfigError

    config = load_device_config(KINDS / "switch_box", {"switching": switching, "outputs": outputs})
    link = DeviceLink(config.id, "secret", "mqtt://127.0.0.1:1", tmp_path)
    try:
        with pytest.raises(DeviceConfigError) as raised:
            SwitchBox(config, link, pin_factory=MockFactory())
    finally:
        link.outbox.close()
    assert str(raised.value).startswith(str(KINDS / "switch_box" / "device.toml"))
    assert message in str(raised.value)
