"""``jisaku quarantine``: what the gateway set aside, and why.

    jisaku quarantine                   counts per reason and the 20 newest messages
    jisaku quarantine --reason not_json --limit 5
"""

from __future__ import annotations

import argparse
import datetime

PREVIEW_BYTES = 80


def cmd_quarantine(args: argparse.Namespace) -> None:
    from jisaku.gateway.db import Database
    from jisaku.gateway.store import SQLiteStore

    from jisaku.contract.settings import load

    store = SQLiteStore(Database(load().sqlite_path))
    counts = store.quarantine_counts()
    if not counts:
        print("nothing in quarantine: every message so far kept to the contract")
        return
    print("quarantined messages per reason (docs/protocol.md explains each):")
    for reason, count in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"  {reason:24} {count:>9,}")
    rows = store.quarantined(limit=args.limit, reason=args.reason)
    print(f"\nnewest {len(rows)}:")
    for row in rows:
        when = datetime.datetime.fromtimestamp(row["received"]).strftime("%Y-%m-%d %H:%M:%S")
        payload = bytes(row["payload"])[:PREVIEW_BYTES].decode("utf-8", "replace")
        print(f"  {when}  {row['topic']}  {row['reason']}: {row['detail']}\n      {payload!r}")


def add_parser(commands) -> None:
    quarantine = commands.add_parser("quarantine", help="messages the gateway set aside, with the reasons")
    quarantine.add_argument("--reason", help="only this reason, e.g. not_json")
    quarantine.add_argument("--limit", type=int, default=20, help="how many of the newest to show")
    quarantine.set_defaults(run=cmd_quarantine)
