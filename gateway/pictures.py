"""Pictures from cameras: checked, kept as files, and never public before their black-out areas are black.

A picture arrives whole (docs/protocol.md, "Pictures"). It is checked (JPEG or PNG, not
too large, really decodes), then three files are written in the pictures folder and one
row in the database:

- the original, for operators only: ``<device>/<day>/<ts ms>-<seq>.jpg`` (or ``.png``);
- the public copy, with the camera's black-out areas (a house window, a number plate spot)
  painted black: ``….m<mask rev>.jpg``;
- a thumbnail of the public copy, for phones: ``….m<mask rev>.thumb.jpg``.

The answer the camera waits for comes only after all of them are on disk, so a camera
forgets a picture only once it is safe. A picture already stored is recognised by its
(device, ts, seq) and not stored twice. One that cannot be taken is quarantined, like any
bad message, with the reason. When an operator changes a camera's black-out areas, its
public copies are made again, under new names (the revision is in the name, so a browser
never keeps an old copy).

Example::

    store = PictureStore(db)                                # data/pictures beside data/jisaku.db
    stored, picture = store.store("cam-1", jpeg_bytes, "image/jpeg", ts=1764900000.0, seq=7)
    store.set_mask("cam-1", [[0.70, 0.10, 0.20, 0.25]])    # x, y, width, height as fractions
    store.public_file(picture)                              # the copy residents may see
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .db import Database, time_range, write

# A snow camera's snapshot is 50-500 kB; a megabyte leaves room for a sharper camera.
MAX_BYTES = 1024 * 1024
# Pixels, checked before decoding: a small file can unpack into a huge image.
MAX_PIXELS = 40_000_000
THUMB_WIDTH = 320
PUBLIC_QUALITY, THUMB_QUALITY = 85, 75
TYPES = {"image/jpeg": ("JPEG", b"\xff\xd8\xff", "jpg"), "image/png": ("PNG", b"\x89PNG\r\n\x1a\n", "png")}
# How much of a refused picture the quarantine keeps: enough to see what it was.
QUARANTINE_BYTES = 512
DAY = 86400


class PictureRefused(ValueError):
    """A picture the server will never take; ``status`` is the HTTP answer, ``reason`` the quarantine's."""

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


class PicturesUnavailable(RuntimeError):
    """The picture could not be kept now (a full disk, say); the camera keeps it and tries again."""


@dataclass(frozen=True)
class Picture:
    device_id: str
    ts: float
    seq: int
    received: float
    content_type: str
    bytes: int
    width: int
    height: int
    sha256: str
    file: str        # the original, relative to the pictures folder
    mask_rev: int

    @property
    def public_name(self) -> str:
        return f"{self.file.rsplit('.', 1)[0]}.m{self.mask_rev}.jpg"

    @property
    def thumb_name(self) -> str:
        return f"{self.file.rsplit('.', 1)[0]}.m{self.mask_rev}.thumb.jpg"


