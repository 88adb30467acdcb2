"""Switch box board scenarios, run under real MicroPython by run.mjs; tests/test_switching.py checks them.

Test-only: not shipped to boards. Each function is one scenario in a fresh interpreter, with
kinds/switch_box/board at the board's root. Time is the harness's FakeTime, so hours pass in
a moment; the broker is the in-memory stand-in of umqtt.simple.
"""

import json

import clock
import harness
from harness import broker, result, sent

from umqtt import simple

DEVICE = "heater-1"
WEDNESDAY_0450_JST = 1764705000
kept = []   # topics of the board's persistent session while it is away


# The stand-in broker learns persistent sessions here, so the other examples' memory test
# (which counts the stand-ins too) does not carry this code.
_connect = simple.MQTTClient.connect


def _connect_noting_the_session(self, clean_session=True, timeout=None):
    self.clean_session = clean_session
    del kept[:]
    return _connect(self, clean_session, timeout)


simple.MQTTClient.connect = _connect_noting_the_session


def drop_client():
    """The board's connection breaks (its Wi-Fi, a cable); the broker stays up and keeps its session."""
    client = broker.client
    broker._store(client.lw_topic, client.lw_msg, client.lw_retain, client.lw_qos)
    kept[:] = [] if client.clean_session else list(client.subscribed)
    broker.client = None


def deliver(topic, payload):
    """What the gateway sends (QoS 1): kept for a persistent session that is away."""
    if broker.client is None and topic in kept:
        broker.queued.append((topic, payload))
    else:
        broker.deliver(topic, payload)


def boot(**switching):
    config = harness.boot_config(DEVICE, {"interval_s": 60})
    rules = {"link_loss_min": 15, "on_link_loss": "safe", "interlocks": [["pump_1", "pump_2"]], "utc_offset_h": 9}
    rules.update(switching)
    config["switching"] = rules
    config["outputs"] = {
        "heater": {"pin": 16, "name": "Road heater", "active_high": False, "safe": "off", "max_on_min": 180},
        "sprinkler": {"pin": 17, "name": "Sprinkler", "active_high": False, "safe": "off", "max_on_min": 120},
        "pump_1": {"pin": 18, "name": "Pump 1", "active_high": False, "safe": "off", "max_on_min": 60},
        "pump_2": {"pin": 19, "name": "Pump 2", "active_high": False, "safe": "off", "max_on_min": 60},
    }
    return config


def start(unix=WEDNESDAY_0450_JST, **switching):
    from switchbox import SwitchBox
    ft = harness.FakeTime()
    if unix is not None:
        clock.set_unix(unix)   # as NTP would
    board = harness.new_board(SwitchBox, boot(**switching))
    return ft, board


def levels(board):
    """The pins as the relay board sees them (this one switches on LOW: 0 is on)."""
    found = {}
    for name, pin in board.app.pins.items():
        found[name] = pin.pin.value()
    return found


def cmd(command_id, output, on, expires=None):
    command = {"id": command_id, "do": "switch", "args": {"output": output, "on": on}}
    if expires is not None:
        command["expires"] = expires
    deliver("jisaku/%s/cmd" % DEVICE, json.dumps(command).encode())


def acks():
    found = {}
    for payload in sent("cmd/ack", DEVICE):
        answer = json.loads(payload)
        found[answer["id"]] = answer
    return found


def switched():
    found = []
    for payload in sent("event", DEVICE):
        message = json.loads(payload)
        if message["event"] == "switched":
            found.append(message["v"])
    return found


