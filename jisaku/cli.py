"""The ``jisaku`` command: one entry point for every part.

    jisaku demo                         the whole system with simulated devices
    jisaku broker                       the embedded MQTT broker on its own
    jisaku gateway [--workers N]        subscribe, check and store (N processes on a shared subscription)
    jisaku dashboard                    the web pages and the API
    jisaku device run FOLDER            run a device (add --simulate to run it without hardware)
    jisaku devices add ID --kind KIND   register a device and print its secret once
    jisaku devices list                 the registered devices
    jisaku devices configure ID NAME=VALUE...   change a device's settings from afar
    jisaku devices rotate|revoke ID     a new secret / no secret; a connected device is cut off
    jisaku mosquitto sync --dir DIR     keep Mosquitto's passwd/acl in step with the registry
    jisaku quarantine                   messages the gateway set aside, and why
    jisaku bench ingest                 how fast the gateway stores readings through Mosquitto
    jisaku flash EXAMPLE --id ID        put a firmware example on a MicroPython board over USB
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from jisaku.contract import settings as settings_module
from jisaku.contract.settings import Settings, SettingsError


def _settings() -> Settings:
    return settings_module.load()


def _registry(settings: Settings):
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import Registry

    return Registry(Database(settings.sqlite_path))


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(_settings(), Path(args.city))


def cmd_broker(args: argparse.Namespace) -> None:
    from jisaku.contract.mqtt import BrokerAddress
    from jisaku.gateway.broker import EmbeddedBroker

    settings = _settings()
    registry = _registry(settings)
    address = BrokerAddress.parse(settings.broker)

    async def serve() -> None:
        broker = EmbeddedBroker(address.host, address.port, authenticate=registry.check_credentials,
                                version=registry.version)  # cuts off rotated/revoked devices
        await broker.start()
        print(f"embedded broker listening on {address}; Ctrl-C stops it", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await broker.stop()

    asyncio.run(serve())


def cmd_gateway(args: argparse.Namespace) -> None:
    if args.workers > 1:
        # The supervisor needs none of what this process has imported: start it afresh, small.
        os.execv(sys.executable, [sys.executable, "-m", "jisaku.workers", str(args.workers)])
    from .gateway_run import run_gateway

    run_gateway(args.client_id, args.shared)


def cmd_dashboard(args: argparse.Namespace) -> None:
    import uvicorn

    from jisaku.dashboard.app import create_app
    from jisaku.dashboard.operator import ConfigPublisher
    from jisaku.dashboard.osmand import PhonePublisher

    from .stores import open_stores

    settings = _settings()
    host, port = settings.http_host_port
    registry, _, influx = open_stores(settings)
    secret = os.environ.get("JISAKU_DASHBOARD_SECRET") or registry.service_secret("_dashboard", settings.secrets_dir)
    phones = PhonePublisher(settings.broker, "_dashboard", secret)  # positions from phones, via the broker
    phones.start()
    config = ConfigPublisher(settings.broker, "_dashboard", secret)  # operators' settings for devices
    try:
        uvicorn.run(create_app(settings.sqlite_path, phones, readings=influx, config_publisher=config),
                    host=host, port=port, log_level="info",
                    # Off unless asked: residents' addresses stay out of the logs, and a line per
                    # request costs about as much as serving it (jisaku bench web).
                    access_log=args.access_log)
    finally:
        phones.stop()
        config.stop()


def cmd_device_run(args: argparse.Namespace) -> None:
    from jisaku.device.config import load_device_config
    from jisaku.device.runner import run_device

    config = load_device_config(args.folder, {"device": {"id": args.id}} if args.id else None)
    secret = os.environ.get("JISAKU_DEVICE_SECRET")
    if args.secret_file:
        secret = Path(args.secret_file).read_text().strip()
    if not secret:
        sys.exit(f"no secret for {config.id}: set JISAKU_DEVICE_SECRET or pass --secret-file"
                 f" (jisaku devices add {config.id} --kind {config.kind} prints one)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = _settings()
    broker = settings.broker
    print(f"{config.id}: running {config.app}{' (simulated)' if args.simulate else ''}, broker {broker};"
          " Ctrl-C stops it", flush=True)
    try:
        run_device(config, broker, secret, args.simulate, stop, settings.data_dir / "devices" / config.id)
    except KeyboardInterrupt:
        stop.set()


def cmd_devices_list(args: argparse.Namespace) -> None:
    import datetime

    from jisaku.gateway.store import SQLiteStore

    registry = _registry(_settings())
    store = SQLiteStore(registry.db)
    print(f"{'id':16} {'kind':14} {'shown':8} {'status':8} {'last reading':20} {'settings':14} name")
    for device in store.latest(public_only=False):
        seen = datetime.datetime.fromtimestamp(device["ts"]).strftime("%Y-%m-%d %H:%M:%S") if device["ts"] else "-"
        config = store.config_state(device["id"])
        settings = f"rev {config['rev']} {config['state']}" if config else "-"
        print(f"{device['id']:16} {device['kind']:14} {'public' if device['public'] else 'private':8} "
              f"{device['status']:8} {seen:20} {settings:14} {device['name']}"
              + (f" / {device['name_ja']}" if device["name_ja"] else ""))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="jisaku", description="Build your own field sensors and show their data.")
    top.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = top.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the whole system with simulated devices")
    demo.add_argument("--city", default="examples/demo-city/city.toml", help="the demo town's devices")
    demo.set_defaults(run=cmd_demo)
    commands.add_parser("broker", help="the embedded MQTT broker").set_defaults(run=cmd_broker)
    gateway = commands.add_parser("gateway", help="subscribe, check and store")
    gateway.add_argument("--workers", type=int, default=1, metavar="N",
                         help="run N gateway processes sharing the load (needs Mosquitto's shared subscriptions)")
    gateway.add_argument("--shared", action="store_true",
                         help="take a share of the messages ($share/jisaku/jisaku/#) beside other gateways")
    gateway.add_argument("--client-id", default="jisaku-gateway",
                         help="MQTT client id; each gateway on a shared subscription needs its own")
    gateway.set_defaults(run=cmd_gateway)
    dashboard = commands.add_parser("dashboard", help="the web pages and the API")
    dashboard.add_argument("--access-log", action="store_true",
                           help="log every request, with the visitor's address (off by default)")
    dashboard.set_defaults(run=cmd_dashboard)

    device = commands.add_parser("device", help="run a device").add_subparsers(dest="action", required=True)
    run = device.add_parser("run", help="run the device described in FOLDER/device.toml")
    run.add_argument("folder", help="an example folder, e.g. kinds/snow_gauge")
    run.add_argument("--simulate", action="store_true", help="mock pins and a scenario instead of hardware")
    run.add_argument("--id", help="use this device id instead of the one in device.toml")
    run.add_argument("--secret-file", help="read the device's secret from this file")
    run.set_defaults(run=cmd_device_run)

    from . import devices_cli

    devices = commands.add_parser("devices", help="the device registry").add_subparsers(dest="action", required=True)
    add = devices.add_parser("add", help="register a device and print its secret once")
    add.add_argument("id")
    add.add_argument("--kind", required=True, help="bus, garbage_truck, float, snow_gauge, printer_tray, ...")
    add.add_argument("--name")
    add.add_argument("--private", action="store_true", help="keep it off the residents' pages")
    add.add_argument("--interval", type=float, help="expected seconds between readings")
    add.add_argument("--location", help="LAT,LON for a device that does not move")
    devices_cli.add_options(add)  # audit log, ready-to-copy settings
    devices.add_parser("list", help="the registered devices").set_defaults(run=cmd_devices_list)
    devices_cli.add_parser(devices)  # configure, rotate, revoke, remove

    from . import bench, flash

    bench.add_parser(commands)
    flash.add_parser(commands)
    from . import quarantine_cli; quarantine_cli.add_parser(commands)  # noqa: E702 (jisaku quarantine)
    from . import mosquitto_cli; mosquitto_cli.add_parser(commands)  # noqa: E702 (jisaku mosquitto files/sync)
    from . import users_cli; users_cli.add_parser(commands)  # noqa: E702 (jisaku users add NAME --role admin)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        args.run(args)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # piped into head, say: the reader has all it wanted
        sys.stderr.close()
    except (SettingsError, ValueError, LookupError, RuntimeError) as err:
        if args.verbose:
            raise
        sys.exit(f"jisaku: {err} (add -v to see where)")


if __name__ == "__main__":
    main()