class PictureStore:
    def __init__(self, db: Database, folder: Path | None = None, max_bytes: int = MAX_BYTES):
        # Beside the database by default: data/pictures when the database is data/jisaku.db.
        self.db, self.max_bytes = db, max_bytes
        self.folder = Path(folder) if folder is not None else db.path.parent / "pictures"
        # Decoding and encoding happen on these few threads only, as many as there are cores,
        # whichever request thread asked: a decoded 1280 × 720 picture takes 2.7 MB, and every
        # thread that ever held one keeps its own malloc arena of such pages. With 100 cameras
        # at once the rest wait as bytes; the server stays small (jisaku bench images) and is
        # no slower.
        self._workers = _workers()

    # ------------------------------------------------------------ storing

    def store(self, device_id: str, data: bytes, content_type: str, ts: float, seq: int,
              received: float | None = None) -> tuple[bool, Picture]:
        """Keep one picture: ``(True, picture)``, or ``(False, the one stored before)`` for a repeat.

        Raises PictureRefused (after quarantining it) for a picture that cannot be taken, and
        PicturesUnavailable when the disk cannot take it now.
        """
        received = time.time() if received is None else received
        before = self.get(device_id, ts, seq)
        if before is not None:
            return False, before
        return self._workers.submit(self._store, device_id, data, content_type, ts, seq, received).result()

    def _store(self, device_id: str, data: bytes, content_type: str, ts: float, seq: int,
               received: float) -> tuple[bool, Picture]:
        try:
            image = self._checked(data, content_type)
        except PictureRefused as refused:
            self.quarantine(device_id, data, refused, received)
            raise
        rects, rev = self.mask(device_id)
        kind, _, extension = TYPES[content_type]
        when = datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")
        picture = Picture(device_id, ts, seq, received, content_type, len(data), image.width, image.height,
                          hashlib.sha256(data).hexdigest(), f"{device_id}/{when}/{round(ts * 1000)}-{seq}.{extension}",
                          rev)
        try:
            _write_file(self.folder / picture.file, data)
            self._write_public(picture, image, rects)
            with write(self.db.connection) as connection:
                connection.execute(
                    "INSERT OR IGNORE INTO pictures (device_id, ts, seq, received, content_type, bytes, width, height,"
                    " sha256, file, mask_rev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (device_id, ts, seq, received, content_type, picture.bytes, picture.width, picture.height,
                     picture.sha256, picture.file, rev))
                self._show_newest(connection, device_id, time.time())  # now, not when the upload began: the live stream looks back only a moment
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise PicturesUnavailable(f"the disk under {self.folder} is full: free space, or shorten how"
                                          " long pictures are kept") from None
            raise PicturesUnavailable(f"cannot write under {self.folder}: {err}") from None
        return True, picture

    def _checked(self, data: bytes, content_type: str):
        """The decoded image, or PictureRefused saying what is wrong with it."""
        from PIL import Image

        if not data:
            raise PictureRefused(400, "picture_empty", "the picture is empty")
        if len(data) > self.max_bytes:
            raise PictureRefused(413, "picture_too_large", f"the picture is {len(data):,} bytes; at most"
                                 f" {self.max_bytes:,} are taken: lower the camera's resolution or quality")
        if content_type not in TYPES:
            raise PictureRefused(415, "picture_type", f"Content-Type {content_type!r}: send image/jpeg or image/png")
        kind, magic, _ = TYPES[content_type]
        if not data.startswith(magic):
            raise PictureRefused(415, "picture_type", f"it says {content_type} but is not a {kind} file")
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise PictureRefused(413, "picture_too_large",
                                     f"{image.width}×{image.height} pixels is more than {MAX_PIXELS:,}")
            image.load()  # decodes it all: a truncated or corrupt file fails here
        except PictureRefused:
            raise
        except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError…
            raise PictureRefused(422, "picture_undecodable", f"the {kind} does not decode: {err}") from None
        return image

    def quarantine(self, device_id: str, data: bytes, refused: PictureRefused, received: float) -> None:
        with write(self.db.connection) as connection:
            connection.execute(
                "INSERT INTO quarantine (received, topic, payload, reason, detail) VALUES (?, ?, ?, ?, ?)",
                (received, f"POST /api/v1/devices/{device_id}/pictures", data[:QUARANTINE_BYTES], refused.reason,
                 f"{refused.detail} ({len(data):,} bytes)"))

    def _write_public(self, picture: Picture, image, rects: list[list[float]]) -> None:
        """The public copy (black-out areas painted black) and its thumbnail."""
        from PIL import ImageDraw

        public = image if image.mode == "RGB" else image.convert("RGB")  # drawn on: the original is on disk
        draw = ImageDraw.Draw(public)
        for x, y, w, h in rects:
            draw.rectangle([x * public.width, y * public.height, (x + w) * public.width, (y + h) * public.height],
                           fill=(0, 0, 0))
        _write_file(self.folder / picture.public_name, _jpeg(public, PUBLIC_QUALITY))
        public.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 10))  # THUMB_WIDTH wide, its height as the picture's
        _write_file(self.folder / picture.thumb_name, _jpeg(public, THUMB_QUALITY))

    def _show_newest(self, connection, device_id: str, now: float) -> None:
        """Put the camera's newest picture on the map (``latest.picture``), or none if it has none left.

        ``latest.updated`` moves on, so latest.geojson and the live stream send it at once.
        """
        row = connection.execute("SELECT * FROM pictures WHERE device_id=? ORDER BY ts DESC, seq DESC LIMIT 1",
                                 (device_id,)).fetchone()
        shown = json.dumps(shown_on_map(Picture(**dict(row)))) if row else None
        connection.execute(
            "INSERT INTO latest (device_id, ts, v, updated, picture) VALUES (?, ?, '{}', ?, ?)"
            " ON CONFLICT (device_id) DO UPDATE SET picture = excluded.picture, updated = excluded.updated",
            (device_id, row["ts"] if row else now, now, shown))

    # ------------------------------------------------------------ black-out areas

    def mask(self, device_id: str) -> tuple[list[list[float]], int]:
        """The camera's black-out areas ``[[x, y, w, h], …]`` (fractions) and their revision (0: none yet)."""
        row = self.db.connection.execute("SELECT rects, rev FROM picture_masks WHERE device_id=?",
                                         (device_id,)).fetchone()
        return (json.loads(row["rects"]), row["rev"]) if row else ([], 0)

    def set_mask(self, device_id: str, rects: list[list[float]]) -> int:
        """New black-out areas; every stored public copy of the camera is made again with them."""
        rects = checked_rects(rects)
        with write(self.db.connection) as connection:
            row = connection.execute("SELECT rev FROM picture_masks WHERE device_id=?", (device_id,)).fetchone()
            rev = (row["rev"] if row else 0) + 1
            connection.execute("INSERT OR REPLACE INTO picture_masks (device_id, rects, rev, updated)"
                               " VALUES (?, ?, ?, ?)", (device_id, json.dumps(rects), rev, time.time()))
        for picture in self.pictures(device_id, limit=None):
            self._workers.submit(self._remask, picture, rects, rev).result()
        with write(self.db.connection) as connection:
            self._show_newest(connection, device_id, time.time())
        return rev

    def _remask(self, picture: Picture, rects: list[list[float]], rev: int) -> None:
        from PIL import Image

        old_public, old_thumb = self.public_file(picture), self.thumb_file(picture)
        remade = replace(picture, mask_rev=rev)
        with Image.open(self.folder / picture.file) as image:
            image.load()
            self._write_public(remade, image, rects)
        with write(self.db.connection) as connection:
            connection.execute("UPDATE pictures SET mask_rev=? WHERE device_id=? AND ts=? AND seq=?",
                               (rev, picture.device_id, picture.ts, picture.seq))
        for old in (old_public, old_thumb):
            old.unlink(missing_ok=True)  # the areas it shows must not stay reachable

    # ------------------------------------------------------------ how long pictures are kept

    def thin(self, keep_all_days: float, keep_hourly_days: float, now: float | None = None) -> int:
        """Keep every picture for ``keep_all_days``, then one an hour (the hour's first) until
        ``keep_hourly_days``, then none; 0 days means for ever. Returns how many were deleted."""
        now = time.time() if now is None else now
        doomed: list[Picture] = []
        connection = self.db.connection
        if keep_all_days > 0:
            # Not the first of its hour: a picture of the same camera and hour came before it.
            doomed += [Picture(**dict(row)) for row in connection.execute(
                "SELECT * FROM pictures AS p WHERE p.ts < ? AND EXISTS (SELECT 1 FROM pictures AS q"
                " WHERE q.device_id = p.device_id AND CAST(q.ts / 3600 AS INTEGER) = CAST(p.ts / 3600 AS INTEGER)"
                " AND (q.ts < p.ts OR (q.ts = p.ts AND q.seq < p.seq)))", (now - keep_all_days * DAY,))]
        if keep_hourly_days > 0:
            doomed += [Picture(**dict(row)) for row in connection.execute(
                "SELECT * FROM pictures WHERE ts < ?", (now - keep_hourly_days * DAY,))]
        gone = {(p.device_id, p.ts, p.seq): p for p in doomed}
        with write(connection):
            connection.executemany("DELETE FROM pictures WHERE device_id=? AND ts=? AND seq=?", list(gone))
            for device_id in {p.device_id for p in gone.values()}:
                self._show_newest(connection, device_id, now)
        for picture in gone.values():  # the rows first: a crash leaves unlisted files, never a dead link
            for path in (self.original_file(picture), self.public_file(picture), self.thumb_file(picture)):
                path.unlink(missing_ok=True)
        return len(gone)

    # ------------------------------------------------------------ reading

    def get(self, device_id: str, ts: float, seq: int) -> Picture | None:
        row = self.db.connection.execute("SELECT * FROM pictures WHERE device_id=? AND ts=? AND seq=?",
                                         (device_id, ts, seq)).fetchone()
        return Picture(**dict(row)) if row else None

    def pictures(self, device_id: str, since: float | None = None, until: float | None = None,
                 limit: int | None = 100) -> list[Picture]:
        """The camera's pictures, newest first."""
        within, bounds = time_range(since, until)
        sql, params = "SELECT * FROM pictures WHERE device_id=?" + within, [device_id, *bounds]
        sql += " ORDER BY ts DESC, seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [Picture(**dict(row)) for row in self.db.connection.execute(sql, params)]

    def health(self, device_id: str, now: float | None = None) -> dict[str, Any]:
        """What an operator wants to know about a camera: its newest picture, how many came in the
        last day, and how many the server refused (quarantined), with the last reason."""
        now = time.time() if now is None else now
        connection = self.db.connection
        newest = self.pictures(device_id, limit=1)
        last_day = connection.execute("SELECT count(*) FROM pictures WHERE device_id=? AND ts >= ?",
                                      (device_id, now - DAY)).fetchone()[0]
        topic = f"POST /api/v1/devices/{device_id}/pictures"
        refused = connection.execute("SELECT count(*) FROM quarantine WHERE topic=?", (topic,)).fetchone()[0]
        last = connection.execute("SELECT reason, detail FROM quarantine WHERE topic=? ORDER BY received DESC"
                                  " LIMIT 1", (topic,)).fetchone()
        return {"newest": newest[0] if newest else None, "last_day": last_day, "refused": refused,
                "last_refusal": f"{last['reason']}: {last['detail']}" if last else None}

    def original_file(self, picture: Picture) -> Path:
        return self.folder / picture.file

    def public_file(self, picture: Picture) -> Path:
        return self.folder / picture.public_name

    def thumb_file(self, picture: Picture) -> Path:
        return self.folder / picture.thumb_name


