"""A standby box: a second jisaku that stores every reading itself and takes over when the first dies.

How the two boxes share the work (docs/deploy.md, "A standby box"):

- **Readings** reach both boxes through the RabbitMQ cluster: the first box's gateway reads
  the queue ``jisaku-gateway``, the standby's reads its own queue ``jisaku-standby``, bound to
  the same routing keys. A device's reading is acknowledged only once *both* queues have it on
  a majority of the nodes, so the standby has every reading a device was told was stored,
  whether the first box lives or not.
- **What operators decide** (devices and their secrets, accounts, alert rules and alerts,
  settings sent, commands, rollouts, the town's switches, …) is changed on the first box only.
  The standby takes it from a ``jisaku backup`` file of the first box, every few minutes:
  ``refresh`` below replaces those tables, in one transaction, and the secrets and keys files,
  and keeps the standby's own readings, events, statuses and quarantine. Readings, events and
  pictures in the file that the standby lacks are added (a reading stored before the standby's
  queue existed, a picture posted to the first box's dashboard).
- Until it **takes over** (``take_over``, ``jisaku standby takeover``) the standby's gateway only
  stores: it sends no notifications, switches no outputs, offers no updates, and does not send
  settings again, so nothing happens twice while both boxes run. After taking over it does all
  of that, and refuses any further refresh (which would undo what operators did on it).

What the standby keeps about itself is in ``<data>/standby.json`` (not part of a backup).

Example::

    report = refresh(Path("/srv/from-a/jisaku-20261203-031500.tar.gz"), settings.sqlite_path, settings.data_dir)
    print(report.summary())
    take_over(settings.data_dir)          # the first box is dead: this one acts now
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .backup import DATA, DATABASE, unpack_backup
from .db import connect, write

STATE_FILE = "standby.json"
# The queue a standby box's gateway reads (the first box's reads rabbitmq.QUEUE, "jisaku-gateway").
STANDBY_QUEUE = "jisaku-standby"

# What operators decide on the first box: the standby's copy is replaced by the first box's.
FROM_FIRST_BOX = (
    "devices", "service_accounts", "users", "audit_log", "operator_sessions",
    "alert_rules", "alert_meta", "alerts", "alert_history", "alert_tracks",
    "notify_outbox", "notify_deliveries", "device_config", "commands", "rule_actions",
    "rollouts", "device_updates", "town_state", "picture_masks",
    "towns",  # the deployment's towns: the first box's, as its devices and accounts are
)
# What each box sees for itself through its own queue: kept. (readings, events and pictures
# the standby lacks are added from the file, below.)
OWN = (
    "readings", "events", "latest", "device_status", "status_history", "quarantine", "readings_hourly",
    "pictures", "device_outputs", "device_software", "login_failures", "registry_version",
)
# Files of the data folder that are the standby's own, not the first box's.
OWN_FILES = ("pictures", "influx-spool", "devices", STATE_FILE)
# The file a deployment's gateway logs in with: the same on both boxes of one town.
IDENTITY_FILE = Path("secrets") / "gateway.secret"


class StandbyError(RuntimeError):
    """A refresh or takeover that cannot be done; the message says what to do."""


@dataclass
class RefreshReport:
    backup: Path
    made: float                    # when the first box made the file (its manifest)
    devices: int
    readings_added: int
    pictures_added: int

    def summary(self) -> str:
        age = max(0.0, time.time() - self.made)
        return (f"refreshed from {self.backup.name} (made {age:,.0f} s ago): {self.devices} devices and the"
                f" operators' settings; {self.readings_added:,} readings and {self.pictures_added} pictures"
                " this box lacked were added; its own readings were kept.")


def read_state(data_dir: Path) -> dict:
    """What this box knows about itself as a standby: {} for a box that never was one."""
    path = Path(data_dir) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _write_state(data_dir: Path, state: dict) -> None:
    path = Path(data_dir) / STATE_FILE
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(state, indent=1) + "\n")
    partial.replace(path)  # whole or not at all


def took_over(data_dir: Path) -> bool:
    """Whether this box has taken over from the first one (then its gateway acts, and refreshes stop)."""
    return bool(read_state(data_dir).get("took_over"))


def take_over(data_dir: Path) -> dict:
    """Mark this box as the one that acts now; its gateway (``--standby``) sees it within seconds."""
    state = read_state(data_dir)
    if not state.get("took_over"):
        state["took_over"] = time.time()
        _write_state(data_dir, state)
    return state


def _columns(connection: sqlite3.Connection, schema: str, table: str) -> str:
    return ", ".join(f'"{row[1]}"' for row in connection.execute(f'PRAGMA {schema}.table_info("{table}")'))


def _tables(connection: sqlite3.Connection, schema: str) -> set[str]:
    return {row[0] for row in connection.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")}


def _check_same_town(unpacked_data: Path, data_dir: Path, backup: Path) -> None:
    """Refuse a backup of another deployment: both boxes of one town share the gateway's secret."""
    theirs, ours = unpacked_data / IDENTITY_FILE, Path(data_dir) / IDENTITY_FILE
    if not ours.is_file():
        raise StandbyError(f"this box has no {IDENTITY_FILE} in {data_dir}: set the standby up from a backup of the"
                           f" first box once, with jisaku restore {backup} (docs/deploy.md, \"A standby box\")")
    if not theirs.is_file() or theirs.read_text().strip() != ours.read_text().strip():
        raise StandbyError(f"{backup} is a backup of another jisaku (its gateway secret is not this box's): this"
                           " box is the standby of the box it was set up from. Nothing was changed.")


