"""``jisaku standby``: a second box that stores every reading and takes over when the first dies.

    jisaku standby refresh FILE     take the first box's settings from its backup FILE (every few minutes)
    jisaku standby takeover         the first box is dead: this box acts from now on
    jisaku standby status           when it last took a backup, and whether it took over

How the two boxes share the work, and what to do when the first dies and when it comes back:
docs/deploy.md, "A standby box" (the mechanism: jisaku/gateway/standby.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import load_settings


def cmd_refresh(args: argparse.Namespace) -> None:
    from jisaku.gateway.backup import BackupError
    from jisaku.gateway.standby import StandbyError, refresh

    settings = load_settings()
    try:
        report = refresh(Path(args.backup), settings.sqlite_path, settings.data_dir)
    except (StandbyError, BackupError) as err:
        raise SystemExit(f"jisaku standby refresh: {err}") from None
    print(report.summary(), flush=True)


def cmd_takeover(args: argparse.Namespace) -> None:
    from jisaku.gateway.standby import take_over

    settings = load_settings()
    state = take_over(settings.data_dir)
    print(f"this box acts now (since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(state['took_over']))}):"
          " its gateway (--standby) sends notifications, settings, commands and updates within seconds, and"
          " refreshes are refused. Last settings taken from the first box: "
          f"{state.get('backup', 'none')}. Now turn the refresh timer off and move the town's address here"
          ' (docs/deploy.md, "A standby box").', flush=True)


def cmd_status(args: argparse.Namespace) -> None:
    from jisaku.gateway.standby import read_state

    state = read_state(load_settings().data_dir)
    if not state:
        print("this box has never taken a refresh: it is not a standby (or not set up yet)")
        return
    age = time.time() - state.get("refreshed", 0)
    print(f"last refresh: {state.get('backup')} ({age / 60:,.1f} minutes ago)")
    print("took over: " + (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state["took_over"]))
                           if state.get("took_over") else "no, standing by"))


def add_parser(commands) -> None:
    standby = commands.add_parser("standby", help="a second box that takes over when the first dies")
    actions = standby.add_subparsers(dest="action", required=True)
    refresh = actions.add_parser("refresh", help="take the first box's settings, devices and accounts from its backup")
    refresh.add_argument("backup", help="a .tar.gz file jisaku backup wrote on the first box")
    refresh.set_defaults(run=cmd_refresh)
    actions.add_parser("takeover", help="the first box is dead: this box acts from now on").set_defaults(run=cmd_takeover)
    actions.add_parser("status", help="when this box last took a refresh, and whether it took over").set_defaults(
        run=cmd_status)
