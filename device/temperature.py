"""A DS18B20 temperature sensor on the Raspberry Pi's 1-Wire bus.

Wiring: DS18B20 VDD -> 3.3V (pin 1), GND -> GND (pin 9), DQ -> GPIO4 (pin 7), with a
4.7 kΩ resistor from DQ to 3.3V. Enable the bus with ``dtoverlay=w1-gpio`` in
``/boot/firmware/config.txt``; the kernel then shows the sensor as a file.

Example::

    sensor = DS18B20()          # finds /sys/bus/w1/devices/28-*/temperature
    sensor.read_c()             # 3.562, or None if the sensor did not answer
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

log = logging.getLogger(__name__)

W1_DEVICES = "/sys/bus/w1/devices/28-*/temperature"


class DS18B20:
    def __init__(self, path: str | Path = "auto"):
        if str(path) == "auto":
            found = sorted(glob.glob(W1_DEVICES))
            if not found:
                raise FileNotFoundError(
                    "no DS18B20 found under /sys/bus/w1/devices: check the wiring and dtoverlay=w1-gpio")
            path = found[0]
        self.path = Path(path)

    def read_c(self) -> float | None:
        """Degrees Celsius; None when the bus gave nothing usable (a loose wire, say)."""
        try:
            millidegrees = int(self.path.read_text().strip())
        except (OSError, ValueError) as err:
            log.warning("could not read the DS18B20 at %s: %s", self.path, err)
            return None
        # 85 °C is the power-on value the sensor reports before its first conversion.
        if millidegrees == 85000 or not -55000 <= millidegrees <= 125000:
            return None
        return millidegrees / 1000
