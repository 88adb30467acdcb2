"""The resident counter's queue: ticket numbers, calls at the windows, and the waiting estimate.

Pure logic: no pins, no printer, no network, and no clock of its own. Every method
takes ``now`` (epoch seconds, a float), so a whole simulated day runs in milliseconds
and a test can say exactly what time it is. The only I/O is the optional state file
(:meth:`TicketQueue.save` / :meth:`TicketQueue.load`), so a Pi that reboots loses no ticket.

``dashboard/static/ticket_queue.js`` is the same class in JavaScript, for the staff web
page of a town without buttons. Both are held to ``tests/vectors/ticket_queue.json``:
change one, change the other, and the test tells you if they disagree.

How the estimate works (for a ticket taken now):

1. Each window's *service time* is the time between two calls at that window: from
   calling a resident to pressing "next" for the one after.
2. Each window's typical service time is the average of its last 20 service times. A
   window with fewer than 3 of its own uses the average of all windows' recent ones; with
   none at all, ``minutes_per_person`` (a setting: the staff's own guess).
3. The queue is played forward: each window is free now (idle) or when its resident is
   expected to be done (its typical time minus the time already spent, but at least half
   its typical time: a long case is not over just because it is long). The people ahead
   go, one by one, to the window that is free first; the new ticket is called when the
   next window is free after them.

Why the mean, not the median (the first idea): a wait is the *sum* of the service times
ahead, and a sum grows with the mean. At a town hall most visits are quick (a
certificate, about 4 min) and some are long (moving in, 12 min and more); the median
sits near the quick ones, so long waits come out short. On the simulated days of
``jisaku bench counter`` (seeds 1-10, 5 days each, 5,386 tickets) the mean put 57 % of
tickets within 25 % (or 1 min) of their real wait and the median 52 %; for waits of
5 min and more, 49 % against 38 %. Their median errors are the same (3.1 min). The
benchmark prints both. Why play the queue forward rather than divide by a rate: with one
window free and one busy, the next resident is called at once, which a rate cannot say.

Example::

    queue = TicketQueue(windows=2, minutes_per_person=5)
    ticket = queue.take(now)             # Ticket(number=1, estimate_min=0.0, waiting_before=0, taken=now)
    queue.call_next(1, now + 60)         # 1: window 1 calls number 1
    queue.call_again(1, now + 90)        # 1 again (the resident did not come)
    queue.state(now + 90)                # {"waiting": 0, "estimate_min": 0.0, "issued": 1, "windows": 2,
                                         #  "window_1": 1, "window_2": 0, "last_wait_min": 1.0}
    queue.save(Path("data/devices/counter-1/counter.json"))
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAMPLES_KEPT = 20        # service times remembered per window ("recent")
OWN_SAMPLES_NEEDED = 3   # fewer than this at a window: use all windows' together
STATE_FORMAT = 1         # written into the state file; raise it when the layout changes
AVERAGES = ("mean", "median")


@dataclass(frozen=True)
class Ticket:
    """What a resident gets: the number and what the ticket says about the wait."""

    number: int
    estimate_min: float      # the wait estimated when it was taken, minutes, one decimal
    waiting_before: int      # people waiting ahead of it
    taken: float             # epoch seconds


def round1(value: float) -> float:
    """Round to one decimal, halves up: the same in Python and JavaScript (Python's round() is not)."""
    return math.floor(value * 10 + 0.5) / 10


class TicketQueue:
    """Numbered tickets, the windows that call them, and how long a new ticket will wait.

    ``windows``: how many windows call from this queue (numbered 1, 2, ...).
    ``minutes_per_person``: the estimate's service time before any service is seen.
    ``utc_offset_s``: where "a day" starts (numbers restart at 1 each local day);
    None: the machine's own time zone (Japan: 32400).
    ``average``: "mean" (measured better, see the module's notes) or "median".
    """

    def __init__(self, windows: int = 2, minutes_per_person: float = 5.0,
                 utc_offset_s: int | None = None, average: str = "mean"):
        if int(windows) < 1:
            raise ValueError(f"a queue needs at least one window, not {windows!r}")
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {', '.join(AVERAGES)}, not {average!r}")
        self.windows = int(windows)
        self.minutes_per_person = float(minutes_per_person)
        self.utc_offset_s = utc_offset_s
        self.average = average
        self.day: int | None = None   # the local day the numbers belong to (days since 1970)
        self.issued = 0               # the last number handed out today
        # Plain dicts, so the state file (and JavaScript's copy) is these very records.
        self.waiting: list[dict[str, Any]] = []   # {number, taken, estimate_min}, lowest number first
        self.serving: list[dict[str, Any] | None] = [None] * self.windows  # {number, since, taken, estimate_min}
        self.service_s: list[list[float]] = [[] for _ in range(self.windows)]  # recent, oldest first
        self.last_call: dict[str, Any] | None = None  # {number, window, waited_min, estimate_min}

    # ------------------------------------------------------------ what the buttons do

    def take(self, now: float) -> Ticket:
        """A resident presses "take a ticket": the next number, and the wait it can expect."""
        self._start_day_if_new(now)
        estimate = self.estimate_min(now)
        waiting_before = len(self.waiting)
        self.issued += 1
        self.waiting.append({"number": self.issued, "taken": now, "estimate_min": estimate})
        return Ticket(self.issued, estimate, waiting_before, now)

    def call_next(self, window: int, now: float) -> int | None:
        """A window presses "next": its resident (if any) is done; the lowest waiting number is called.

        Returns the number called, or None when nobody waits (the window is then free).
        """
        index = self._index(window)
        self._start_day_if_new(now)
        current = self.serving[index]
        if current is not None:
            self._remember_service(index, now - current["since"])
            self.serving[index] = None
        if not self.waiting:
            return None
        ticket = self.waiting.pop(0)
        self.serving[index] = {"number": ticket["number"], "since": now, "taken": ticket["taken"],
                               "estimate_min": ticket["estimate_min"]}
        self.last_call = {"number": ticket["number"], "window": window,
                          "waited_min": round1((now - ticket["taken"]) / 60),
                          "estimate_min": ticket["estimate_min"]}
        return ticket["number"]

    def call_again(self, window: int, now: float) -> int | None:
        """A window presses "call again": the number it is serving, or None if it serves nobody."""
        index = self._index(window)
        self._start_day_if_new(now)
        current = self.serving[index]
        return None if current is None else current["number"]

    # ------------------------------------------------------------ what it tells

    def estimate_min(self, now: float) -> float:
        """How long a ticket taken now will wait, in minutes (one decimal)."""
        self._start_day_if_new(now)
        typical = self.typical_service_s()
        free_in = []  # seconds from now until each window is free
        for index, current in enumerate(self.serving):
            if current is None:
                free_in.append(0.0)
            else:
                spent = now - current["since"]
                free_in.append(max(typical[index] - spent, typical[index] / 2))
        for _ in self.waiting:  # each person ahead goes to the window free first (the lower number on a tie)
            first = free_in.index(min(free_in))
            free_in[first] += typical[first]
        return round1(min(free_in) / 60)

    def typical_service_s(self) -> list[float]:
        """Each window's typical service time, in seconds (see the module's notes)."""
        everyone = [seconds for samples in self.service_s for seconds in samples]
        typical = []
        for samples in self.service_s:
            if len(samples) >= OWN_SAMPLES_NEEDED:
                typical.append(self._average(samples))
            elif everyone:
                typical.append(self._average(everyone))
            else:
                typical.append(self.minutes_per_person * 60)
        return typical

    def state(self, now: float) -> dict[str, Any]:
        """The reading the counter publishes: the names other code relies on (README.md)."""
        self._start_day_if_new(now)
        values: dict[str, Any] = {"waiting": len(self.waiting), "estimate_min": self.estimate_min(now),
                                  "issued": self.issued, "windows": self.windows}
        for window, current in enumerate(self.serving, start=1):
            values[f"window_{window}"] = 0 if current is None else current["number"]
        if self.last_call is not None:
            values["last_wait_min"] = self.last_call["waited_min"]
        return values

    # ------------------------------------------------------------ keeping it across a reboot

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to carry on: JSON-ready, the same layout as the JavaScript's toJSON()."""
        return {"format": STATE_FORMAT, "windows": self.windows, "minutes_per_person": self.minutes_per_person,
                "average": self.average, "day": self.day, "issued": self.issued,
                "waiting": [dict(t) for t in self.waiting],
                "serving": [None if s is None else dict(s) for s in self.serving],
                "service_s": [list(samples) for samples in self.service_s],
                "last_call": None if self.last_call is None else dict(self.last_call)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], windows: int | None = None,
                  utc_offset_s: int | None = None) -> TicketQueue:
        """A queue carrying on from :meth:`to_dict`; ``windows`` overrides the saved count.

        Fewer windows than saved: the residents at the windows that went away are dropped;
        more: the new windows start free.
        """
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"a saved queue of format {data.get('format')!r}; this code reads {STATE_FORMAT}")
        count = int(windows if windows is not None else data["windows"])
        queue = cls(count, data["minutes_per_person"], utc_offset_s, data.get("average", "mean"))
        queue.day, queue.issued = data["day"], int(data["issued"])
        queue.waiting = [dict(t) for t in data["waiting"]]
        saved_serving, saved_samples = list(data["serving"]), list(data["service_s"])
        queue.serving = [None if s is None else dict(s) for s in (saved_serving + [None] * count)[:count]]
        queue.service_s = [[float(x) for x in samples] for samples in (saved_samples + [[]] * count)[:count]]
        queue.last_call = None if data["last_call"] is None else dict(data["last_call"])
        return queue

    def save(self, path: Path) -> None:
        """Write the state to ``path`` all or nothing: a power cut mid-write leaves the previous file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump(self.to_dict(), out, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())  # on the SD card before the rename, not only in the page cache
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path, windows: int = 2, minutes_per_person: float = 5.0,
             utc_offset_s: int | None = None) -> TicketQueue:
        """The queue saved at ``path``, or a new one if there is none (or it cannot be read).

        ``minutes_per_person`` is the current setting and wins over the saved one.
        A file that cannot be read is kept beside as ``<name>.bad`` for a person to look at.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            queue = cls.from_dict(data, windows=windows, utc_offset_s=utc_offset_s)
        except FileNotFoundError:
            return cls(windows, minutes_per_person, utc_offset_s)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            log.error("%s cannot be read (%s): starting from number 1; the file is kept as %s.bad",
                      path, err, path.name)
            os.replace(path, path.with_name(path.name + ".bad"))
            return cls(windows, minutes_per_person, utc_offset_s)
        queue.minutes_per_person = float(minutes_per_person)
        return queue

    # ------------------------------------------------------------ inside

    def local_day(self, now: float) -> int:
        """Days since 1970-01-01 in local time: numbers restart when this changes."""
        offset = self.utc_offset_s if self.utc_offset_s is not None else time.localtime(now).tm_gmtoff
        return math.floor((now + offset) / 86400)

    def _start_day_if_new(self, now: float) -> None:
        day = self.local_day(now)
        if day == self.day:
            return
        # A new day: number 1 again, nobody waiting or being served. The service times
        # stay: yesterday's are a better first guess than minutes_per_person.
        self.day, self.issued, self.waiting, self.last_call = day, 0, [], None
        self.serving = [None] * self.windows

    def _remember_service(self, index: int, seconds: float) -> None:
        if seconds <= 0:
            return  # the clock was set back (NTP after a reboot): no real service time
        samples = self.service_s[index]
        samples.append(seconds)
        del samples[:-SAMPLES_KEPT]

    def _average(self, samples: list[float]) -> float:
        if self.average == "median":
            ordered = sorted(samples)
            middle = len(ordered) // 2
            return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        total = 0.0
        for seconds in samples:  # in order, one by one: Python 3.12's sum() rounds differently from JavaScript
            total += seconds
        return total / len(samples)

    def _index(self, window: int) -> int:
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= self.windows:
            raise ValueError(f"window must be 1 to {self.windows}, not {window!r}")
        return window - 1
