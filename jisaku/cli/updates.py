"""``jisaku updates``: offer a published bundle to devices, a few first, and follow it (docs/updates.md).

    jisaku updates offer snow_gauge 1.4.0 --first 2        every snow gauge; 2 first, the rest once those run it
    jisaku updates offer snow_gauge 1.4.0 --devices snow-1 snow-7
    jisaku updates list                                   the rollouts, newest first
    jisaku updates show 3                                 one rollout, device by device
    jisaku updates stop 3                                 devices not yet downloading are not offered it

The gateway publishes the offers (within a few seconds) and follows each device's progress;
these commands only write to and read the database, so they work while jisaku runs.
"""

from __future__ import annotations

import argparse

from .common import load_settings


def _book():
    from jisaku.gateway.bundle_store import BundleStore
    from jisaku.gateway.db import Database
    from jisaku.gateway.updates import UpdateBook

    settings = load_settings()
    return UpdateBook(Database(settings.sqlite_path), BundleStore(settings.sqlite_path.parent))


def _print_rollout(rollout, with_devices: bool) -> None:
    counts = ", ".join(f"{state} {n}" for state, n in rollout.counts.items())
    print(f"rollout {rollout.id}: {rollout.kind} {rollout.version} for {rollout.runs_on}s, {rollout.state}"
          f"{f' ({rollout.reason})' if rollout.reason else ''}; {counts}")
    for update in rollout.devices if with_devices else ():
        why = f"  {update.reason}: {update.detail or ''}" if update.reason else ""
        print(f"  {update.device_id:<20} group {update.wave}  {update.state:<12}{why}")


def cmd_offer(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor
    from jisaku.gateway.updates import UpdateError

    try:
        rollout = _book().start(args.kind, args.version, args.devices, args.first, args.wait_min, args.trial_s,
                                actor=cli_actor())
    except UpdateError as err:
        raise SystemExit(f"jisaku updates offer: {err}") from None
    _print_rollout(rollout, with_devices=True)
    print("the gateway sends the offers within a few seconds; follow them with: jisaku updates show", rollout.id)


def cmd_list(args: argparse.Namespace) -> None:
    rollouts = _book().rollouts()
    if not rollouts:
        print("no update offered yet: jisaku updates offer KIND VERSION")
    for rollout in rollouts:
        _print_rollout(rollout, with_devices=False)


def cmd_show(args: argparse.Namespace) -> None:
    rollout = _book().rollout(args.rollout)
    if rollout is None:
        raise SystemExit(f"jisaku updates show: no rollout {args.rollout} (jisaku updates list shows them)")
    _print_rollout(rollout, with_devices=True)


def cmd_stop(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor
    from jisaku.gateway.updates import UpdateError

    try:
        _print_rollout(_book().stop(args.rollout, cli_actor()), with_devices=True)
    except UpdateError as err:
        raise SystemExit(f"jisaku updates stop: {err}") from None


def add_parser(commands) -> None:
    updates = commands.add_parser("updates", help="offer a published bundle to devices and follow it")
    sub = updates.add_subparsers(dest="updates_command", required=True)
    offer = sub.add_parser("offer", help="offer KIND's bundle VERSION to devices, a few first")
    offer.add_argument("kind")
    offer.add_argument("version")
    offer.add_argument("--devices", nargs="+", help="these devices only (default: every device of the kind that"
                                                    " runs on what the bundle is for)")
    offer.add_argument("--first", type=int, default=0,
                       help="how many go first; the rest once those are back and running (default 0: all at once)")
    offer.add_argument("--wait-min", type=float, default=30,
                       help="minutes the first have to be running before the rollout stops (default 30)")
    offer.add_argument("--trial-s", type=int, default=300,
                       help="seconds a device has after switching to be back and reporting, else it goes back"
                            " (default 300)")
    offer.set_defaults(run=cmd_offer)
    listing = sub.add_parser("list", help="the rollouts, newest first")
    listing.set_defaults(run=cmd_list)
    show = sub.add_parser("show", help="one rollout, device by device")
    show.add_argument("rollout", type=int)
    show.set_defaults(run=cmd_show)
    stop = sub.add_parser("stop", help="stop a rollout: devices not yet downloading are not offered it")
    stop.add_argument("rollout", type=int)
    stop.set_defaults(run=cmd_stop)
