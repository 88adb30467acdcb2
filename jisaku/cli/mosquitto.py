"""``jisaku mosquitto files`` and ``jisaku mosquitto sync``: run Mosquitto on the registry's accounts.

    jisaku mosquitto files --dir /var/lib/jisaku/mosquitto --listen 0.0.0.0:1883 --user mosquitto
    mosquitto -c /var/lib/jisaku/mosquitto/mosquitto.conf
    jisaku mosquitto sync --dir /var/lib/jisaku/mosquitto --user mosquitto

``files`` writes mosquitto.conf, passwd and acl once. ``sync`` keeps running: every second it
looks at the registry's change counter, and when a device was added, rotated, revoked or
removed (from the command line or the web pages), it rewrites passwd and acl and sends
Mosquitto SIGHUP. Mosquitto reloads them without dropping connected clients, except those
whose credentials no longer work: those it disconnects. ``sync --once`` does it one time.
docs/mosquitto.md explains the whole set-up.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from jisaku.contract import settings as settings_module

log = logging.getLogger(__name__)


def _registry():
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import Registry

    return Registry(Database(settings_module.load().sqlite_path))


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen {text!r} should be HOST:PORT, e.g. 0.0.0.0:1883")
    return host, int(port)


def cmd_files(args: argparse.Namespace) -> None:
    from jisaku.gateway.mosquitto import write_mosquitto_files

    host, port = _listen(args.listen)
    conf = write_mosquitto_files(Path(args.dir), _registry().account_hashes(), port, host, user=args.user)
    print(f"wrote {conf} (and passwd, acl next to it). Start Mosquitto with:\n\n"
          f"  mosquitto -c {conf}\n\nand keep the accounts in step with: jisaku mosquitto sync --dir {args.dir}"
          + (f" --user {args.user}" if args.user else ""))


class Syncer:
    """Rewrites Mosquitto's accounts and reloads it whenever the registry's version changes.

    Example::

        syncer = Syncer(registry, Path("data/mosquitto"))
        syncer.sync_if_changed()      # True: first call always writes
    """

    def __init__(self, registry, directory: Path, pid_file: Path | None = None, user: str | None = None):
        self.registry = registry
        self.directory = Path(directory)
        self.pid_file = pid_file
        self.user = user
        self._synced_version: int | None = None

    def sync_if_changed(self) -> bool:
        from jisaku.gateway.mosquitto import sync_accounts

        version = self.registry.version()
        if version == self._synced_version:
            return False
        accounts = self.registry.account_hashes()
        pid = sync_accounts(self.directory, accounts, self.pid_file, user=self.user)
        self._synced_version = version
        devices = sum(not name.startswith("_") for name in accounts)
        log.info("wrote %d device and %d service accounts (registry version %d); %s", devices,
                 len(accounts) - devices, version,
                 f"Mosquitto (pid {pid}) reloads them" if pid else "Mosquitto is not running yet")
        return True


def cmd_sync(args: argparse.Namespace) -> None:
    syncer = Syncer(_registry(), Path(args.dir), Path(args.pid_file) if args.pid_file else None, args.user)
    syncer.sync_if_changed()
    if args.once:
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"keeping {args.dir}/passwd and acl in step with the registry; Ctrl-C stops it", flush=True)
    try:
        while not stop.wait(args.every):
            try:
                syncer.sync_if_changed()
            except RuntimeError as err:  # e.g. Mosquitto restarting: the next change tries again
                log.error("%s", err)
                syncer._synced_version = None
    except KeyboardInterrupt:
        pass


def add_parser(commands) -> None:
    mosquitto = commands.add_parser("mosquitto", help="run Mosquitto on the registry's accounts")
    actions = mosquitto.add_subparsers(dest="action", required=True)

    files = actions.add_parser("files", help="write mosquitto.conf, passwd and acl once")
    files.add_argument("--dir", required=True, help="where the files go, e.g. /var/lib/jisaku/mosquitto")
    files.add_argument("--listen", default="127.0.0.1:1883", help="HOST:PORT; 0.0.0.0:1883 for devices on the network")
    files.add_argument("--user", help="the user Mosquitto runs as (e.g. mosquitto) when started as root")
    files.set_defaults(run=cmd_files)

    sync = actions.add_parser("sync", help="keep passwd and acl in step with the registry, reloading Mosquitto")
    sync.add_argument("--dir", required=True, help="the directory given to `jisaku mosquitto files`")
    sync.add_argument("--pid-file", help="Mosquitto's pid file (default: DIR/mosquitto.pid)")
    sync.add_argument("--user", help="give the files to this user (the one Mosquitto runs as)")
    sync.add_argument("--every", type=float, default=1.0, help="seconds between looks at the registry")
    sync.add_argument("--once", action="store_true", help="sync once and exit")
    sync.set_defaults(run=cmd_sync)
