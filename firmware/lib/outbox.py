"""The board's outbox: readings and events wait here until the broker has them.

While the broker is reachable, messages go straight from memory to the broker
and the flash is not touched. While it is not, they are written to flash in
small files ("segments") under ``/outbox``, several messages per write, so a
reset or a power cut loses at most the few still in memory, and the flash is
written seldom (flash wears out after some 100,000 writes of a block).

When the outbox is full, the oldest segment is deleted and its messages are
counted in ``dropped`` (shown in the device's status). ``seq`` is handed out
here and carries on across resets: a block of numbers is reserved in flash at
a time, so one write covers the next 100 messages.

Example::

    box = Outbox("/outbox")
    box.put("data", {"v": {"depth_cm": 12.5}}, taken=clock.board_time())
    batch = box.next_batch()          # (channel, [lines]) oldest first, or None
    ...publish it; once the broker acknowledged: box.remove(batch)
"""

import json
import os

import clock

SEGMENT_LINES = 50      # messages per flash file
MAX_SEGMENTS = 20       # so at most 1,000 messages wait in flash
STAGE_LINES = 10        # messages kept in memory before one write to flash
STAGE_MS = 60000        # ...or this long, whichever comes first
BATCH = 10              # readings in one MQTT message
SEQ_BLOCK = 100


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Outbox:
    def __init__(self, folder="/outbox"):
        self.folder = folder
        if not _exists(folder):
            os.mkdir(folder)
        self.staged = []        # lines in memory, newer than anything in flash
        self.staged_since = None
        self.loaded = None      # [segment number, lines, how many of them were sent]
        numbers = [int(n[1:]) for n in os.listdir(folder) if n[0] == "q" and n[1:].isdigit()]
        numbers.sort()
        self.segments = numbers
        # Segments written before this boot: their board-time stamps mean nothing now.
        self.first_of_boot = (numbers[-1] + 1) if numbers else 0
        self.in_flash = 0
        for number in numbers:
            self.in_flash += self._count(number)
        self.last_lines = self._count(numbers[-1]) if numbers else SEGMENT_LINES
        self.dropped = self._read_int("dropped", 0)
        self.seq = self._read_int("seq", 1)
        self.reserved = self.seq

    # ---------------------------------------------------------------- small files

    def _path(self, name):
        return self.folder + "/" + name

    def _read_int(self, name, default):
        try:
            with open(self._path(name)) as f:
                return int(f.read())
        except (OSError, ValueError):
            return default

    def _write_int(self, name, value):
        with open(self._path(name + ".tmp"), "w") as f:
            f.write(str(value))
        os.rename(self._path(name + ".tmp"), self._path(name))

    def _count(self, number):
        count = 0
        with open(self._path("q%d" % number)) as f:
            for _ in f:
                count += 1
        return count

    # ---------------------------------------------------------------- putting in

    def next_seq(self):
        if self.seq >= self.reserved:
            self.reserved = self.seq + SEQ_BLOCK
            self._write_int("seq", self.reserved)
        self.seq += 1
        return self.seq - 1

    def put(self, channel, message, taken=None):
        """Keep a message (a dict, without seq) for sending; returns its seq.

        ``taken`` is the board time of a message without ``ts``: it becomes
        ``age`` (or ``ts``, if the clock is set meanwhile) when the message is sent.
        """
        seq = self.next_seq()
        message["seq"] = seq
        line = "%s %s %s" % (channel, "-" if taken is None else taken, json.dumps(message, separators=(",", ":")))
        if not self.staged:
            self.staged_since = clock.ticks_ms()
        self.staged.append(line)
        if len(self.staged) > SEGMENT_LINES:  # flash full or failing: memory is bounded too
            self.staged.pop(0)
            self._dropped(1)
        return seq

    def __len__(self):
        return len(self.staged) + self.in_flash

    def _dropped(self, count):
        self.dropped += count
        self._write_int("dropped", self.dropped)

    def save(self, force=False):
        """Write the staged messages to flash when enough have gathered (or ``force``)."""
        if not self.staged:
            return
        if not force and len(self.staged) < STAGE_LINES and clock.elapsed_ms(self.staged_since) < STAGE_MS:
            return
        while self.staged:
            if self.last_lines >= SEGMENT_LINES:
                self._new_segment()
            room = SEGMENT_LINES - self.last_lines
            lines, self.staged = self.staged[:room], self.staged[room:]
            with open(self._path("q%d" % self.segments[-1]), "a") as f:
                f.write("\n".join(lines) + "\n")
            self.last_lines += len(lines)
            self.in_flash += len(lines)

    def _new_segment(self):
        number = self.segments[-1] + 1 if self.segments else self.first_of_boot
        if len(self.segments) >= MAX_SEGMENTS:
            oldest = self.segments.pop(0)
            lost = self._count(oldest)
            if self.loaded and self.loaded[0] == oldest:
                lost -= self.loaded[2]
                self.loaded = None
            os.remove(self._path("q%d" % oldest))
            self.in_flash -= lost
            self._dropped(lost)
        self.segments.append(number)
        self.last_lines = 0

    # ---------------------------------------------------------------- taking out

    def next_batch(self):
        """``(channel, lines)``: the oldest messages that go in one MQTT message, or None."""
        if self.segments:
            if self.loaded is None or self.loaded[0] != self.segments[0]:
                with open(self._path("q%d" % self.segments[0])) as f:
                    self.loaded = [self.segments[0], f.read().split("\n")[:-1], 0]
            lines = self.loaded[1][self.loaded[2]:]
            if not lines:  # an empty segment (power cut while it was made)
                self._forget_segment()
                return self.next_batch()
        elif self.staged:
            lines = self.staged
        else:
            return None
        channel = lines[0].split(" ", 1)[0]
        if channel != "data":
            return channel, lines[:1]
        batch = []
        for line in lines[:BATCH]:
            if not line.startswith("data "):
                break  # keep the order: a later event waits for the readings before it
            batch.append(line)
        return channel, batch

    def remove(self, batch):
        """The broker acknowledged ``batch``: forget it."""
        count = len(batch[1])
        if self.segments and self.loaded:
            self.loaded[2] += count
            self.in_flash -= count
            if self.loaded[2] >= len(self.loaded[1]):
                self._forget_segment()
        else:
            self.staged = self.staged[count:]

    def _forget_segment(self):
        number = self.segments.pop(0)
        os.remove(self._path("q%d" % number))
        self.loaded = None
        if not self.segments:
            self.last_lines = SEGMENT_LINES

    def from_this_boot(self):
        """False while the batch comes from a segment written before this boot."""
        return not self.segments or self.segments[0] >= self.first_of_boot
