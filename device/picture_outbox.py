"""The device's picture outbox: every picture waits here, on disk, until the server has stored it.

Pictures are too big for the readings' SQLite outbox (device/outbox.py), so each one
is a plain file in a folder of its own, beside a small JSON note saying when it was
taken::

    data/devices/cam-1/pictures/
        seq.json          {"seq": 42, "dropped": 3, "refused": 1}: counters that outlive reboots
        41.jpg  41.json   the oldest picture still waiting, and its note
        42.jpg  42.json

Every file is written atomically (to a ``.tmp`` file, fsync'd, then renamed), so a
power cut leaves either the whole picture or nothing: a half-written ``.tmp`` is
ignored and cleared at the next start. The folder is bounded by bytes: when it is
over, the oldest pictures go first and are counted as ``dropped`` (reported in the
device's status, like the readings' outbox's loss).

Example::

    outbox = PictureOutbox(Path("data/devices/cam-1/pictures"), max_bytes=50_000_000)
    seq = outbox.put(jpeg_bytes, "image/jpeg", ts=time.time())
    picture = outbox.oldest()          # a Picture, or None when nothing waits
    data = picture.read()              # ...upload it, then:
    outbox.remove(picture.seq)
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# The file ending for each picture type the server takes (docs/protocol.md, "## Pictures").
SUFFIXES = {"image/jpeg": ".jpg", "image/png": ".png"}
COUNTERS = "seq.json"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # changes at every boot (Linux)


def boot_id() -> str:
    """This boot's id: a monotonic time means something only within the boot it was read in."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Picture:
    """One picture waiting to be sent."""

    seq: int
    path: Path                 # the picture's file
    content_type: str          # image/jpeg or image/png
    ts: float | None           # UTC epoch seconds when it was taken; None if the device had no clock
    taken_monotonic: float | None   # time.monotonic() when taken, for age= when ts is None
    size: int

    def read(self) -> bytes:
        return self.path.read_bytes()

    def age_s(self) -> float | None:
        """Seconds since it was taken, from the monotonic clock (valid until the device reboots)."""
        if self.taken_monotonic is None:
            return None
        return max(0.0, time.monotonic() - self.taken_monotonic)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a power cut leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def _sync_folder(folder: Path) -> None:
    # The rename itself must reach the SD card too, or a power cut could undo it.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PictureOutbox:
    """Pictures on disk, oldest first, bounded by ``max_bytes`` in all."""

    def __init__(self, folder: Path, max_bytes: int = 50_000_000):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        for leftover in self.folder.glob("*.tmp"):
            leftover.unlink(missing_ok=True)  # half-written when the power went: never a whole picture
        self._counters = {"seq": 0, "dropped": 0, "refused": 0}
        counters = self.folder / COUNTERS
        if counters.exists():
            try:
                self._counters.update(json.loads(counters.read_text()))
            except ValueError:
                pass  # cannot happen with atomic writes; if it does, the files still tell seq below
        waiting = self._seqs()
        if waiting:  # never hand out a seq that is still on disk, whatever the counter says
            self._counters["seq"] = max(self._counters["seq"], waiting[-1])
        self._pictures = {seq: self._load(seq) for seq in waiting}
        self._pictures = {seq: p for seq, p in self._pictures.items() if p is not None}
        for path in self.folder.iterdir():  # a picture whose note was never written: the power went
            if path.suffix in SUFFIXES.values() and path.stem.isdigit() and int(path.stem) not in self._pictures:
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------ counters

    @property
    def dropped(self) -> int:
        """Pictures thrown away because the outbox was full, ever."""
        return self._counters["dropped"]

    @property
    def refused(self) -> int:
        """Pictures the server would not take (not a picture, too large...), ever."""
        return self._counters["refused"]

    def count_refused(self) -> None:
        with self._lock:
            self._counters["refused"] += 1
            self._save_counters()

    def _save_counters(self) -> None:
        write_atomically(self.folder / COUNTERS, json.dumps(self._counters).encode())

    # ------------------------------------------------------------ what waits

    def _seqs(self) -> list[int]:
        """The seq of every complete picture on disk: its note is written last, so a note means a whole picture."""
        return sorted(int(note.stem) for note in self.folder.glob("*.json") if note.stem.isdigit())

    def _load(self, seq: int) -> Picture | None:
        try:
            note = json.loads((self.folder / f"{seq}.json").read_text())
            path = self.folder / f"{seq}{SUFFIXES[note['content_type']]}"
            # The monotonic clock restarts with the device: an age is known only within the same boot.
            taken = note.get("taken_monotonic") if note.get("boot") == boot_id() else None
            return Picture(seq, path, note["content_type"], note.get("ts"), taken, path.stat().st_size)
        except (OSError, ValueError, KeyError):
            return None  # a picture without its file: nothing to send

    def __len__(self) -> int:
        with self._lock:
            return len(self._pictures)

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(p.size for p in self._pictures.values())

    def __iter__(self) -> Iterator[Picture]:
        """The waiting pictures, oldest first."""
        with self._lock:
            pictures = sorted(self._pictures.values(), key=lambda p: p.seq)
        return iter(pictures)

    def oldest(self) -> Picture | None:
        with self._lock:
            return self._pictures[min(self._pictures)] if self._pictures else None

    # ------------------------------------------------------------ put and remove

    def put(self, data: bytes, content_type: str, ts: float | None = None) -> int:
        """Keep a picture for sending; returns its ``seq``. ``ts`` None: the device has no clock."""
        if content_type not in SUFFIXES:
            raise ValueError(f"a picture is {' or '.join(SUFFIXES)}, not {content_type!r}")
        with self._lock:
            self._counters["seq"] += 1
            seq = self._counters["seq"]
            # The counter first: if the power goes now, this seq is skipped, never used twice.
            self._save_counters()
            path = self.folder / f"{seq}{SUFFIXES[content_type]}"
            write_atomically(path, data)
            taken = time.monotonic()
            note = {"ts": ts, "content_type": content_type}
            if ts is None:
                note.update(taken_monotonic=taken, boot=boot_id())
            write_atomically(self.folder / f"{seq}.json", json.dumps(note).encode())
            _sync_folder(self.folder)
            self._pictures[seq] = Picture(seq, path, content_type, ts, taken, len(data))
            self._drop_oldest_if_full(keep=seq)
            return seq

    def _drop_oldest_if_full(self, keep: int) -> None:
        total = sum(p.size for p in self._pictures.values())
        dropped = 0
        for seq in sorted(self._pictures):
            if total <= self.max_bytes or seq == keep:
                break  # the newest stays even if it alone is over: it is the one people want to see
            total -= self._pictures[seq].size
            self._delete(seq)
            dropped += 1
        if dropped:
            self._counters["dropped"] += dropped
            self._save_counters()

    def remove(self, seq: int) -> None:
        """The server has it (or refused it for good): forget it."""
        with self._lock:
            self._delete(seq)

    def _delete(self, seq: int) -> None:
        picture = self._pictures.pop(seq, None)
        # The note first: a picture file without a note is no longer a picture to send.
        (self.folder / f"{seq}.json").unlink(missing_ok=True)
        if picture is not None:
            picture.path.unlink(missing_ok=True)
