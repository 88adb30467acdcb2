"""``jisaku backup`` and ``jisaku restore``: everything a town built up, in one file, and back.

    jisaku backup                       backups/jisaku-<date>.tar.gz, made while jisaku runs
    jisaku backup /srv/backup           into that folder (or name the file: x.tar.gz)
    jisaku restore jisaku-20261203-031500.tar.gz            into an empty data folder
    jisaku restore FILE --force         over an existing one (kept beside it, renamed)

What is in it and what is not: jisaku/gateway/backup.py; a nightly off-site copy: docs/deploy.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from jisaku.contract.settings import CONFIG_FILE

from .common import load_settings


def settings_file() -> Path:
    return Path(os.environ.get("JISAKU_CONFIG", CONFIG_FILE))


def cmd_backup(args: argparse.Namespace) -> None:
    from jisaku.gateway.backup import make_backup

    settings = load_settings()
    info = make_backup(settings.sqlite_path, settings.data_dir, settings_file(), Path(args.destination))
    print(f"{info.path}: {info.bytes / 1e6:,.1f} MB, {info.devices} devices, {info.readings:,} readings,"
          f" {info.files} files. It holds the services' secrets: keep it like a password.")


def cmd_restore(args: argparse.Namespace) -> None:
    from jisaku.gateway.backup import restore_backup

    settings = load_settings()
    manifest = restore_backup(Path(args.backup), settings.data_dir, settings_file(), force=args.force)
    counts = manifest["database"]
    print(f"restored into {settings.data_dir}: {counts['devices']} devices, {counts['readings']:,} readings"
          f" (backup made by jisaku {manifest['jisaku']}). Start jisaku gateway and jisaku dashboard again;"
          " with Mosquitto, run jisaku mosquitto sync first.")


def add_parser(commands) -> None:
    backup = commands.add_parser("backup", help="everything the town built up in one file, made while jisaku runs")
    backup.add_argument("destination", nargs="?", default="backups",
                        help="a folder (default backups/) or a file name ending in .tar.gz")
    backup.set_defaults(run=cmd_backup)
    restore = commands.add_parser("restore", help="put a backup back into the data folder (JISAKU_DATA)")
    restore.add_argument("backup", help="the .tar.gz file jisaku backup wrote")
    restore.add_argument("--force", action="store_true",
                         help="over an existing data folder (it is kept beside it, renamed) and jisaku.toml")
    restore.set_defaults(run=cmd_restore)
