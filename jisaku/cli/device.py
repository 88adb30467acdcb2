"""``jisaku device run FOLDER``: run one device, on its hardware or (``--simulate``) on mock pins.

FOLDER is a folder with a device.toml (a kind folder such as ``kinds/snow_gauge``, or your
copy of it). This is what a Raspberry Pi in the field runs; it needs only the device part
of jisaku (``pip install jisaku``).

It is a small supervisor (jisaku.device.supervisor) that runs the app in a child process
(the same command with ``--child``), starts it again when it ends, and goes back to the version
before when an update's new version fails its trial (docs/updates.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from .common import load_settings


def child_args(args: argparse.Namespace) -> list[str]:
    """The arguments of the child the supervisor starts: this command again, with --child."""
    given = ["--simulate"] if args.simulate else []
    for option in ("id", "secret_file", "broker"):
        if getattr(args, option):
            given += [f"--{option.replace('_', '-')}", getattr(args, option)]
    verbose = ["-v"] if getattr(args, "verbose", False) else []
    return ["-m", "jisaku.cli", *verbose, "device", "run", str(args.folder), "--child", *given]


def cmd_device_run(args: argparse.Namespace) -> None:
    from jisaku.device.config import load_device_config
    from jisaku.device.config import DeviceConfigError
    from jisaku.device.runner import broker_addresses, run_device
    from jisaku.device.supervisor import RESTART, Supervisor

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
    state_dir = settings.data_dir / "devices" / config.id
    try:
        broker = broker_addresses(config, args.broker, settings.broker)
    except DeviceConfigError as err:
        sys.exit(str(err))
    if not args.child:
        # Ctrl-C reaches the child too (same terminal): both stop, the child first.
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        print(f"{config.id}: supervising its app (state in {state_dir}); Ctrl-C stops it", flush=True)
        Supervisor(child_args(args), state_dir).run(stop)
        return
    # Pictures go over HTTP to the dashboard; device.toml's [device] server or JISAKU_SERVER
    # come first (see jisaku.device.runner.picture_server), this is for a device on the server itself.
    server = "http://" + settings.http.replace("0.0.0.0", "127.0.0.1")  # a server listening everywhere
    brokers = broker if isinstance(broker, str) else " ".join(broker)
    print(f"{config.id}: running {config.app or config.kind}{' (simulated)' if args.simulate else ''}, broker {brokers};"
          " Ctrl-C stops it", flush=True)
    try:
        restart = run_device(config, broker, secret, args.simulate, stop, state_dir, server_url=server,
                             supervised=True)
    except KeyboardInterrupt:
        stop.set()
        return
    if restart:
        sys.exit(RESTART)  # the supervisor starts the new version


def add_parser(commands) -> None:
    device = commands.add_parser("device", help="run a device").add_subparsers(dest="action", required=True)
    run = device.add_parser("run", help="run the device described in FOLDER/device.toml")
    run.add_argument("folder", help="a folder with a device.toml, e.g. kinds/snow_gauge")
    run.add_argument("--simulate", action="store_true", help="mock pins and a scenario instead of hardware")
    run.add_argument("--id", help="use this device id instead of the one in device.toml")
    run.add_argument("--secret-file", help="read the device's secret from this file")
    run.add_argument("--broker", help="the broker, or several to move between when one is gone:"
                     " \"mqtt://box-a:1883 mqtt://box-b:1883\" (default: device.toml's broker, else JISAKU_BROKER)")
    run.add_argument("--child", action="store_true",
                     help="run the app in this process, without the supervisor (the supervisor starts it so)")
    run.set_defaults(run=cmd_device_run)
