"""Run one device: its app, its link to the broker and, in simulation, its scenario.

Example::

    stop = threading.Event()
    config = load_device_config("examples/snow-gauge")
    run_device(config, "mqtt://127.0.0.1:1883", secret, simulate=True, stop=stop,
               state_dir=Path("data/devices/snow-1"))
"""

from __future__ import annotations

import importlib.util
import logging
import threading

from pathlib import Path
from typing import Any

from . import __version__
from .apps import APPS, PrinterTray, SnowGauge, VehicleTracker
from .config import DeviceConfig, DeviceConfigError
from .link import DeviceLink
from .remote_settings import RemoteSettings
from .simulate import DrivingRoute, PaperOnTray, Snowfall

log = logging.getLogger(__name__)


def app_class_for(config: DeviceConfig) -> type:
    """One of jisaku's apps by name, or your own: ``app = "counter.py:Counter"`` in the device's folder."""
    if ":" in config.app:
        file_name, _, class_name = config.app.partition(":")
        path = config.path(file_name)
        spec = importlib.util.spec_from_file_location(f"jisaku_app_{path.stem}", path)
        if spec is None or not path.exists():
            raise DeviceConfigError(f"{config.folder}: app file {path} not found")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, class_name):
            raise DeviceConfigError(f"{path} has no class {class_name}")
        return getattr(module, class_name)
    if config.app not in APPS:
        raise DeviceConfigError(
            f"{config.folder}: app {config.app!r} is not one of {', '.join(APPS)} (or file.py:Class for your own)")
    return APPS[config.app]


def build(config: DeviceConfig, link: DeviceLink, simulate: bool, stop: threading.Event):
    """The app named by the config and, when simulating, the scenario that feeds it."""
    app_class = app_class_for(config)
    factory = scenario = None
    if simulate:
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
        if app_class is SnowGauge:
            scenario = Snowfall(config, factory)
            if scenario.temperature_file is not None:  # the simulated DS18B20
                config.tables.setdefault("ultrasonic", {})["temperature_file"] = str(scenario.temperature_file)
        elif app_class is PrinterTray:
            scenario = PaperOnTray(config, factory)
    elif config.device.get("pin_factory"):
        factory = pin_factory(config.device["pin_factory"])
    if app_class is VehicleTracker:
        lines = DrivingRoute(config, stop).lines() if simulate else None
        return VehicleTracker(config, link, lines=lines), scenario
    return app_class(config, link, pin_factory=factory), scenario


def pin_factory(name: str):
    """gpiozero's pin factory by its name: lgpio (Pi 5 and Bookworm), rpigpio, pigpio, native, mock."""
    from importlib.metadata import entry_points

    factories = entry_points(group="gpiozero_pin_factories")
    if name not in factories.names:
        raise DeviceConfigError(f"pin_factory {name!r} is not one of {', '.join(sorted(factories.names))}")
    return factories[name].load()()


def run_device(config: DeviceConfig, broker_url: str, secret: str, simulate: bool, stop: threading.Event,
               state_dir: Path) -> None:
    """Run until ``stop`` is set; the sensor loop keeps going while the network is away.

    ``state_dir`` keeps what must outlive a reboot: the outbox and the operators' settings.
    """
    link = DeviceLink(config.id, secret, broker_url, state_dir,
                      outbox_bytes=int(config.device.get("outbox_bytes", 5_000_000)),
                      info={"fw": __version__, "app": config.app})
    app, scenario = build(config, link, simulate, stop)
    remote = RemoteSettings(app, state_dir)
    remote.restore()
    link.on_config = remote.apply
    link.on_command = lambda do, args: run_command(app, do, args)
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


def run_command(app: Any, do: str, args: dict[str, Any]) -> tuple[bool, Any]:
    """Run one of the app's commands (``report_now``, ``test_buzzer``, ...)."""
    commands = app.commands() if hasattr(app, "commands") else {}
    if do not in commands:
        return False, f"unknown command {do!r}; this device knows {', '.join(sorted(commands)) or 'none'}"
    return commands[do](args)
