"""Outputs on a Raspberry Pi: relays switched by the same rules as on a MicroPython board.

The rules themselves (safe state, longest on-time, interlocks, command expiry, link loss,
schedules) live in ``firmware/lib/switchboard.py``, shared with the boards. This module
only connects them to the Pi: each output is a gpiozero ``DigitalOutputDevice``, the clock
is the Pi's own (its time zone for schedules), and every change goes to the link as an
event ``switched`` and a reading ``{"heater_on": 1, ...}``.

device.toml::

    [switching]
    link_loss_min = 15            # without the broker this long ...
    on_link_loss = "safe"         # ... every output to its safe state ("stay": keep as is)
    interlocks = [["pump_1", "pump_2"]]

    [outputs.heater]
    pin = 17                      # BCM number, to the relay board's IN1
    name = "Road heater"
    active_high = false           # most relay boards switch on a LOW input
    safe = "off"
    max_on_min = 180

Example::

    outputs = Outputs(config, link, pin_factory=MockFactory())
    outputs.start()                                 # every output safe, open schedule windows on
    outputs.answer({"id": "c1", "do": "switch", "args": {"output": "heater", "on": True}})
    outputs.tick()                                  # a few times a second
    outputs.close()
"""

from __future__ import annotations

import threading
import time
from typing import Any

from gpiozero import DigitalOutputDevice

from jisaku.firmware.lib.switchboard import (CLOCK_SET_AFTER, Output, SwitchBoard, SwitchError, read_outputs,
                                              send_changes)

from .config import DeviceConfig, DeviceConfigError
from .link import DeviceLink


class PiClock:
    """The Pi's clocks as the switchboard asks for them."""

    def ms(self) -> int:
        return int(time.monotonic() * 1000)   # never jumps, whatever NTP does

    def unix(self) -> float | None:
        now = time.time()
        return now if now >= CLOCK_SET_AFTER else None   # a Pi without RTC starts in the past

    def utc_offset_s(self, unix: float) -> int:
        return time.localtime(unix).tm_gmtoff          # the Pi's own time zone (JST: 32400)


class GpioOutput:
    """One output pin through gpiozero; it knows whether the relay board is active-low.

    The pin is set to the output's safe state the moment it is opened (``initial_value``),
    before anything else runs.
    """

    def __init__(self, output: Output, pin_factory=None):
        self.device = DigitalOutputDevice(output.pin, active_high=output.active_high,
                                          initial_value=output.safe_on, pin_factory=pin_factory)

    def set(self, on: bool) -> None:
        if on:
            self.device.on()
        else:
            self.device.off()

    def close(self) -> None:
        self.device.close()


class Outputs:
    """A device's outputs: the shared switchboard, gpiozero pins, and what goes to the link.

    Commands arrive on the network thread and ``tick()`` runs on the app's: a lock keeps
    them from deciding at the same time.
    """

    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None, clock=None):
        try:
            outputs, interlocks, loss_min, on_loss = read_outputs(config.section("outputs"),
                                                                  config.section("switching"))
        except SwitchError as err:
            raise DeviceConfigError(f"{config.folder / 'device.toml'}: {err}") from None
        self.link = link
        self.pins: dict[str, GpioOutput] = {}
        try:
            for output in outputs:
                self.pins[output.name] = GpioOutput(output, pin_factory)
        except Exception:
            self.close()  # the pins opened so far go back
            raise
        self.board = SwitchBoard(outputs, clock or PiClock(), interlocks, loss_min, on_loss, pins=self.pins)
        self._lock = threading.Lock()
        link.info["outputs"] = self.board.describe()   # in the status: the server learns the outputs

    def start(self) -> None:
        """Every output to its safe state (said in events), then open schedule windows on."""
        with self._lock:
            self.board.start()
            self._publish()

    def answer(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """A ``cmd`` message whole: the answer's fields, or None if it is not ``switch``."""
        with self._lock:
            answer = self.board.command(command)
            self._publish()
        return answer

    def tick(self) -> None:
        """Longest on-time, link loss and the schedule: call it a few times a second."""
        with self._lock:
            self.board.tick(self.link.connected.is_set())
            if self.board.schedule_state() == "no clock":   # the status says so (spec: "schedule": "no clock")
                self.link.info["schedule"] = "no clock"
            else:
                self.link.info.pop("schedule", None)
            self._publish()

    def check_schedule(self, entries: Any) -> list[str]:
        return self.board.check_schedule(entries)

    def set_schedule(self, entries: list[dict[str, str]]) -> None:
        with self._lock:
            self.board.set_schedule(entries)
            self._publish()

    def report(self) -> None:
        """The state of every output as one reading, ``{"heater_on": 1, "pump_1_on": 0, ...}``."""
        self.link.publish_reading(self.board.readings())

    def fault(self) -> None:
        """Something went wrong: every output to its safe state."""
        with self._lock:
            self.board.safe_all("fault")
            self._publish()

    def _publish(self) -> None:
        send_changes(self.board, self.link)

    def close(self) -> None:
        """Outputs to their safe state, then the pins are let go."""
        if hasattr(self, "board"):
            self.board.safe_all("stop")
        for pin in self.pins.values():
            pin.close()
