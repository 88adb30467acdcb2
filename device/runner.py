"""Run one device: its app, its link to the broker and, in simulation, its scenario.

Example::

    stop = threading.Event()
    config = load_device_config("kinds/snow_gauge")
    run_device(config, "mqtt://127.0.0.1:1883", secret, simulate=True, stop=stop,
               state_dir=Path("data/devices/snow-1"), server_url="http://127.0.0.1:8000")

``server_url`` is where pictures go (HTTP, the dashboard's address); only a device that
sends pictures (a snow camera) needs it. See :func:`picture_server`. It is also where updates
are downloaded from (device/updater.py), and the app runs from the version ``versions.json`` in
``state_dir`` names (device/app_code.py). ``run_device`` returns True when it stopped to restart
into a new version: ``jisaku device run``'s supervisor then starts it again (device/supervisor.py).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading

from pathlib import Path
from typing import Any

from jisaku.contract import kinds
from jisaku.contract.mqtt import BrokerAddress

from . import __version__
from .app_code import AppCode
from .config import DeviceConfig, DeviceConfigError
from .link import DeviceLink
from .remote_settings import RemoteSettings
from .updater import Updater
from .updates import Updates
from .versions import Versions

log = logging.getLogger(__name__)


def kind_folder_for(config: DeviceConfig) -> kinds.KindFolder | None:
    """The kind folder that runs this device: its ``app`` if that names one, else its ``kind``'s."""
    if config.app and ":" not in config.app:
        folder = kinds.folder(config.app)
        if folder is None:
            names = ", ".join(sorted(kinds.registry().folders))
            raise DeviceConfigError(
                f"{config.folder}: app {config.app!r} is not one of {names} (or file.py:Class for your own)")
        return folder
    kind = kinds.get(config.kind)
    if not config.app and kind is None:
        known = ", ".join(k.id for k in kinds.all_kinds())
        raise DeviceConfigError(f"{config.folder}: kind {config.kind!r} is not one of {known}:"
                                " give app = \"file.py:Class\" to run your own code, or add a kind folder (docs/kinds.md)")
    return None if config.app else kind.folder


def app_class_for(config: DeviceConfig) -> type:
    """The kind's Raspberry Pi class, or your own: ``app = "counter.py:Counter"`` in the device's folder."""
    folder = kind_folder_for(config)
    if folder is not None:
        return folder.pi_class()
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


def setting_limits(config: DeviceConfig, app: Any) -> dict[str, tuple[float, float]]:
    """What operators may change from afar: the kind folder's [settings], or your own app's SETTINGS."""
    folder = kind_folder_for(config)
    return folder.device_settings() if folder is not None else dict(getattr(app, "SETTINGS", {}))


def build(config: DeviceConfig, link: DeviceLink, simulate: bool, code: AppCode | None = None):
    """The app named by the config and, when simulating, the kind's scenario that plays its world.

    ``code``: where the app comes from (an updated version); None: what came with the device.
    """
    code = code or AppCode(config, None)
    app_class = code.app_class()
    factory = scenario = None
    if simulate:
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
        scenario_class = code.simulation_class()
        if scenario_class is not None:
            scenario = scenario_class(config, factory)  # first: it sets up the pins the app will use
    elif config.device.get("pin_factory"):
        factory = pin_factory(config.device["pin_factory"])
    app = app_class(config, link, pin_factory=factory)
    if scenario is not None:
        scenario.attach(app)
    return app, scenario


def pin_factory(name: str):
    """gpiozero's pin factory by its name: lgpio (Pi 5 and Bookworm), rpigpio, pigpio, native, mock."""
    from importlib.metadata import entry_points

    factories = entry_points(group="gpiozero_pin_factories")
    if name not in factories.names:
        raise DeviceConfigError(f"pin_factory {name!r} is not one of {', '.join(sorted(factories.names))}")
    return factories[name].load()()


def picture_server(config: DeviceConfig, fallback: str | None = None,
                   environ: dict[str, str] | None = None) -> str | None:
    """Where the device uploads pictures: the first of

    1. ``[device] server = "http://192.168.1.10:8000"`` in its device.toml,
    2. the ``JISAKU_SERVER`` environment variable,
    3. ``fallback``: what ``jisaku device run`` passes, ``http://`` + the ``http`` setting
       (right when the device runs on the server itself, as in the demo).
    """
    environ = os.environ if environ is None else environ
    url = config.device.get("server") or environ.get("JISAKU_SERVER") or fallback
    if url and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise DeviceConfigError(f"{config.folder}: the server for pictures must be like"
                                f" \"http://192.168.1.10:8000\", not {url!r}")
    return url or None