def rules():
    """Safe at start, interlock, longest on-time, expiry while cut off, persistent session."""
    out = {}
    ft, board = start()
    out["at_start"] = levels(board)
    harness.run(board, ft, 3)
    out["clean_session"] = broker.client.clean_session
    status = json.loads(sent("status", DEVICE)[-1])
    out["status_outputs"] = status["outputs"]
    cmd("p1", "pump_1", True)
    harness.run(board, ft, 1)
    for attempt in range(3):
        cmd("p2-%d" % attempt, "pump_2", True)
        harness.run(board, ft, 1)
    out["after_interlock"] = levels(board)
    cmd("h1", "heater", True, expires=clock.unix() + 60)
    harness.run(board, ft, 1)
    harness.run(board, ft, 179 * 60, step_ms=10000)
    cmd("h2", "heater", True)            # on again: no fresh 180 minutes
    harness.run(board, ft, 1)
    out["at_179_min"] = levels(board)
    harness.run(board, ft, 70, step_ms=10000)
    out["at_180_min"] = levels(board)
    # Cut off while the broker stays up: the late command waits in the persistent session.
    drop_client()
    harness.run(board, ft, 1)
    cmd("late", "sprinkler", True, expires=clock.unix() + 60)
    cmd("in-time", "heater", True, expires=clock.unix() + 600)
    out["answered_while_away"] = "late" in acks()
    ft.advance(120 * 1000)               # back two minutes later
    harness.run(board, ft, 70)           # reconnecting waits a few seconds
    out["after_return"] = levels(board)
    out["acks"] = acks()
    out["switched"] = switched()
    out["readings"] = [json.loads(p) for p in sent("data", DEVICE)]
    result(out)


def clockless():
    """Before NTP: commands with expires are refused, without are done; the status says so."""
    out = {}
    ft, board = start(unix=None)
    harness.run(board, ft, 3)
    cmd("a", "heater", True, expires=WEDNESDAY_0450_JST + 60)
    cmd("b", "heater", True)
    harness.run(board, ft, 2)
    out["acks"] = acks()
    out["status"] = json.loads(sent("status", DEVICE)[-1])
    import config
    bad = boot(interlocks=[["pump_1", "pump_9"]])
    from switchbox import SwitchBox
    try:
        harness.new_board(SwitchBox, bad)
        out["config_error"] = None
    except config.ConfigError as err:
        out["config_error"] = str(err)
    result(out)


def link_loss(on_link_loss):
    """The broker gone beyond link_loss_min: safe state (or stay), then back."""
    out = {}
    ft, board = start(on_link_loss=on_link_loss)
    harness.run(board, ft, 3)
    cmd("h", "heater", True)
    cmd("s", "sprinkler", True)
    harness.run(board, ft, 2)
    out["before"] = levels(board)
    broker.go_down()
    harness.run(board, ft, 14 * 60, step_ms=5000)
    out["at_14_min"] = levels(board)
    harness.run(board, ft, 2 * 60, step_ms=5000)
    out["at_16_min"] = levels(board)
    broker.up = True
    harness.run(board, ft, 90, step_ms=1000)
    out["switched"] = switched()
    result(out)


def schedule():
    """A schedule from afar: a wrong one refused, a good one runs with the broker down."""
    out = {}
    ft, board = start(on_link_loss="stay")
    harness.run(board, ft, 3)
    topic = "jisaku/%s/config" % DEVICE
    good = [{"output": "sprinkler", "on": "05:00", "off": "06:00", "days": "mon-fri"}]
    broker.deliver(topic, json.dumps({"rev": 1, "interval_s": 60, "schedule": good}).encode(), retain=True)
    harness.run(board, ft, 1)
    bad = [{"output": "boiler", "on": "05:00", "off": "06:00"}]
    broker.deliver(topic, json.dumps({"rev": 2, "interval_s": 60, "schedule": bad}).encode(), retain=True)
    harness.run(board, ft, 1)
    out["config_acks"] = [json.loads(p) for p in sent("config/ack", DEVICE)]
    broker.go_down()
    harness.run(board, ft, 9 * 60, step_ms=5000)
    out["at_0459"] = levels(board)
    harness.run(board, ft, 60, step_ms=5000)
    out["at_0500"] = levels(board)
    harness.run(board, ft, 60 * 60, step_ms=5000)
    out["at_0600"] = levels(board)
    broker.up = True
    harness.run(board, ft, 90, step_ms=1000)
    out["switched"] = switched()
    result(out)
