"""Shelter tally: staff at the door press "+1" for each person who comes in, "−1" for each who leaves.

The count lives on the tally: it is saved on the SD card at every press, so a reboot or a
flat power bank loses nothing, and it never goes below 0. Every press sends a reading at
once, and the tally sends one every ``report_every_s`` as well::

    {"count": 37, "capacity": 120, "open": 1}

Without a network it simply keeps counting: the readings wait in the outbox on the SD card
and go to the town's server, in order, when the network is back.

Operators open and close the shelter and set its capacity from the office (settings
``open``, ``capacity``, ``report_every_s`` in kind.toml); a small display shows staff the
count, the capacity and the state: 空きあり, 混雑, 満員 or 閉鎖.

Wiring (Raspberry Pi, BCM numbers; each arcade button between its GPIO pin and a GND pin)::

    "+1" button     -> GPIO17 (pin 11) and GND (pin 9)
    "−1" button     -> GPIO27 (pin 13) and GND (pin 14)
    SSD1306 OLED    VCC -> 3.3V (pin 1)   GND -> GND (pin 6)
    (I²C, 128×64)   SDA -> GPIO2 (pin 3)  SCL -> GPIO3 (pin 5)

Example::

    tally = ShelterTally(config, link)
    tally.run(stop)          # until stop is set
    tally.count              # 37
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from gpiozero import Button
from gpiozero.pins.mock import MockFactory

from jisaku.device.config import DeviceConfig
from jisaku.device.link import DeviceLink

log = logging.getLogger(__name__)

COUNT_FILE = "tally.json"   # in the device's state folder, beside its outbox
LONGEST_WAIT_S = 1.0        # how long the loop sleeps at most, so a new report_every_s applies soon


class SavedCount:
    """The count in a small JSON file in the device's state folder.

    Written to a new file that then replaces the old one, so a power cut mid-write
    leaves the previous count, never half a file.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> int:
        try:
            count = json.loads(self.path.read_text(encoding="utf-8"))["count"]
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("could not read the saved count in %s (%s): starting from 0", self.path, err)
            return 0
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            log.warning("the saved count in %s is %r, not a whole number >= 0: starting from 0", self.path, count)
            return 0
        return count

    def save(self, count: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump({"count": count, "saved": round(time.time(), 3)}, file)
            file.flush()
            os.fsync(file.fileno())  # on the card before the rename, not just in the OS's cache
        temporary.replace(self.path)


class ShelterTally:
    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None):
        settings = config.section("shelter")
        self.link = link
        self.capacity = int(settings.get("capacity", 0))
        self.open = int(settings.get("open", 0))
        self.report_every_s = float(settings.get("report_every_s", 60))
        self.saved = SavedCount(Path(link.state_dir) / COUNT_FILE)
        self.count = self.saved.load()
        # Presses arrive on gpiozero's thread, settings and commands on the network's:
        # one lock keeps the count, the file and the display in step.
        self._lock = threading.RLock()
        # Arcade buttons connect their pin to GND when pressed: pull-up, active when low.
        # A short debounce, because a cheap microswitch can click twice.
        debounce = float(settings.get("debounce_s", 0.05)) or None
        self.plus = Button(settings.get("plus_pin", 17), pull_up=True, bounce_time=debounce, pin_factory=pin_factory)
        self.minus = Button(settings.get("minus_pin", 27), pull_up=True, bounce_time=debounce, pin_factory=pin_factory)
        self.plus.when_pressed = self.add_one
        self.minus.when_pressed = self.remove_one
        self.screen = None
        if settings.get("display"):
            # Imported only now: a tally without a display needs neither luma nor Pillow.
            from .screen import TallyScreen, open_display

            # Mock pins (--simulate, tests) mean no real I²C bus either: luma's own dummy device.
            simulated = isinstance(pin_factory, MockFactory)
            self.screen = TallyScreen(open_display(settings["display"], simulated),
                                      font=settings["display"].get("font"))
        self.draw()

    # ------------------------------------------------------------ the buttons

    def add_one(self) -> None:
        self.change(+1)

    def remove_one(self) -> None:
        self.change(-1)

    def change(self, by: int) -> None:
        """Count ``by`` more (or fewer) people, never below 0; save, report and show it at once."""
        with self._lock:
            count = max(0, self.count + by)
            if count != self.count:
                self.count = count
                self.saved.save(count)
            self.report()  # a press at 0 is reported too: staff see the device heard it
            self.draw()

    # ------------------------------------------------------------ from afar

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Operators' settings (already checked against kind.toml's limits): capacity, open, report_every_s."""
        with self._lock:
            before = (self.capacity, self.open)
            if "capacity" in settings:
                self.capacity = int(settings["capacity"])
            if "open" in settings:
                self.open = int(settings["open"])
            if "report_every_s" in settings:
                self.report_every_s = float(settings["report_every_s"])
            if (self.capacity, self.open) != before:
                self.report()
                self.draw()

    def commands(self) -> dict:
        return {"report_now": self.report_now, "set_count": self.set_count}

    def report_now(self, args: dict) -> tuple[bool, str]:
        self.report()
        return True, "reported"

    def set_count(self, args: dict) -> tuple[bool, str]:
        """Correct the count, e.g. after a head count: ``{"count": 42}``."""
        count = args.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return False, f"count must be a whole number, 0 or more, not {count!r}"
        with self._lock:
            self.count = count
            self.saved.save(count)
            self.report()
            self.draw()
        return True, f"count is now {count}"

    # ------------------------------------------------------------ reporting and showing

    def reading(self) -> dict[str, int]:
        return {"count": self.count, "capacity": self.capacity, "open": self.open}

    def report(self) -> None:
        self.link.publish_reading(self.reading())  # into the outbox: never waits for the network

    def draw(self) -> None:
        if self.screen is not None:
            with self._lock:
                self.screen.show(self.count, self.capacity, self.open)

    def run(self, stop: threading.Event) -> None:
        self.report()
        last = time.monotonic()
        while not stop.is_set():
            due = last + self.report_every_s
            now = time.monotonic()
            if now >= due:
                self.report()
                last = now
                continue
            stop.wait(min(LONGEST_WAIT_S, due - now))

    def close(self) -> None:
        self.plus.close()
        self.minus.close()
        if self.screen is not None:
            self.screen.close()
