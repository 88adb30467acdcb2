"""Switch box: relays switched from afar, on a schedule and by alert rules, safely.

The rules that keep things safe are the device's own, whatever it is told (they are in
firmware/lib/switchboard.py, the same on a board): every output safe at start and on a
fault, the longest on-time, interlocks, commands that arrive too late refused, its safe
state when the broker is gone too long, and a schedule that runs without the network.

Wiring (Raspberry Pi, BCM numbers; an opto-isolated 4-relay board that switches on LOW)::

    relay board VCC -> 5V (pin 2)      relay board GND -> GND (pin 6)
    relay board IN1 -> GPIO17 (pin 11)  heater's contactor coil
    relay board IN2 -> GPIO27 (pin 13)  sprinkler valve's contactor coil
    relay board IN3 -> GPIO22 (pin 15)  pump 1's contactor coil
    relay board IN4 -> GPIO23 (pin 16)  pump 2's contactor coil

Example::

    box = SwitchBox(config, link)      # every output is in its safe state from here on
    box.answer({"id": "c1", "do": "switch", "args": {"output": "heater", "on": True}})
    box.apply_settings({"schedule": [{"output": "heater", "on": "05:00", "off": "08:00"}]})
    box.run(stop)                       # readings heater_on ... at each change and every interval_s
    box.close()
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from jisaku.device.config import DeviceConfig
from jisaku.device.link import DeviceLink
from jisaku.device.outputs import Outputs

log = logging.getLogger(__name__)
TICK_S = 0.2


class SwitchBox:
    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None, clock=None):
        self.link = link
        self.interval_s = config.interval_s
        self.outputs = Outputs(config, link, pin_factory=pin_factory, clock=clock)
        self.outputs.start()
        self.schedule = config.section("switching").get("schedule", [])
        if self.schedule:  # a first schedule may be written in device.toml; operators' ones replace it
            self.outputs.set_schedule(self.schedule)
        self._report_now = threading.Event()

    # ------------------------------------------------------------ from afar

    def answer(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """``switch`` commands, whole (with expires); None for others (report_now...)."""
        return self.outputs.answer(command)

    def settings_problems(self, settings: dict[str, Any]) -> list[str]:
        if "schedule" in settings:
            return self.outputs.check_schedule(settings["schedule"])
        return []

    def apply_settings(self, settings: dict[str, Any]) -> None:
        if "interval_s" in settings:
            self.interval_s = float(settings["interval_s"])
        if "schedule" in settings:
            self.schedule = settings["schedule"]
            self.outputs.set_schedule(self.schedule)

    def commands(self) -> dict:
        return {"report_now": self.report_now}

    def report_now(self, args: dict) -> tuple[bool, str]:
        self._report_now.set()
        return True, "reporting"

    # ------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        next_report = time.monotonic()
        while not stop.is_set():
            try:
                self.outputs.tick()
            except Exception:
                # A bug must not leave a heater on: safe state, then stop (systemd restarts us).
                log.exception("switch box failed; every output to its safe state")
                self.outputs.fault()
                raise
            now = time.monotonic()
            if now >= next_report or self._report_now.is_set():
                self._report_now.clear()
                self.outputs.report()
                next_report = now + self.interval_s
            stop.wait(TICK_S)

    def close(self) -> None:
        self.outputs.close()
