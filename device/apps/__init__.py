"""The behaviours a device.toml can name with ``app = "..."``."""

from .printer_tray import PrinterTray
from .snow_gauge import SnowGauge
from .vehicle_tracker import VehicleTracker

APPS = {
    "printer_tray": PrinterTray,
    "snow_gauge": SnowGauge,
    "vehicle_tracker": VehicleTracker,
}