def refresh(backup: Path, database: Path, data_dir: Path) -> RefreshReport:
    """Take the first box's operator data from its backup file; keep this box's own readings.

    Refuses (StandbyError or BackupError, nothing changed) a damaged file, one that is not a
    jisaku backup, a backup of another town, one older than the last one taken, and any
    refresh once this box has taken over. The gateway and dashboard may go on running.
    """
    backup, data_dir = Path(backup), Path(data_dir)
    state = read_state(data_dir)
    if state.get("took_over"):
        raise StandbyError("this box took over from the first one: it no longer takes the first box's settings"
                           " (they would undo what operators did here). Turn the refresh job off (crontab -e)."
                           " Only if the other box acts now and this one is to stand by again: stop this box's"
                           f" gateway, remove {data_dir / STATE_FILE}, start it again, then refresh")
    if not Path(database).exists():
        raise StandbyError(f"there is no database at {database}: set the standby up with jisaku restore {backup}"
                           " first (docs/deploy.md, \"A standby box\")")
    with tempfile.TemporaryDirectory(dir=data_dir.parent, prefix=".jisaku-refresh-") as work:
        unpacked = Path(work)
        manifest = unpack_backup(backup, unpacked)
        made = float(manifest.get("created", 0))
        if made <= state.get("backup_made", 0):
            raise StandbyError(f"{backup.name} is not newer than the backup this box last took"
                               f" ({state.get('backup')}): nothing to do. Is the copy from the first box still"
                               " coming? (its timer, or the first box is down)")
        theirs = unpacked / DATA
        _check_same_town(theirs, data_dir, backup)
        # Picture files before their rows, secrets and keys after the tables that name them.
        pictures_added = _copy_pictures(theirs / "pictures", data_dir / "pictures")
        added = _replace_tables(database, theirs / DATABASE, state.get("merged_until", 0.0))
        _copy_files(theirs, data_dir)
    state.update(backup=backup.name, backup_made=made, refreshed=time.time(), merged_until=added["until"])
    _write_state(data_dir, state)
    return RefreshReport(backup, made, manifest["database"]["devices"], added["readings"], pictures_added)


def _replace_tables(database: Path, theirs: Path, merged_until: float) -> dict:
    """In one transaction: the first box's operator tables replace ours; their readings we lack are added."""
    connection = connect(Path(database))
    try:
        connection.execute("ATTACH DATABASE ? AS first_box", (str(theirs),))
        ours = _tables(connection, "main")
        unknown = ours - set(FROM_FIRST_BOX) - set(OWN)
        if unknown:  # a newer jisaku added a table and nobody said whose it is
            raise StandbyError(f"jisaku standby does not know whose these tables are: {sorted(unknown)}."
                               " Add them to FROM_FIRST_BOX or OWN in gateway/standby.py.")
        with write(connection):
            # Rows of one table may point at another's (device_updates -> rollouts): checked at the end.
            connection.execute("PRAGMA defer_foreign_keys = ON")
            for table in FROM_FIRST_BOX:
                columns = _columns(connection, "main", table)
                connection.execute(f'DELETE FROM main."{table}"')
                connection.execute(f'INSERT INTO main."{table}" ({columns}) SELECT {columns} FROM first_box."{table}"')
            # Readings and events the first box received since the last refresh (and a minute
            # before, for clocks) that we lack: one stored before our queue existed, say.
            added = {}
            for table in ("readings", "events"):
                columns = _columns(connection, "main", table)
                added[table] = connection.execute(
                    f'INSERT OR IGNORE INTO main."{table}" ({columns}) SELECT {columns} FROM first_box."{table}"'
                    " WHERE received > ?", (merged_until - 60,)).rowcount
            # Pictures are posted to the first box's dashboard, not sent through the broker.
            columns = _columns(connection, "main", "pictures")
            connection.execute(f"INSERT OR IGNORE INTO main.pictures ({columns}) SELECT {columns} FROM first_box.pictures")
            until = connection.execute("SELECT max(received) FROM first_box.readings").fetchone()[0] or merged_until
            # Long-running processes here (jisaku rabbitmq auth, the alert engine) notice a
            # change by these counters growing.
            connection.execute("UPDATE registry_version SET version = version + 1 WHERE id=1")
            connection.execute("UPDATE alert_meta SET value = value + 1 WHERE key='rules_rev'")
        connection.execute("DETACH DATABASE first_box")
        return {"readings": added["readings"], "until": until}
    finally:
        connection.close()


def _copy_pictures(theirs: Path, ours: Path) -> int:
    """Picture files we lack (taken from cameras by the first box's dashboard) are added."""
    added = 0
    for picture in sorted(theirs.rglob("*")) if theirs.is_dir() else []:
        copy = ours / picture.relative_to(theirs)
        if picture.is_file() and not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(picture, copy)
            added += 1
    return added


def _copy_files(theirs: Path, data_dir: Path) -> None:
    """The first box's other files replace ours: secrets, keys, bundles, gtfs.toml, …"""
    for source in sorted(theirs.iterdir()):
        if source.name == DATABASE or source.name in OWN_FILES:
            continue
        target = data_dir / source.name
        # Beside it first, then swapped in: a reader sees the old one or the new one, whole.
        staged = data_dir / f".{source.name}.refresh"
        shutil.rmtree(staged, ignore_errors=True)
        if source.is_dir():
            shutil.copytree(source, staged)
            old = data_dir / f".{source.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                target.rename(old)
            staged.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            shutil.copy2(source, staged)
            os.replace(staged, target)
    for private in ("secrets", "keys"):
        if (data_dir / private).is_dir():
            (data_dir / private).chmod(0o700)
