"""Switch box: relays switched from afar, on a schedule and by alert rules, safely.

The rules are those of firmware/lib/switchboard.py, the very code a Raspberry Pi runs:
every output safe at start and on a fault, the longest on-time, interlocks, commands that
arrive too late refused, the safe state when the broker is gone too long, and a schedule
that runs without the network (once the clock has been set by NTP).

config.json holds the outputs and the rules, the same tables as the Pi's device.toml::

    "switching": {"link_loss_min": 15, "on_link_loss": "safe",
                  "interlocks": [["pump_1", "pump_2"]], "utc_offset_h": 9},
    "outputs": {"heater": {"pin": 16, "name": "Road heater", "active_high": false,
                           "safe": "off", "max_on_min": 180}, ...}

Sends: a reading {"heater_on": 0 or 1, ...} at every change and every ``interval_s``; an
event ``switched`` {output, on, by, cmd} at every change. Answers ``switch`` commands
with the states of all outputs, or a refusal with its code.

Example::

    box = SwitchBox({"interval_s": 60, "schedule": []}, {}, link)   # link.boot has the outputs
    box.answer({"id": "c1", "do": "switch", "args": {"output": "heater", "on": True}})
    box.step(clock.ticks_ms())     # the board's loop: max on-time, link loss, schedule, reports
"""

import time

import machine

import clock
import config
import switchboard


class MachinePin:
    """One output pin through machine.Pin; set to the safe state the moment it is made."""

    def __init__(self, output):
        self.output = output
        self.pin = machine.Pin(output.pin, machine.Pin.OUT, value=output.level(output.safe_on))

    def set(self, on):
        self.pin.value(self.output.level(on))  # level() knows whether the relay board is active-low


class BoardClock:
    """The board's clocks as the switchboard asks for them.

    ``ms()`` never wraps (ticks_ms does, after days): it adds up the ticks since the last call.
    """

    def __init__(self, utc_offset_s):
        self.offset_s = utc_offset_s
        self.last = clock.ticks_ms()
        self.total = 0

    def ms(self):
        now = clock.ticks_ms()
        self.total += time.ticks_diff(now, self.last)
        self.last = now
        return self.total

    def unix(self):
        return clock.unix()          # None until NTP has set the clock

    def utc_offset_s(self, unix):
        return self.offset_s


class SwitchBox:
    #: what operators may change from afar (the same as kind.toml's [settings]); a schedule is
    #: not a number: check_settings looks at it
    SETTINGS = {"interval_s": (5, 86400), "schedule": "schedule"}
    DEFAULTS = {"interval_s": 60, "schedule": []}
    PINS = {"esp32": {}, "rp2": {}}   # the pins are in config.json's "outputs"
    POLL_MS = 200

    def __init__(self, settings, pins, link):
        self.link = link
        boot = link.boot
        switching = boot.get("switching") or {}
        offset_h = switching.get("utc_offset_h", boot.get("utc_offset_h", 9))
        self.clock = BoardClock(int(offset_h * 3600))
        try:
            outputs, interlocks, loss_min, on_loss = switchboard.read_outputs(boot.get("outputs"), switching)
        except switchboard.SwitchError as err:
            raise config.ConfigError("config.json: %s" % err)
        self.pins = {}
        for output in outputs:
            self.pins[output.name] = MachinePin(output)
        self.board = switchboard.SwitchBoard(outputs, self.clock, interlocks, loss_min, on_loss, self.pins)
        self.board.start()
        self.interval_s = settings["interval_s"]
        try:
            self.board.set_schedule(settings["schedule"])
        except switchboard.SwitchError as err:
            raise config.ConfigError("config.json: %s" % err)
        self.next_report = clock.ticks_ms()
        self.publish()

    # ------------------------------------------------------------ from afar

    def answer(self, command, payload=None):
        """``switch`` commands, whole (with expires); None for the others."""
        try:
            answer = self.board.command(switchboard.exact_expires(command, payload))
        except Exception as err:  # a bug: safe state, and say so (the link must go on)
            self.board.safe_all("fault")
            answer = {"ok": False, "reason": "the device failed: %r" % (err,)}
        self.publish()
        return answer

    def check_settings(self, values):
        return self.board.check_schedule(values["schedule"])

    def apply_settings(self, values):
        self.interval_s = values["interval_s"]
        self.board.set_schedule(values["schedule"])  # checked before: check_settings
        self.publish()

    def commands(self):
        return {"report_now": self.report_now}

    def report_now(self, args):
        self.next_report = clock.ticks_ms()
        return True, "reporting"

    def info(self):
        """In the status: the outputs, and "schedule": "no clock" while the schedule cannot run."""
        info = {"outputs": self.board.describe()}
        if self.board.schedule_state() == "no clock":
            info["schedule"] = "no clock"
        return info

    # ------------------------------------------------------------ the loop

    def step(self, now):
        try:
            self.board.tick(self.link.client is not None)
        except Exception as err:
            # A bug must not leave a heater on: safe state, then let the watchdog restart us.
            self.board.safe_all("fault")
            raise err
        self.publish()
        if time.ticks_diff(now, self.next_report) >= 0:
            self.next_report = time.ticks_add(now, int(self.interval_s * 1000))
            self.link.publish_reading(self.board.readings())

    def publish(self):
        switchboard.send_changes(self.board, self.link)