def broker_addresses(config: DeviceConfig, given: str | None, fallback: str) -> str | list[str]:
    """Where the device connects: the first of

    1. ``given``: ``jisaku device run --broker``,
    2. ``[device] broker`` in its device.toml (text, or a list of addresses),
    3. ``fallback``: the ``broker`` setting (jisaku.toml or ``JISAKU_BROKER``).

    Any of them may name several brokers, ``"mqtt://box-a:1883 mqtt://box-b:1883"``: the
    device uses the first that answers and moves on when its broker is gone
    (jisaku.device.link). DeviceConfigError says what to write when one is wrong.
    """
    broker = given or config.device.get("broker") or fallback
    try:
        BrokerAddress.parse_list(broker)
    except ValueError as err:
        raise DeviceConfigError(f"{config.folder}: {err}") from None
    return broker


def app_folder(state_dir: Path, version: str | None) -> Path | None:
    """``app/<version>`` in the state folder, or None for the app that came with the device.

    A version whose folder is gone (removed by hand) falls back to the installed app: better an
    old app that runs than a device that does not start.
    """
    if version is None:
        return None
    folder = Path(state_dir) / "app" / version
    if not folder.is_dir():
        log.error("versions.json names app %s, but %s is missing: running the app that came with the device",
                  version, folder)
        return None
    return folder


def run_device(config: DeviceConfig, broker_url: str | list[str], secret: str, simulate: bool, stop: threading.Event,
               state_dir: Path, server_url: str | None = None, supervised: bool = False) -> bool:
    """Run until ``stop`` is set; the sensor loop keeps going while the network is away.

    ``broker_url`` is one broker address or several (see :func:`broker_addresses`).

    ``state_dir`` keeps what must outlive a reboot: the outboxes, the operators' settings and
    the app versions. ``server_url`` is the last choice for the town's server, where pictures go
    and updates come from (see :func:`picture_server`).

    ``supervised``: run by ``jisaku device run``'s supervisor (device/supervisor.py), which starts
    it again into a new version and goes back if that fails. Only a supervised device takes
    updates; one run inside another program (``jisaku demo``, tests) refuses them.

    Returns True when it stopped to restart into a new version (the supervisor starts it again).
    """
    versions = Versions(state_dir)
    running = versions.load().app
    code = AppCode(config, app_folder(state_dir, running))
    if code.folder is not None:
        log.info("%s: running app version %s from %s", config.id, running, code.folder)
    server = picture_server(config, server_url)
    link = DeviceLink(config.id, secret, broker_url, state_dir,
                      outbox_bytes=int(config.device.get("outbox_bytes", 5_000_000)),
                      info={"fw": __version__, "app": config.app or config.kind, "runs_on": "pi",
                            "version": running if code.folder is not None else None},
                      server_url=server,
                      pictures_bytes=int(config.device.get("pictures_bytes", 50_000_000)),
                      # A device that switches things keeps its session: commands wait for it.
                      persistent=bool(config.section("outputs")))
    app, scenario = build(config, link, simulate, code)
    updates = Updates(config.id, secret, server, Path(state_dir), kind=config.kind) if server else None
    updater = Updater(link, updates, versions, config, restart=stop.set if supervised else None)
    link.on_update = updater.offer
    remote = RemoteSettings(app, code.setting_limits(app), state_dir)
    remote.restore()
    link.on_config = remote.apply
    link.on_command = lambda do, args: run_command(app, do, args)
    # An app with outputs answers commands whole: it needs their expires, and answers with a code.
    link.on_request = getattr(app, "answer", None)
    link.start()
    updater.start()
    if scenario is not None:
        scenario.start()
    try:
        app.run(stop)
    finally:
        updater.stop()
        if scenario is not None:
            scenario.stop()
        app.close()
        link.stop()
    return updater.restarting


def run_command(app: Any, do: str, args: dict[str, Any]) -> tuple[bool, Any]:
    """Run one of the app's commands (``report_now``, ``test_buzzer``, ...)."""
    commands = app.commands() if hasattr(app, "commands") else {}
    if do not in commands:
        return False, f"unknown command {do!r}; this device knows {', '.join(sorted(commands)) or 'none'}"
    return commands[do](args)
