"""``jisaku devices add / rotate / revoke / remove``: change the device registry from the command line.

Each change is written to the audit log (actor ``cli:<unix user>``); a secret is printed
once, with ready-to-copy settings for the device, and never logged or recorded.

    jisaku devices add snow-3 --kind snow_gauge --location 36.146,137.252 \
        --name "Snow gauge, city hall" --name-ja "積雪計（市役所）"
    jisaku devices rotate snow-3        # a new secret; the old one stops working now
    jisaku devices revoke snow-3        # no secret works; a connected device is cut off
    jisaku devices remove snow-3        # forget it (its readings stay)

The embedded broker notices a change within a second or so. With Mosquitto, ``jisaku
mosquitto sync`` applies it (docs/mosquitto.md).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from jisaku.contract.settings import Settings


def _open(settings: Settings):
    from jisaku.gateway.audit import AuditLog
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import Registry

    db = Database(settings.sqlite_path)
    return Registry(db), AuditLog(db)


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

    from jisaku.contract import settings as settings_module

    lat = lon = None
    if args.location:
        try:
            lat, lon = (float(x) for x in args.location.split(","))
        except ValueError:
            raise ValueError(f"--location {args.location!r} should be LAT,LON, e.g. 36.146,137.252") from None
    settings = settings_module.load()
    registry, audit = _open(settings)
    device = DeviceRecord(id=args.id, kind=args.kind, name=args.name or args.id, public=not args.private,
                          interval_s=args.interval, lat=lat, lon=lon, name_ja=args.name_ja or "")
    secret = registry.add_device(device)
    audit.record(cli_actor(), "device.add", device.id, before=None, after=asdict(device))
    print(f"registered {device.id}.")
    _show_secret(device.id, secret, _snippets_text(settings, args, device, secret))


def cmd_rotate(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor

    from jisaku.contract import settings as settings_module

    settings = settings_module.load()
    registry, audit = _open(settings)
    was_revoked = registry.is_revoked(args.id)
    secret = registry.rotate_secret(args.id)  # raises RegistryError for an unknown id
    audit.record(cli_actor(), "device.rotate_secret", args.id,
                 before={"revoked": was_revoked}, after={"revoked": False})
    print(f"{args.id}: new secret; the old one no longer works, and a connected {args.id} is cut off.")
    _show_secret(args.id, secret, _snippets_text(settings, args, registry.get(args.id), secret))


def cmd_revoke(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor

    from jisaku.contract import settings as settings_module

    registry, audit = _open(settings_module.load())
    was_revoked = registry.is_revoked(args.id)
    registry.revoke(args.id)
    audit.record(cli_actor(), "device.revoke", args.id, before={"revoked": was_revoked}, after={"revoked": True})
    print(f"{args.id}: revoked. It can no longer log in, and a connected {args.id} is cut off"
          f" (with Mosquitto: once `jisaku mosquitto sync` has run). `jisaku devices rotate {args.id}`"
          " gives it a new secret.")


def cmd_remove(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor

    from jisaku.contract import settings as settings_module

    registry, audit = _open(settings_module.load())
    device = registry.get(args.id)
    registry.remove_device(args.id)
    audit.record(cli_actor(), "device.remove", args.id, before=asdict(device) if device else None, after=None)
    print(f"{args.id}: removed from the registry; its stored readings stay.")


def _address_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker-url", help="the broker as the device reaches it, e.g. mqtt://192.168.1.10:1883"
                        " (default: JISAKU_BROKER)")
    parser.add_argument("--http-url", help="the dashboard as a phone reaches it, e.g. https://jisaku.example.jp"
                        " (default: JISAKU_HTTP)")


def add_parser(devices) -> None:
    """Register rotate, revoke and remove under ``jisaku devices`` (``add`` is made in cli.py)."""
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


def add_options(add: argparse.ArgumentParser) -> None:
    """The options ``jisaku devices add`` gets from this module; it then runs `cmd_add`."""
    add.add_argument("--name-ja", help="the name on the Japanese pages, e.g. 積雪計（市役所）"
                     " (default: none; they show --name)")
    _address_options(add)
    add.set_defaults(run=cmd_add)