_WORKERS: list[ThreadPoolExecutor] = []


def _workers() -> ThreadPoolExecutor:
    """The picture threads, one set for the whole process (every PictureStore shares them)."""
    if not _WORKERS:
        _WORKERS.append(ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="pictures"))
    return _WORKERS[0]


def shown_on_map(picture: Picture) -> dict[str, Any]:
    """Where a picture's public copy and thumbnail are, as latest.geojson and the pictures API give it."""
    return {"ts": picture.ts, "url": f"/pictures/{picture.public_name}",
            "thumbnail": f"/pictures/{picture.thumb_name}"}


def checked_rects(rects: Any) -> list[list[float]]:
    """Black-out areas as ``[[x, y, w, h], …]``, each a fraction of the picture inside 0..1, or ValueError."""
    if not isinstance(rects, list):
        raise ValueError("black-out areas are a list of [x, y, width, height], fractions of the picture")
    clean = []
    for rect in rects:
        if (not isinstance(rect, list) or len(rect) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rect)):
            raise ValueError(f"{rect!r} is not [x, y, width, height]")
        x, y, w, h = (float(v) for v in rect)
        if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
            raise ValueError(f"{rect!r} must lie inside the picture: x, y from 0 to 1, width and height above 0")
        clean.append([x, y, w, h])
    return clean


def _jpeg(image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _write_file(path: Path, data: bytes) -> None:
    """All or nothing, and on the disk (not only in its cache) before the camera is answered."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)
