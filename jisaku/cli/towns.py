"""``jisaku towns add / list / set``: the towns one deployment serves (a joint body's, a prefecture's).

Each town has its own residents' pages under ``/t/<id>/`` (the first also at ``/``), its own
devices, rules and operator accounts. Every change is in the audit log (actor ``cli:<unix user>``)::

    jisaku towns list
    jisaku towns add shirakawa --name "Shirakawa Village" --name-ja 白川村 --centre 36.27,136.90 --zoom 13
    jisaku towns set shirakawa --licence CC-BY-4.0 --tiles osm
    jisaku towns set shirakawa --notify shirakawa-notify.toml   # where its alerts go ([notify], as in jisaku.toml)
    jisaku towns set main --id takayama        # rename the first town everywhere (its pages move to /t/takayama/)
    jisaku devices add snow-9 --kind snow_gauge --town shirakawa
    jisaku users add yamada --role admin --town shirakawa     # manages Shirakawa's accounts only
    jisaku users add kanri --role admin --all-towns           # a joint body's admin: every town

Settings left empty fall back to jisaku.toml: all of them for the first town, only the base map
and the licence for the others (so a second town never sends alerts to the first town's staff).
"""

from __future__ import annotations

import argparse


def _changes():
    from jisaku.gateway.changes import Changes
    from jisaku.gateway.db import Database

    from .common import load_settings

    return Changes(Database(load_settings().sqlite_path))


def parse_centre(text: str) -> tuple[float, float]:
    """``"36.27,136.90"`` → ``(36.27, 136.9)``; ValueError with what to write otherwise."""
    try:
        lat, lon = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--centre {text!r} should be LAT,LON, e.g. 36.146,137.252") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"--centre {text!r}: the latitude is -90 to 90, the longitude -180 to 180")
    return lat, lon


def read_notify(path: str) -> dict | None:
    """The town's [notify] table from a TOML file written as jisaku.toml's is; ``none``: take it away."""
    import tomllib
    from pathlib import Path

    if path == "none":
        return None
    try:
        table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"--notify {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--notify {path}: {err}") from None
    return table.get("notify", table)  # a [notify] table, or its keys at the top


def _given(args: argparse.Namespace) -> dict:
    """The settings the command line names, as Town fields."""
    changes = {}
    for option, field in (("name", "name"), ("name_ja", "name_ja"), ("zoom", "zoom"), ("tiles", "tiles"),
                          ("tiles_attribution", "tiles_attribution"), ("licence", "licence")):
        value = getattr(args, option, None)
        if value is not None:
            changes[field] = value
    if getattr(args, "notify", None):
        changes["notify"] = read_notify(args.notify)
    if getattr(args, "centre", None):
        changes["lat"], changes["lon"] = parse_centre(args.centre)
    if changes.get("zoom") is not None and not 0 <= changes["zoom"] <= 22:
        raise ValueError(f"--zoom {changes['zoom']} should be 0 (the world) to 22 (a building)")
    return changes


def cmd_add(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor
    from jisaku.gateway.towns import Town

    town = _changes().add_town(cli_actor(), Town(id=args.id, **_given(args)))
    print(f"added town {town.id}: its residents' pages are at /t/{town.id}/; add its devices with"
          f" `jisaku devices add ID --kind KIND --town {town.id}`")


def cmd_set(args: argparse.Namespace) -> None:
    from jisaku.gateway.audit import cli_actor

    changes = _given(args)
    if args.new_id:
        changes["id"] = args.new_id
    if not changes:
        raise ValueError("nothing to change: give --name, --name-ja, --centre, --zoom, --tiles, --licence, --notify"
                         " or --id")
    town = _changes().update_town(cli_actor(), args.id, **changes)
    print(f"town {town.id}: saved" + (f" (renamed from {args.id})" if town.id != args.id else ""))


def cmd_list(args: argparse.Namespace) -> None:
    from jisaku.gateway.towns import Towns

    changes = _changes()
    towns = Towns(changes.db)
    counts = {row[0]: row[1] for row in changes.db.connection.execute(
        "SELECT town, count(*) FROM devices GROUP BY town")}
    users = {row[0]: row[1] for row in changes.db.connection.execute(
        "SELECT town, count(*) FROM users GROUP BY town")}
    first = towns.first() if towns.ids() else None
    print(f"{'id':16} {'path':20} {'devices':>7} {'accounts':>8}  name")
    for town in towns.list():
        path = "/" if town.id == first else f"/t/{town.id}/"
        name = " / ".join(part for part in (town.name or ("(jisaku.toml's)" if town.id == first else ""),
                                            town.name_ja) if part)
        print(f"{town.id:16} {path:20} {counts.get(town.id, 0):7} {users.get(town.id, 0):8}  {name}")
    if users.get(None):
        print(f"and {users[None]} account(s) of every town (a joint body's)")


def _town_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="the town's name in English (or romaji), e.g. \"Shirakawa Village\"")
    parser.add_argument("--name-ja", help="its name on the Japanese pages, e.g. 白川村")
    parser.add_argument("--centre", "--center", metavar="LAT,LON", help="where its map opens when it has no"
                        " devices with a place yet")
    parser.add_argument("--zoom", type=int, help="the map's zoom there, e.g. 13")
    parser.add_argument("--tiles", help="its base map: osm, gsi, or a tile URL (default: jisaku.toml's)")
    parser.add_argument("--tiles-attribution", help="the base map's credit line, for a tile URL")
    parser.add_argument("--licence", "--license", help="its open data's licence, e.g. CC-BY-4.0"
                        " (default: jisaku.toml's)")
    parser.add_argument("--notify", metavar="FILE", help="where its alerts go: a TOML file with a [notify] table"
                        " as in jisaku.toml (docs/alerts.md); `none` takes it away. Without one, only the first"
                        " town's alerts go anywhere (to jisaku.toml's [notify])")


def add_parser(commands) -> None:
    """``jisaku towns add|list|set``."""
    towns = commands.add_parser("towns", help="the towns this deployment serves").add_subparsers(
        dest="action", required=True)
    add = towns.add_parser("add", help="add a town: its own pages under /t/ID/, devices and accounts")
    add.add_argument("id", help="a-z, 0-9 and -, starting with a letter: the town's web address /t/ID/")
    _town_options(add)
    add.set_defaults(run=cmd_add)
    towns.add_parser("list", help="the towns, with their paths and how many devices and accounts each has") \
        .set_defaults(run=cmd_list)
    change = towns.add_parser("set", help="change a town's name, map, licence, or id (--id renames it everywhere)")
    change.add_argument("id")
    change.add_argument("--id", dest="new_id", metavar="NEW_ID", help="rename the town (its pages move to /t/NEW_ID/)")
    _town_options(change)
    change.set_defaults(run=cmd_set)
