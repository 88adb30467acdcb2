"""Snow gauge: an HC-SR04 ultrasonic sensor looking down at the ground.

Snow depth is the mount height minus the distance the sensor measures. Sound is
slower in the cold (331 m/s at 0 °C, 343 m/s at 20 °C), so with an optional
DS18B20 the distance is corrected for the air temperature: at −10 °C an
uncorrected gauge mounted 2 m up over 40 cm of snow reads it about 9 cm too shallow.

Wiring (Raspberry Pi, BCM numbers)::

    HC-SR04 VCC  -> 5V  (pin 2)         HC-SR04 GND -> GND (pin 6)
    HC-SR04 TRIG -> GPIO23 (pin 16)
    HC-SR04 ECHO -> 1 kΩ -> GPIO24 (pin 18), and GPIO24 -> 2 kΩ -> GND
                    (the divider brings the 5 V echo down to 3.3 V)
    DS18B20 (optional): see jisaku.device.temperature

Example::

    config = load_device_config("kinds/snow_gauge")   # pins, mount height, interval
    gauge = SnowGauge(config, link)
    gauge.measure()         # {"depth_cm": 37.0}, or None when the echoes did not come back
    gauge.run(stop)         # publishes a reading every interval_s

Its own alarm, with no gateway rule and no network needed (events wait in the
outbox): when the depth reaches ``alert_cm`` it sends the event ``deep_snow``
once, and ``snow_cleared`` once the depth is below ``warn_cm`` again. In between
nothing changes, so snow wobbling around one level does not send a flood of events.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time

from gpiozero import DistanceSensor

from jisaku.device.config import DeviceConfig, DeviceConfigError
from jisaku.device.link import DeviceLink
from jisaku.device.temperature import DS18B20

log = logging.getLogger(__name__)

# The HC-SR04 needs about 60 ms between pings for the last echo to die away.
PING_GAP_S = 0.06
MAX_DISTANCE_M = 4.0          # the HC-SR04's range
MIN_DISTANCE_CM = 2.0         # closer than this it cannot tell
# What gpiozero's DistanceSensor assumes; the true speed depends on the air temperature.
ASSUMED_SPEED_OF_SOUND = 343.26


# A ping older than this is not taken as today's answer.
FRESH_ECHO_S = 0.5


class _DistanceSensor(DistanceSensor):
    """gpiozero's DistanceSensor, also noting when an echo last came back.

    Without this a sensor that stops answering (iced over, a loose wire) would
    either block forever or keep repeating its last good distance.
    """

    last_echo = 0.0

    def _read(self):
        try:
            value = super()._read()
        except AttributeError:
            return None  # closing: gpiozero drops the trigger pin before it stops this thread
        if value is not None:
            self.last_echo = time.monotonic()
        return value


def alarm_problems(warn_cm: float, alert_cm: float) -> list[str]:
    """What is wrong with a pair of alarm levels: ``alert_cm`` must be above ``warn_cm``.

    >>> alarm_problems(60, 50)
    ['alert_cm (50) must be above warn_cm (60): raise alert_cm or lower warn_cm']
    """
    if alert_cm > warn_cm:
        return []
    return [f"alert_cm ({alert_cm:g}) must be above warn_cm ({warn_cm:g}): raise alert_cm or lower warn_cm"]


def speed_of_sound(temp_c: float) -> float:
    """Metres per second in dry air at ``temp_c`` degrees Celsius."""
    return 331.3 * (1 + temp_c / 273.15) ** 0.5


class SnowGauge:
    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None):
        settings = config.section("ultrasonic")
        self.link = link
        self.interval_s = config.interval_s
        self.mount_height_cm = float(settings.get("mount_height_cm", 200))
        self.samples = int(settings.get("samples", 5))
        alarm = config.section("alarm")
        self.warn_cm, self.alert_cm = alarm.get("warn_cm", 20), alarm.get("alert_cm", 50)
        for name, value in (("warn_cm", self.warn_cm), ("alert_cm", self.alert_cm)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1000:
                raise DeviceConfigError(
                    f"{config.folder}: [alarm] {name} must be a number from 0 to 1000, not {value!r}")
        problems = alarm_problems(self.warn_cm, self.alert_cm)
        if problems:
            raise DeviceConfigError(f"{config.folder}: [alarm] {problems[0]}")
        self.alarmed = False  # True from deep_snow until snow_cleared
        # partial: answer from the pings so far instead of waiting for a full queue.
        self.sensor = _DistanceSensor(
            echo=settings.get("echo_pin", 24), trigger=settings.get("trigger_pin", 23),
            max_distance=MAX_DISTANCE_M, queue_len=3, partial=True, pin_factory=pin_factory,
        )
        thermometer = settings.get("temperature_file", "")
        self.thermometer = DS18B20(thermometer) if thermometer else None
        self._report_now = threading.Event()

    def measure(self) -> dict[str, float] | None:
        """``depth_cm`` (and ``temp_c``) from the median of a few pings, or None if too few came back.

        Pings with no echo (falling snow, a bird, a wet sensor) or closer than the
        sensor can tell are left out; one stray echo among the rest cannot move the median.
        """
        distances = []
        for _ in range(self.samples):
            time.sleep(PING_GAP_S)
            if time.monotonic() - self.sensor.last_echo > FRESH_ECHO_S:
                continue
            distance_cm = self.sensor.distance * 100
            if MIN_DISTANCE_CM < distance_cm < MAX_DISTANCE_M * 100 * 0.99:
                distances.append(distance_cm)
        if len(distances) * 2 < self.samples:
            log.warning("only %d of %d pings came back; no reading this time", len(distances), self.samples)
            return None
        reading: dict[str, float] = {}
        distance_cm = statistics.median(distances)
        temp_c = self.thermometer.read_c() if self.thermometer else None
        if temp_c is not None:
            distance_cm *= speed_of_sound(temp_c) / ASSUMED_SPEED_OF_SOUND
            reading["temp_c"] = round(temp_c, 1)
        reading["depth_cm"] = round(max(0.0, self.mount_height_cm - distance_cm), 1)
        return reading

    def measure_depth_cm(self) -> float | None:
        reading = self.measure()
        return reading["depth_cm"] if reading else None

    def check_alarm(self, depth_cm: float) -> None:
        """Send ``deep_snow`` on reaching ``alert_cm``, ``snow_cleared`` below ``warn_cm``; each once."""
        if not self.alarmed and depth_cm >= self.alert_cm:
            self.alarmed = True
            self.link.publish_event("deep_snow", {"depth_cm": depth_cm, "alert_cm": self.alert_cm})
        elif self.alarmed and depth_cm < self.warn_cm:
            self.alarmed = False
            self.link.publish_event("snow_cleared", {"depth_cm": depth_cm, "warn_cm": self.warn_cm})

    def step(self) -> dict[str, float] | None:
        """One turn: measure, publish the reading, raise or clear the alarm."""
        reading = self.measure()
        if reading is not None:
            self.link.publish_reading(reading)
            self.check_alarm(reading["depth_cm"])
        return reading

    def settings_problems(self, changes: dict) -> list[str]:
        """Checks across settings (RemoteSettings calls this once each value is within its limits)."""
        return alarm_problems(changes.get("warn_cm", self.warn_cm), changes.get("alert_cm", self.alert_cm))

    def apply_settings(self, settings: dict) -> None:
        for name, value in settings.items():
            setattr(self, name, int(value) if name == "samples" else float(value))
        self._report_now.set()

    def commands(self) -> dict:
        return {"report_now": self.report_now}

    def report_now(self, args: dict) -> tuple[bool, str]:
        self._report_now.set()
        return True, "measuring now"

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()
            deadline = time.monotonic() + self.interval_s
            while time.monotonic() < deadline and not stop.is_set() and not self._report_now.is_set():
                stop.wait(0.2)
            self._report_now.clear()

    def close(self) -> None:
        self.sensor.close()
