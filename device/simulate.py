"""What every simulated device shares: a scenario that plays the outside world.

A kind's simulation (``simulate.py`` in its folder under kinds/, named in its
kind.toml) subclasses :class:`Scenario`. The device code it drives is the same as
on a Raspberry Pi: gpiozero devices on gpiozero's MockFactory pins. The scenario
only plays the world: snow falling under the ultrasonic sensor, paper put on the
tray and taken away, a vehicle driving a route.

How ``jisaku device run --simulate`` uses one::

    factory = MockFactory()
    scenario = Snowfall(config, factory)          # sets up the mock pins the app will use
    app = SnowGauge(config, link, pin_factory=factory)
    scenario.attach(app)                          # anything else the app needs from the world
    scenario.start()                              # tick() a few times a second until stop()
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

from gpiozero.exc import PWMSoftwareFallback

# The software-timed mock pins are what we want in simulation; the warning is for real Pis.
warnings.filterwarnings("ignore", category=PWMSoftwareFallback)


class Scenario:
    """The outside world of one simulated device: ``tick(elapsed_s)`` a few times a second.

    A kind's scenario takes ``(config, pin_factory)``: the device's settings (its
    ``[simulate]`` table says how the world behaves) and the MockFactory its app will use.
    """

    tick_s = 0.2

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=type(self).__name__)
        self._started = 0.0

    def start(self) -> None:
        self._started = time.monotonic()
        self.tick(0.0)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.tick(time.monotonic() - self._started)

    def attach(self, app: Any) -> None:
        """Hand the app what it would get from the world other than its pins (a GPS, a thermometer)."""

    def tick(self, elapsed_s: float) -> None:
        """Change the world: ``elapsed_s`` seconds have passed since start()."""



def along(curve: list[tuple[float, float]], hour: float) -> float:
    """Linear interpolation in a [(hour, value), ...] curve, repeating after its last hour."""
    hour %= max(curve[-1][0], 1e-9)
    for (h1, v1), (h2, v2) in zip(curve, curve[1:]):
        if h1 <= hour <= h2:
            return v1 + (v2 - v1) * ((hour - h1) / (h2 - h1) if h2 > h1 else 0)
    return curve[-1][1]
