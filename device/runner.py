"""Run one device: its app, its link to the broker and, in simulation, its scenario.

Example::

    stop = threading.Event()
    config = load_device_config("examples/snow-gauge")
    run_device(config, "mqtt://127.0.0.1:1883", secret, simulate=True, stop=stop)
"""

from __future__ import annotations

import logging
import threading

from .apps import APPS, PrinterTray, SnowGauge, VehicleTracker
from .config import DeviceConfig, DeviceConfigError
from .link import DeviceLink
from .simulate import DrivingRoute, PaperOnTray, Snowfall

log = logging.getLogger(__name__)


def build(config: DeviceConfig, link: DeviceLink, simulate: bool, stop: threading.Event):
    """The app named by the config and, when simulating, the scenario that feeds it."""
    app_class = APPS.get(config.app)
    if app_class is None:
        raise DeviceConfigError(f"{config.folder}: app {config.app!r} is not one of {', '.join(APPS)}")
    factory = scenario = None
    if simulate:
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
        if app_class is SnowGauge:
            scenario = Snowfall(config, factory)
        elif app_class is PrinterTray:
            scenario = PaperOnTray(config, factory)
    if app_class is VehicleTracker:
        lines = DrivingRoute(config, stop).lines() if simulate else None
        return VehicleTracker(config, link, lines=lines), scenario
    return app_class(config, link, pin_factory=factory), scenario


def run_device(config: DeviceConfig, broker_url: str, secret: str, simulate: bool, stop: threading.Event) -> None:
    """Run until ``stop`` is set; the sensor loop keeps going while the network is away."""
    link = DeviceLink(config.id, secret, broker_url)
    app, scenario = build(config, link, simulate, stop)
    link.start()
    if scenario is not None:
        scenario.start()
    try:
        app.run(stop)
    finally:
        if scenario is not None:
            scenario.stop()
        app.close()
        link.stop()
