"""The snow gauge's simulation: snow depth following a curve under a mock HC-SR04.

Named in kind.toml (``simulation = "simulate.py:Snowfall"``); ``[simulate]`` in
device.toml sets the curve. See jisaku.device.simulate for how a scenario runs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory, MockPin, MockTriggerPin

from jisaku.device.config import DeviceConfig
from jisaku.device.simulate import Scenario, along
from jisaku.device.temperature import DS18B20

from .pi import speed_of_sound

SPEED_OF_SOUND_M_S = 343.26  # what gpiozero's DistanceSensor assumes (20 °C)


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

    def attach(self, app) -> None:
        if self.temperature_file is not None:  # the simulated DS18B20, read as on a Pi
            app.thermometer = DS18B20(str(self.temperature_file))

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
