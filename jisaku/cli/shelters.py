"""``jisaku shelters import / export``: the town's shelter list in, the shelters with their live state out.

    jisaku shelters import hinanbasho.csv            # register every shelter in the list (again: update)
    jisaku shelters import hinanbasho.csv --actor tanaka --no-send
    jisaku shelters export > shelters.csv            # UTF-8 with a BOM: Excel opens it as it is
    jisaku shelters export --format geojson -o shelters.geojson

The list is a CSV in one of the national formats (see jisaku/gateway/shelter_data.py):
デジタル庁's 指定緊急避難場所一覧, or 国土地理院's 指定避難所 / 指定緊急避難場所, in UTF-8 or
Shift_JIS. Every change goes through ``Changes``, so it is in the audit log (actor
``cli:<unix user>`` unless ``--actor`` says who). Capacities (想定収容人数) go to the shelters'
tallies through the broker when it is running; otherwise (or with ``--no-send``) they are
kept on the server, and the map uses them at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from jisaku.contract import settings as settings_module


def _changes(settings, send: bool):
    from jisaku.gateway.changes import Changes
    from jisaku.gateway.db import Database

    changes = Changes(Database(settings.sqlite_path))
    if send:
        from jisaku.dashboard.operator.publisher import ConfigPublisher

        secret = os.environ.get("JISAKU_GATEWAY_SECRET") or changes.registry.service_secret(
            "_gateway", settings.secrets_dir)
        # Connects only when a capacity is to be sent; if the broker is away, the import says so.
        changes.publisher = ConfigPublisher(settings.broker, "_gateway", secret)
    return changes


def cmd_import(args: argparse.Namespace) -> None:
    from jisaku.gateway import shelter_data
    from jisaku.gateway.audit import cli_actor

    path = Path(args.file)
    if not path.is_file():
        sys.exit(f"jisaku shelters import: {path} is not a file")
    try:
        table = shelter_data.read_csv(path.read_bytes())
    except shelter_data.ShelterDataError as err:
        sys.exit(f"{path}: {err}")
    print(f"{path}: {len(table.rows)} shelters, {table.dataset.name} ({table.dataset.source}), {table.encoding}")
    changes = _changes(settings_module.load(), send=not args.no_send)
    try:
        imported = shelter_data.import_shelters(changes, table, args.actor or cli_actor())
    except shelter_data.ShelterDataError as err:
        sys.exit(f"{path}: {err}\nnothing was imported: fix the file and run the command again")
    finally:
        if changes.publisher is not None:
            changes.publisher.stop()
    print(f"added {len(imported.added)}, updated {len(imported.updated)}, unchanged {len(imported.unchanged)}")
    if imported.capacity_sent:
        print(f"capacity sent to {len(imported.capacity_sent)} shelters' tallies (they get it when they are online)")
    if imported.capacity_recorded:
        print(f"capacity kept on the server for {len(imported.capacity_recorded)} shelters (the map uses it now);"
              " a tally gets it with the next settings sent to it, e.g."
              f" jisaku devices configure {imported.capacity_recorded[0]} capacity=<people>")
    if imported.added:
        print(f"to run a tally for a new shelter, give it a secret: jisaku devices rotate {imported.added[0]}")


def cmd_export(args: argparse.Namespace) -> None:
    from jisaku.gateway import shelter_data
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import Registry
    from jisaku.gateway.store import SQLiteStore

    db = Database(settings_module.load().sqlite_path)
    states = shelter_data.shelter_states(SQLiteStore(db), Registry(db), public_only=not args.include_private)
    try:
        if args.format == "geojson":
            body = json.dumps(shelter_data.to_geojson(states, args.dataset), ensure_ascii=False, indent=1).encode()
        else:
            body = shelter_data.to_csv(states, args.dataset)
    except shelter_data.ShelterDataError as err:
        sys.exit(f"jisaku shelters export: {err}")
    if args.output:
        Path(args.output).write_bytes(body)
        print(f"{args.output}: {len(states)} shelters", file=sys.stderr)
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()


def add_parser(commands) -> None:
    """``jisaku shelters import|export``."""
    shelters = commands.add_parser("shelters", help="the town's shelter list: import it, export it with the live state")
    actions = shelters.add_subparsers(dest="action", required=True)
    load = actions.add_parser("import", help="register the shelters of a national-format CSV (again: update them)")
    load.add_argument("file", help="the CSV: 指定緊急避難場所一覧 (デジタル庁) or 指定避難所 / 指定緊急避難場所 (国土地理院)")
    load.add_argument("--actor", help="who is importing, for the audit log (default: cli:<your user name>)")
    load.add_argument("--no-send", action="store_true",
                      help="keep capacities on the server only; do not connect to the broker")
    load.set_defaults(run=cmd_import)
    dump = actions.add_parser("export", help="the public shelters, national columns plus the live state")
    dump.add_argument("--format", choices=("csv", "geojson"), default="csv")
    dump.add_argument("--dataset", help="emergency_sites, gsi_shelters or gsi_emergency_sites"
                      " (default: the format most shelters were imported from)")
    dump.add_argument("--include-private", action="store_true", help="private shelters too")
    dump.add_argument("-o", "--output", help="write to this file (default: standard output)")
    dump.set_defaults(run=cmd_export)
