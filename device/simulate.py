"""Scenarios that drive a simulated device's sensors, so it runs with no hardware.

The device code is the same as on a Raspberry Pi: gpiozero devices on
gpiozero's MockFactory pins, and NMEA lines as a GPS module sends them. A
scenario only plays the outside world: snow falling under the ultrasonic
sensor, paper put on the tray and taken away, a vehicle driving a route.

Example::

    factory = MockFactory()
    scenario = scenario_for(config, factory)    # sets up the pins the app will use
    scenario.start()
"""

from __future__ import annotations

import datetime
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pynmea2
from gpiozero.exc import PWMSoftwareFallback
from gpiozero.pins.mock import MockFactory, MockPin, MockTriggerPin

from .apps.snow_gauge import speed_of_sound
from .config import DeviceConfig
from jisaku.contract.geo import Route, load_route

SPEED_OF_SOUND_M_S = 343.26  # what gpiozero's DistanceSensor assumes (20 °C)
KMH_TO_KNOTS = 1 / 1.852

# The software-timed mock pins are what we want in simulation; the warning is for real Pis.
warnings.filterwarnings("ignore", category=PWMSoftwareFallback)


class Scenario:
    """Runs ``tick(elapsed_s)`` a few times a second in a background thread."""

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

    def tick(self, elapsed_s: float) -> None:
        pass


class EchoPin(MockPin):
    """An HC-SR04's echo output whose pulse lasts exactly the sound's flight time.

    gpiozero's mock stamps each edge when its thread gets to run, so on a busy
    machine the pulse comes out long and the snow shallow. Here the falling edge
    is stamped at rise + flight time, however late the thread wakes.
    """

    def __init__(self, factory, info):
        super().__init__(factory, info)
        self._fall_at: float | None = None

    def pulse(self, seconds: float) -> None:
        self.drive_high()
        self._fall_at = self._last_change + seconds
        time.sleep(seconds)
        self.drive_low()

    def _change_state(self, value):
        changed = super()._change_state(value)
        if changed and not value and self._fall_at is not None:
            self._last_change, self._fall_at = self._fall_at, None
        return changed


class TriggerPin(MockTriggerPin):
    """The HC-SR04's trigger input: each ping makes the echo pin pulse."""

    def _echo(self):
        time.sleep(0.001)
        self.echo_pin.pulse(self.echo_time)


def along(curve: list[tuple[float, float]], hour: float) -> float:
    """Linear interpolation in a [(hour, value), ...] curve, repeating after its last hour."""
    hour %= max(curve[-1][0], 1e-9)
    for (h1, v1), (h2, v2) in zip(curve, curve[1:]):
        if h1 <= hour <= h2:
            return v1 + (v2 - v1) * ((hour - h1) / (h2 - h1) if h2 > h1 else 0)
    return curve[-1][1]


class Snowfall(Scenario):
    """Snow depth following ``curve`` ([hour, cm] points) under a mock HC-SR04.

    With a ``temperature_c`` curve the air gets colder or warmer: sound then really
    travels slower or faster, and a simulated DS18B20 (a file, as on a Pi) reports it.
    """

    def __init__(self, config: DeviceConfig, factory: MockFactory):
        super().__init__()
        ultrasonic, simulate = config.section("ultrasonic"), config.section("simulate")
        self.mount_height_cm = float(ultrasonic.get("mount_height_cm", 200))
        self.curve = [(float(h), float(cm)) for h, cm in simulate.get("curve", [[0, 10], [24, 10]])]
        self.temperatures = [(float(h), float(c)) for h, c in simulate.get("temperature_c", [])]
        self.hours_per_minute = float(simulate.get("hours_per_minute", 2))
        self.temperature_file: Path | None = None
        if self.temperatures:
            self.temperature_file = Path(tempfile.mkdtemp(prefix="jisaku-w1-")) / "temperature"
        echo = factory.pin(ultrasonic.get("echo_pin", 24), pin_class=EchoPin)
        self.trigger = factory.pin(
            ultrasonic.get("trigger_pin", 23), pin_class=TriggerPin, echo_pin=echo, echo_time=0.01
        )

    def hour(self, elapsed_s: float) -> float:
        return elapsed_s / 60 * self.hours_per_minute

    def depth_cm(self, elapsed_s: float) -> float:
        return along(self.curve, self.hour(elapsed_s))

    def tick(self, elapsed_s: float) -> None:
        speed = SPEED_OF_SOUND_M_S
        if self.temperatures:
            temp_c = along(self.temperatures, self.hour(elapsed_s))
            speed = speed_of_sound(temp_c)
            # Written like the kernel's w1 driver does: millidegrees, one line.
            self.temperature_file.write_text(f"{round(temp_c * 1000)}\n")
        distance_m = (self.mount_height_cm - self.depth_cm(elapsed_s)) / 100
        self.trigger.echo_time = 2 * distance_m / speed


class PaperOnTray(Scenario):
    """Paper put on the tray and taken away, on a repeating schedule."""

    def __init__(self, config: DeviceConfig, factory: MockFactory):
        super().__init__()
        tray, simulate = config.section("tray"), config.section("simulate")
        self.pin = factory.pin(tray.get("sensor_pin", 17))
        self.schedule = [(float(p["at_s"]), float(p["stays_s"])) for p in simulate.get("paper", [])]
        self.cycle_s = float(simulate.get("cycle_s", 90))

    def paper_present(self, elapsed_s: float) -> bool:
        t = elapsed_s % self.cycle_s
        return any(at <= t < at + stays for at, stays in self.schedule)

    def tick(self, elapsed_s: float) -> None:
        # The reflective module pulls its output low while paper is there.
        if self.paper_present(elapsed_s):
            self.pin.drive_low()
        else:
            self.pin.drive_high()


class DrivingRoute:
    """NMEA sentences, once a second, of a vehicle driving a route at a steady speed."""

    def __init__(self, config: DeviceConfig, stop: threading.Event):
        simulate = config.section("simulate")
        self.route = Route(load_route(config.path(simulate["route"])))
        self.speed_kmh = float(simulate.get("speed_kmh", 25))
        self.start_m = float(simulate.get("start_m", 0))
        self.stop = stop

    def lines(self) -> Iterator[str]:
        started = time.monotonic()
        while not self.stop.is_set():
            travelled = self.start_m + (time.monotonic() - started) * self.speed_kmh / 3.6
            lat, lon, heading = self.route.at(travelled)
            yield rmc_sentence(lat, lon, self.speed_kmh * KMH_TO_KNOTS, heading)
            self.stop.wait(1.0)


def rmc_sentence(lat: float, lon: float, knots: float, heading: float, when: datetime.datetime | None = None) -> str:
    """A valid-fix ``$GPRMC`` sentence, as a GPS module sends it."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    lat_deg, lon_deg = int(abs(lat)), int(abs(lon))
    sentence = pynmea2.RMC("GP", "RMC", (
        when.strftime("%H%M%S.00"), "A",
        f"{lat_deg:02d}{(abs(lat) - lat_deg) * 60:07.4f}", "N" if lat >= 0 else "S",
        f"{lon_deg:03d}{(abs(lon) - lon_deg) * 60:07.4f}", "E" if lon >= 0 else "W",
        f"{knots:.1f}", f"{heading:.1f}", when.strftime("%d%m%y"), "", "", "A",
    ))
    return str(sentence)
