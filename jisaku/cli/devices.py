"""``jisaku devices add / list / configure / rotate / revoke / remove / promote``: change devices from the command line.

Each change goes through ``jisaku.gateway.changes.Changes``, as the operator pages' do:
checked the same way (settings within their limits) and written to the audit log
(actor ``cli:<unix user>``). A secret is printed once, with ready-to-copy settings for
the device, and never logged or recorded.

    jisaku devices add snow-3 --kind snow_gauge --location 36.146,137.252 \
        --name "Snow gauge, city hall" --name-ja "積雪計（市役所）"
    jisaku devices configure tray-1 left_after_s=45   # new settings, within their limits
    jisaku devices configure heater-1 schedule="heater 05:00-08:00 mon-fri; heater 17:00-19:00"
    jisaku devices rotate snow-3        # a new secret; the old one stops working now
    jisaku devices revoke snow-3        # no secret works; a connected device is cut off
    jisaku devices remove snow-3        # forget it (its readings stay)
    jisaku devices add snow-9 --kind snow_gauge --practice   # a learner's: the practice map only
    jisaku devices promote snow-9       # make it a town device, keeping what it recorded
    jisaku devices promote snow-9 --drop-history   # ... deleting what it recorded while practising

The embedded broker notices a change within a second or so. With Mosquitto, ``jisaku
mosquitto sync`` applies it (docs/mosquitto.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jisaku.contract import settings as settings_module
from jisaku.contract.settings import Settings

from .common import load_settings, open_registry


def _changes(settings: Settings, publisher=None):
    """Where the command line's changes go, as the operator pages' do: checked, and audited."""
    from jisaku.gateway.changes import Changes
    from jisaku.gateway.db import Database

    return Changes(Database(settings.sqlite_path), publisher)


def _snippets_text(settings: Settings, args: argparse.Namespace, device, secret: str) -> str:
    from jisaku.gateway.provisioning import device_snippets, format_snippets

    snippets = device_snippets(device, secret, broker_url=args.broker_url or settings.broker,
                               http_url=args.http_url or settings.http)
    return format_snippets(snippets)


def _show_secret(device_id: str, secret: str, snippets: str) -> None:
    print(f"{device_id}: its secret, shown only this once (it is not kept anywhere):\n\n  {secret}\n")
    print(snippets)


def cmd_add(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor
    from jisaku.gateway.registry import DeviceRecord

    lat = lon = None
    if args.location:
        try:
            lat, lon = (float(x) for x in args.location.split(","))
        except ValueError:
            raise ValueError(f"--location {args.location!r} should be LAT,LON, e.g. 36.146,137.252") from None
    settings = settings_module.load()
    device = DeviceRecord(id=args.id, kind=args.kind, name=args.name or args.id, public=not args.private,
                          interval_s=args.interval, lat=lat, lon=lon, name_ja=args.name_ja or "",
                          practice=args.practice, town=args.town)
    secret = _changes(settings).add_device(cli_actor(), device)
    print(f"registered {device.id}" + (f" in town {args.town}" if args.town else "")
          + (" as a practice device: it shows on the practice map (/operator/practice), never to residents."
             if device.practice else "."))
    _show_secret(device.id, secret, _snippets_text(settings, args, device, secret))


def cmd_rotate(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor

    settings = settings_module.load()
    changes = _changes(settings)
    secret = changes.rotate_secret(cli_actor(), args.id)
    print(f"{args.id}: new secret; the old one no longer works, and a connected {args.id} is cut off.")
    _show_secret(args.id, secret, _snippets_text(settings, args, changes.registry.get(args.id), secret))


def cmd_revoke(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor

    _changes(settings_module.load()).revoke(cli_actor(), args.id)
    print(f"{args.id}: revoked. It can no longer log in, and a connected {args.id} is cut off"
          f" (with Mosquitto: once `jisaku mosquitto sync` has run). `jisaku devices rotate {args.id}`"
          " gives it a new secret.")


def cmd_remove(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor

    _changes(settings_module.load()).remove_device(cli_actor(), args.id)
    print(f"{args.id}: removed from the registry; its stored readings stay.")


def cmd_promote(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor
    from jisaku.gateway.db import Database
    from jisaku.gateway.practice import Practice

    settings = settings_module.load()
    deleted = Practice(Database(settings.sqlite_path)).promote(cli_actor(), args.id, keep_history=not args.drop_history)
    if args.drop_history:
        gone = ", ".join(f"{count} {table}" for table, count in deleted.items() if count) or "nothing"
        print(f"{args.id}: promoted to a town device; what it recorded while practising was deleted ({gone}).")
    else:
        print(f"{args.id}: promoted to a town device; its readings stay and residents now see them.")


def parse_settings(pairs: list[str]) -> dict:
    """``["left_after_s=45"]`` as ``{"left_after_s": 45}``; the limits are checked by Changes.

    A value that is not JSON stays text: a schedule is written as its lines, separated by
    ``;`` (``schedule="heater 05:00-08:00 mon-fri; heater 17:00-19:00"``).
    """
    changes = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals:
            raise ValueError(f"{pair!r} should be name=value, e.g. left_after_s=45")
        try:
            changes[name] = json.loads(value)
        except ValueError:
            changes[name] = value  # Changes says what it should have been
    return changes


def cmd_configure(args: argparse.Namespace) -> None:
    from jisaku.dashboard.broker_connection import BrokerUnavailable
    from jisaku.dashboard.operator.publisher import ConfigPublisher, wait_for_answer
    from jisaku.gateway.audit import cli_actor

    settings = settings_module.load()
    changes = _changes(settings)
    secret = os.environ.get("JISAKU_GATEWAY_SECRET") or changes.registry.service_secret("_gateway",
                                                                                        settings.secrets_dir)
    # Connects only when there is something to send: settings out of their limits are refused first.
    publisher = changes.publisher = ConfigPublisher(settings.broker, "_gateway", secret)
    try:
        config = changes.push_settings(cli_actor(), args.id, parse_settings(args.settings))
    except BrokerUnavailable as err:
        sys.exit(f"jisaku: cannot reach the broker ({err}); is jisaku broker or mosquitto running?")
    finally:
        publisher.stop()
    print(f"{args.id}: sent rev {config['rev']}: {json.dumps(config)}")
    state = wait_for_answer(changes.store, args.id, config["rev"], args.wait)  # the gateway records it
    if state["state"] == "applied":
        print(f"{args.id}: applied.")
    elif state["state"] == "refused":
        sys.exit(f"{args.id}: refused: {state['reason']}")
    else:
        print(f"{args.id}: no answer yet; the device applies it when it is next online.")


def cmd_list(args: argparse.Namespace) -> None:
    import datetime

    from jisaku.gateway.store import SQLiteStore

    registry = open_registry(load_settings())
    store = SQLiteStore(registry.db)
    print(f"{'id':16} {'town':12} {'kind':14} {'shown':8} {'status':8} {'last reading':20} {'settings':14} name")
    for device in store.latest(public_only=False):
        seen = datetime.datetime.fromtimestamp(device["ts"]).strftime("%Y-%m-%d %H:%M:%S") if device["ts"] else "-"
        config = store.config_state(device["id"])
        settings = f"rev {config['rev']} {config['state']}" if config else "-"
        kept = 'practice' if device['practice'] else 'public' if device['public'] else 'private'
        print(f"{device['id']:16} {device['town']:12} {device['kind']:14} {kept:8} "
              f"{device['status']:8} {seen:20} {settings:14} {device['name']}"
              + (f" / {device['name_ja']}" if device["name_ja"] else ""))


def _address_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker-url", help="the broker as the device reaches it, e.g. mqtt://192.168.1.10:1883"
                        " (default: JISAKU_BROKER)")
    parser.add_argument("--http-url", help="the dashboard as a phone reaches it, e.g. https://jisaku.example.jp"
                        " (default: JISAKU_HTTP)")


def add_parser(commands) -> None:
    """``jisaku devices add|list|configure|rotate|revoke|remove|promote``."""
    devices = commands.add_parser("devices", help="the device registry").add_subparsers(dest="action", required=True)
    add = devices.add_parser("add", help="register a device and print its secret once")
    add.add_argument("id")
    add.add_argument("--kind", required=True, help="bus, garbage_truck, float, snow_gauge, printer_tray, ...")
    add.add_argument("--name")
    add.add_argument("--name-ja", help="the name on the Japanese pages, e.g. 積雪計（市役所）"
                     " (default: none; they show --name)")
    add.add_argument("--private", action="store_true", help="keep it off the residents' pages")
    add.add_argument("--practice", action="store_true", help="a learner's device: on the practice map"
                     " (/operator/practice) only, never on residents' pages; `jisaku devices promote` later")
    add.add_argument("--interval", type=float, help="expected seconds between readings")
    add.add_argument("--location", help="LAT,LON for a device that does not move")
    add.add_argument("--town", help="the town it belongs to (`jisaku towns list`; default: the first town)")
    _address_options(add)
    add.set_defaults(run=cmd_add)
    devices.add_parser("list", help="the registered devices").set_defaults(run=cmd_list)
    configure = devices.add_parser("configure", help="change a device's settings from afar, e.g. left_after_s=45")
    configure.add_argument("id")
    configure.add_argument("settings", nargs="+", metavar="NAME=VALUE")
    configure.add_argument("--wait", type=float, default=10, help="seconds to wait for the device's answer")
    configure.set_defaults(run=cmd_configure)
    rotate = devices.add_parser("rotate", help="give a device a new secret (the old one stops working)")
    rotate.add_argument("id")
    _address_options(rotate)
    rotate.set_defaults(run=cmd_rotate)
    revoke = devices.add_parser("revoke", help="take a device's secret away and cut it off")
    revoke.add_argument("id")
    revoke.set_defaults(run=cmd_revoke)
    remove = devices.add_parser("remove", help="forget a device (its readings stay)")
    remove.add_argument("id")
    remove.set_defaults(run=cmd_remove)
    promote = devices.add_parser("promote", help="make a practice device a town device (audited)")
    promote.add_argument("id")
    promote.add_argument("--drop-history", action="store_true", help="delete what it recorded while practising"
                         " (readings, events, pictures, hourly figures) instead of keeping it")
    promote.set_defaults(run=cmd_promote)

