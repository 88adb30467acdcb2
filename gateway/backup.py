"""A backup of everything a town built up, made while jisaku runs, and put back on another box.

One file, ``jisaku-<date>.tar.gz``, holds:

- ``data/jisaku.db``: the database (registry, readings, alerts, accounts, audit log), copied
  with SQLite's online backup, so it is consistent even while the gateway writes;
- the rest of the data folder: ``secrets/`` (the services' MQTT secrets), ``keys/`` (the
  private key that signs update bundles, docs/updates.md), ``bundles/``, ``pictures/``,
  ``gtfs.toml``, ``influx-spool/`` (readings not yet in InfluxDB), …; not ``devices/``,
  which is the simulated devices' own state, nor the database's -wal and -shm files;
- ``jisaku.toml``, the settings, when there is one;
- ``manifest.json``: what jisaku made it, when, how many devices and readings, and the
  SHA-256 of every file, so a damaged copy is refused before anything is written.

Pictures are copied after the database, so a picture stored meanwhile is in the folder but
not in the database (harmless); one that retention deleted meanwhile is missing (its row
then shows no picture). Readings kept in InfluxDB are not in it: back InfluxDB up with its
own tool (docs/deploy.md).

The file holds the services' secrets: it is written readable by its owner only, and
should be kept like a password.

Example::

    info = make_backup(settings.sqlite_path, settings.data_dir, Path("jisaku.toml"), Path("backups"))
    restore_backup(info.path, Path("/var/lib/jisaku/data"), Path("/etc/jisaku/jisaku.toml"))
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jisaku.device import __version__

from .db import DatabaseTooNew, connect
from .migrations import MIGRATIONS

FORMAT = 1
MANIFEST = "manifest.json"
DATA = "data"
SETTINGS = "jisaku.toml"
DATABASE = "jisaku.db"
# Not part of a backup: the simulated devices' own state, a standby box's own record of its
# refreshes (gateway/standby.py), and SQLite's side files (the online backup already holds
# what they hold).
LEFT_OUT = ("devices", "standby.json")
LEFT_OUT_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp")


class BackupError(RuntimeError):
    """A backup that cannot be made or put back; the message says what to do."""


@dataclass
class BackupInfo:
    path: Path
    bytes: int
    devices: int
    readings: int
    files: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _counts(path: Path) -> dict[str, int]:
    connection = sqlite3.connect(path)
    try:
        return {"user_version": connection.execute("PRAGMA user_version").fetchone()[0],
                "devices": connection.execute("SELECT count(*) FROM devices").fetchone()[0],
                "readings": connection.execute("SELECT count(*) FROM readings").fetchone()[0]}
    finally:
        connection.close()


def snapshot_database(database: Path, into: Path) -> None:
    """A consistent copy of ``database`` at ``into``, made while others go on writing to it."""
    if not database.exists():
        raise BackupError(f"there is no database at {database}: check JISAKU_DATA (or data_dir in jisaku.toml)")
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(into)
    try:
        # A few pages at a time, so the gateway's writes wait at most a moment; SQLite starts
        # over by itself if a write lands meanwhile, and the copy is of one moment.
        source.backup(target, pages=1024, sleep=0.005)
        if target.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise BackupError(f"the copy of {database} failed SQLite's integrity check: is the disk failing?")
    finally:
        target.close()
        source.close()


def _data_files(data_dir: Path, database: Path) -> list[Path]:
    files = []
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir)
        if not path.is_file() or relative.parts[0] in LEFT_OUT or path.name.endswith(LEFT_OUT_SUFFIXES):
            continue
        if path.resolve() == database.resolve():
            continue
        files.append(path)
    return files


def make_backup(database: Path, data_dir: Path, settings_file: Path | None, destination: Path) -> BackupInfo:
    """Write a backup into ``destination`` (a folder: ``jisaku-<date>.tar.gz`` in it; or a file name)."""
    if destination.suffixes[-2:] != [".tar", ".gz"]:
        destination.mkdir(parents=True, exist_ok=True)
        destination = destination / f"jisaku-{datetime.now():%Y%m%d-%H%M%S}.tar.gz"
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".jisaku-backup-") as work:
        copy = Path(work) / DATABASE
        snapshot_database(database, copy)
        members: list[tuple[str, Path]] = [(f"{DATA}/{DATABASE}", copy)]
        members += [(f"{DATA}/{path.relative_to(data_dir).as_posix()}", path) for path in _data_files(data_dir, database)]
        if settings_file is not None and settings_file.is_file():
            members.append((SETTINGS, settings_file))
        hashes = {}
        partial = destination.with_name(destination.name + ".tmp")
        # Secrets are inside: only the owner may read it, from the first byte on.
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            for name, path in members:
                try:
                    hashes[name] = _sha256(path)
                    archive.add(path, arcname=name, recursive=False)
                except FileNotFoundError:  # removed meanwhile (a picture thinned by retention)
                    hashes.pop(name, None)
            counts = _counts(copy)
            manifest = {"format": FORMAT, "jisaku": __version__, "created": time.time(),
                        "database": counts, "files": hashes}
            body = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
            entry = tarfile.TarInfo(MANIFEST)
            entry.size, entry.mtime, entry.mode = len(body), int(time.time()), 0o600
            archive.addfile(entry, io.BytesIO(body))
            raw.flush()
            os.fsync(raw.fileno())
        partial.replace(destination)  # a backup is there whole, or not at all
    return BackupInfo(destination, destination.stat().st_size, counts["devices"], counts["readings"], len(hashes))


def read_manifest(archive: tarfile.TarFile, name: Path) -> dict:
    try:
        manifest = json.loads(archive.extractfile(MANIFEST).read())
    except (KeyError, AttributeError, ValueError):
        raise BackupError(f"{name} has no readable {MANIFEST}: it is not a jisaku backup, or it is damaged") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{name} is a backup of format {manifest.get('format')!r}; this jisaku reads format"
                          f" {FORMAT}: restore it with the jisaku that made it ({manifest.get('jisaku')})")
    if manifest["database"]["user_version"] > len(MIGRATIONS):
        raise BackupError(f"{name} was made by a newer jisaku ({manifest.get('jisaku')}): update jisaku first")
    return manifest


def _extract(archive: tarfile.TarFile, into: Path) -> None:
    """Unpack plain files and folders only, each inside ``into``: a crafted archive cannot write elsewhere."""
    for member in archive.getmembers():
        target = (into / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(into.resolve()):
            raise BackupError(f"the backup holds {member.name!r}, which no jisaku backup has: it was not made by"
                              " jisaku backup. Nothing was changed.")
    archive.extractall(into, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


def unpack_backup(backup: Path, into: Path) -> dict:
    """Unpack ``backup`` into the empty folder ``into``, every file checked; returns its manifest.

    Raises BackupError, saying what to do, for a file that is not a jisaku backup or is damaged.
    The database is brought up to this jisaku's layout. (jisaku restore and jisaku standby
    refresh both start here.)
    """
    try:
        archive = tarfile.open(backup, mode="r:gz")
    except (OSError, tarfile.TarError) as err:
        raise BackupError(f"{backup} cannot be read as a backup: {err}") from None
    with archive:
        manifest = read_manifest(archive, backup)
        try:
            _extract(archive, into)
        except (OSError, tarfile.TarError, EOFError) as err:
            raise BackupError(f"{backup} is damaged ({err}): use another copy") from None
    for name, expected in manifest["files"].items():
        path = into / name
        if not path.is_file() or _sha256(path) != expected:
            raise BackupError(f"{backup}: {name} is missing or damaged: use another copy. Nothing was changed.")
    try:
        connect(into / DATA / DATABASE).close()  # older backups get today's layout now
    except DatabaseTooNew as err:
        raise BackupError(str(err)) from None
    return manifest


def restore_backup(backup: Path, data_dir: Path, settings_file: Path | None = None,
                   force: bool = False) -> dict:
    """Put a backup back into ``data_dir`` (and its settings at ``settings_file``); returns its manifest.

    Refuses a data folder that already has a database unless ``force`` (then the old folder is
    kept beside it as ``<data_dir>.before-restore-<date>``). Every file is checked against the
    manifest first: a damaged backup changes nothing.
    """
    if (data_dir / DATABASE).exists() and not force:
        raise BackupError(f"{data_dir} already has a database: restore into an empty folder, or give --force"
                          " (the folder is then kept beside it, renamed)")
    with tempfile.TemporaryDirectory(dir=data_dir.parent if data_dir.parent.exists() else None,
                                     prefix=".jisaku-restore-") as work:
        unpacked = Path(work)
        manifest = unpack_backup(backup, unpacked)
        if settings_file is not None and (unpacked / SETTINGS).is_file() and settings_file.exists() and not force:
            raise BackupError(f"{settings_file} exists and the backup has settings too: compare them, or give"
                              " --force. Nothing was changed.")
        if data_dir.exists() and any(data_dir.iterdir()):
            data_dir.rename(data_dir.with_name(f"{data_dir.name}.before-restore-{datetime.now():%Y%m%d-%H%M%S}"))
        elif data_dir.exists():
            data_dir.rmdir()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(unpacked / DATA, data_dir)
        # Owner-only again, whatever the unpacking left: the services' secrets and the bundle signing key.
        for private in ("secrets", "keys"):
            if (data_dir / private).is_dir():
                (data_dir / private).chmod(0o700)
        for key_file in (data_dir / "keys").glob("*.key"):
            key_file.chmod(0o600)
        if settings_file is not None and (unpacked / SETTINGS).is_file():
            shutil.copy2(unpacked / SETTINGS, settings_file)
    return manifest
