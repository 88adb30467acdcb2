"""``jisaku device run FOLDER``: run one device, on its hardware or (``--simulate``) on mock pins.

FOLDER is a folder with a device.toml (a kind folder such as ``kinds/snow_gauge``, or your
copy of it). This is what a Raspberry Pi in the field runs; it needs only the device part
of jisaku (``pip install jisaku``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from .common import load_settings


def cmd_device_run(args: argparse.Namespace) -> None:
    from jisaku.device.config import load_device_config
    from jisaku.device.config import DeviceConfigError
    from jisaku.device.runner import broker_addresses, run_device

    config = load_device_config(args.folder, {"device": {"id": args.id}} if args.id else None)
    secret = os.environ.get("JISAKU_DEVICE_SECRET")
    if args.secret_file:
        secret = Path(args.secret_file).read_text().strip()
    if not secret:
        sys.exit(f"no secret for {config.id}: set JISAKU_DEVICE_SECRET or pass --secret-file"
                 f" (jisaku devices add {config.id} --kind {config.kind} prints one)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = load_settings()
    try:
        broker = broker_addresses(config, args.broker, settings.broker)
    except DeviceConfigError as err:
        sys.exit(str(err))
    # Pictures go over HTTP to the dashboard; device.toml's [device] server or JISAKU_SERVER
    # come first (see jisaku.device.runner.picture_server), this is for a device on the server itself.
    server = "http://" + settings.http.replace("0.0.0.0", "127.0.0.1")  # a server listening everywhere
    brokers = broker if isinstance(broker, str) else " ".join(broker)
    print(f"{config.id}: running {config.app or config.kind}{' (simulated)' if args.simulate else ''}, broker {brokers};"
          " Ctrl-C stops it", flush=True)
    try:
        run_device(config, broker, secret, args.simulate, stop, settings.data_dir / "devices" / config.id,
                   server_url=server)
    except KeyboardInterrupt:
        stop.set()


def add_parser(commands) -> None:
    device = commands.add_parser("device", help="run a device").add_subparsers(dest="action", required=True)
    run = device.add_parser("run", help="run the device described in FOLDER/device.toml")
    run.add_argument("folder", help="a folder with a device.toml, e.g. kinds/snow_gauge")
    run.add_argument("--simulate", action="store_true", help="mock pins and a scenario instead of hardware")
    run.add_argument("--id", help="use this device id instead of the one in device.toml")
    run.add_argument("--secret-file", help="read the device's secret from this file")
    run.add_argument("--broker", help="the broker, or several to move between when one is gone:"
                     " \"mqtt://box-a:1883 mqtt://box-b:1883\" (default: device.toml's broker, else JISAKU_BROKER)")
    run.set_defaults(run=cmd_device_run)
