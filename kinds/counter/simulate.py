"""The resident counter's simulation: a day at the town hall, residents arriving and staff calling.

Named in kind.toml (``simulation = "simulate.py:TownHallDay"``); ``[simulate]`` in
device.toml says how the day goes. Three parts, so ``jisaku bench counter`` plays the very
same day without pins or waiting:

- :class:`OfficeDay`: the numbers of the world (when residents come, how long each takes);
- :class:`CounterDay`: one day played out. It decides who presses which button when, and
  presses through a function it is given; it looks at the queue as staff look at the hall
  display (who waits, who is at which window);
- :class:`TownHallDay`: the scenario for ``--simulate``: CounterDay on the app's mock pins,
  on a clock that runs ``time_scale`` times faster, day after day.

Example (no pins: what the benchmark does)::

    queue = TicketQueue(windows=2)
    day = CounterDay(OfficeDay(), 2, midnight, random.Random(1), press, queue)
    while (at := day.next_at()) is not None:
        day.advance(at)              # calls press("take" | "next" | "again", window, at)
"""

from __future__ import annotations

import datetime
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpiozero.pins.mock import MockFactory

from jisaku.device.config import DeviceConfig
from jisaku.device.simulate import Scenario, along

# Residents per hour through the day, [hour, rate], in a straight line between the points:
# a crowd at the door at 8:30, a busy morning, a dip before lunch, workers in their lunch
# hour, a quieter afternoon.
ARRIVALS_PER_HOUR = [(8.5, 30), (9.0, 18), (10.5, 15), (11.5, 10), (12.0, 15), (13.0, 12), (15.0, 10),
                     (16.5, 6), (17.25, 6)]


@dataclass
class OfficeDay:
    """How a day at the counter goes: ``[simulate]`` in device.toml, or these defaults."""

    opens_h: float = 8.5             # the doors open (the first ticket), hours after midnight
    last_ticket_h: float = 17.25     # the last ticket; the windows serve those waiting after
    arrivals_per_hour: list[tuple[float, float]] = field(default_factory=lambda: list(ARRIVALS_PER_HOUR))
    certificate_min: float = 4.0     # most visits: a certificate (住民票, 印鑑登録証明書), typical minutes
    procedure_min: float = 12.0      # moving in or out, family register: typical minutes
    procedure_share: float = 0.3     # the share of visits that are procedures
    spread: float = 0.4              # how much visits of one sort differ (lognormal sigma)
    window_speed: list[float] = field(default_factory=lambda: [1.0, 1.2])  # 1.2: 20 % slower (new staff)
    no_show_share: float = 0.03      # called, but gone: "call again" after a minute, then "next"
    lunch: list[tuple[int, float, float]] = field(default_factory=lambda: [(2, 12.0, 12.75)])  # window, from, until

    @classmethod
    def from_config(cls, simulate: dict[str, Any]) -> OfficeDay:
        """The day ``[simulate]`` describes; what it leaves out stays as above."""
        day = cls()
        for name in ("opens_h", "last_ticket_h", "certificate_min", "procedure_min", "procedure_share",
                     "spread", "no_show_share"):
            if name in simulate:
                setattr(day, name, float(simulate[name]))
        if "arrivals_per_hour" in simulate:
            day.arrivals_per_hour = [(float(h), float(r)) for h, r in simulate["arrivals_per_hour"]]
        if "window_speed" in simulate:
            day.window_speed = [float(s) for s in simulate["window_speed"]]
        if "lunch" in simulate:
            day.lunch = [(int(b["window"]), float(b["from_h"]), float(b["until_h"])) for b in simulate["lunch"]]
        return day

    def arrival_seconds(self, rng: random.Random) -> list[float]:
        """When residents take a ticket, seconds after midnight: a Poisson process at the day's rate."""
        highest = max(rate for _, rate in self.arrivals_per_hour)
        at, found = self.opens_h * 3600, []
        while True:
            at += rng.expovariate(highest / 3600)
            if at >= self.last_ticket_h * 3600:
                return found
            if rng.random() < along(self.arrivals_per_hour, at / 3600) / highest:  # thinning: fewer off-peak
                found.append(at)

    def service_s(self, rng: random.Random, window: int) -> float:
        """How long one resident takes at ``window`` (1, 2, ...), in seconds."""
        typical = self.procedure_min if rng.random() < self.procedure_share else self.certificate_min
        speed = self.window_speed[(window - 1) % len(self.window_speed)] if self.window_speed else 1.0
        return 60 * typical * speed * math.exp(rng.gauss(0, self.spread))


# What the staff and residents do with the buttons: press(what, window, at).
Press = Callable[[str, "int | None", float], None]


class CounterDay:
    """One day at the counter, played out: residents take tickets, staff press "next" and "again".

    ``midnight`` is the epoch second the local day starts. ``press(what, window, at)`` is
    how a button gets pressed ("take", "next" or "again"; ``window`` 1, 2, ... or None for the
    ticket button). ``queue`` is looked at, never changed: its ``waiting`` and ``serving``
    are what staff see on the hall display.
    """

    STAFF_LAG_S = (5.0, 30.0)   # from finishing with a resident (or seeing one wait) to pressing "next"
    NO_SHOW_WAIT_S = 60.0       # a called resident who does not come: "again" after this, "next" after twice
    PRESS_GAP_S = 2.5           # one hand at a time: a button is never pressed twice within this

    def __init__(self, office: OfficeDay, windows: int, midnight: float, rng: random.Random, press: Press,
                 queue: Any):
        self.office, self.windows, self.midnight, self.rng = office, windows, midnight, rng
        self.press, self.queue = press, queue
        self.arrivals = [midnight + s for s in office.arrival_seconds(rng)]  # soonest first
        self.next_at_window: list[float | None] = [None] * windows  # when each window presses "next"
        self.again_at_window: list[float | None] = [None] * windows
        self.lunch = {window: (midnight + start * 3600, midnight + end * 3600)
                      for window, start, end in office.lunch if 1 <= window <= windows}
        self.lunch_taken: set[int] = set()
        self.last_press: dict[tuple[str, int | None], float] = {}

    # ------------------------------------------------------------ the clock

    def next_at(self) -> float | None:
        """When the next button is pressed; None when the day is over (all served, no more tickets)."""
        due = [self._when("take", None, self.arrivals[0])] if self.arrivals else []
        for index in range(self.windows):
            if self.next_at_window[index] is not None:
                due.append(self._when("next", index + 1, self.next_at_window[index]))
            if self.again_at_window[index] is not None:
                due.append(self._when("again", index + 1, self.again_at_window[index]))
        return min(due) if due else None

    def advance(self, now: float, most: int | None = None) -> int:
        """Press every button due by ``now``, in order; at most ``most`` presses. Returns how many."""
        pressed = 0
        while most is None or pressed < most:
            action = self._first_due()
            if action is None or action[0] > now:
                return pressed
            at, what, window = action
            self._do(what, window, at)
            pressed += 1
        return pressed

    def _when(self, what: str, window: int | None, at: float) -> float:
        last = self.last_press.get((what, window))
        return at if last is None else max(at, last + self.PRESS_GAP_S)

    def _first_due(self) -> tuple[float, str, int | None] | None:
        due = []
        if self.arrivals:
            due.append((self._when("take", None, self.arrivals[0]), "take", None))
        for index in range(self.windows):
            if self.again_at_window[index] is not None:
                due.append((self._when("again", index + 1, self.again_at_window[index]), "again", index + 1))
            if self.next_at_window[index] is not None:
                due.append((self._when("next", index + 1, self.next_at_window[index]), "next", index + 1))
        return min(due, key=lambda d: d[0]) if due else None

    # ------------------------------------------------------------ what people do

    def _do(self, what: str, window: int | None, at: float) -> None:
        self.last_press[(what, window)] = at
        if what == "take":
            self.arrivals.pop(0)
            self.press("take", None, at)
        elif what == "again":
            self.again_at_window[window - 1] = None
            self.press("again", window, at)
        else:
            self.next_at_window[window - 1] = None
            self.press("next", window, at)
            if self.queue.serving[window - 1] is not None:
                self._serve(window, at)
        self._idle_windows_notice(at)

    def _serve(self, window: int, at: float) -> None:
        """The window called someone: when will it press "next" again?"""
        if self.rng.random() < self.office.no_show_share:
            self.again_at_window[window - 1] = at + self.NO_SHOW_WAIT_S
            done = at + 2 * self.NO_SHOW_WAIT_S
        else:
            done = at + self.office.service_s(self.rng, window) + self.rng.uniform(*self.STAFF_LAG_S)
        self.next_at_window[window - 1] = self._after_lunch(window, done)

    def _after_lunch(self, window: int, at: float) -> float:
        """A window whose lunch has begun presses "next" only when its staff are back."""
        if window in self.lunch and window not in self.lunch_taken and at >= self.lunch[window][0]:
            self.lunch_taken.add(window)
            return max(at, self.lunch[window][1])
        return at

    def _idle_windows_notice(self, at: float) -> None:
        """Free windows see residents waiting on the display: one window per resident presses "next"."""
        unclaimed = len(self.queue.waiting)
        for index in range(self.windows):
            if self.queue.serving[index] is None and self.next_at_window[index] is not None:
                unclaimed -= 1  # this free window is about to call one already
        for index in range(self.windows):
            if unclaimed <= 0:
                return
            if self.queue.serving[index] is None and self.next_at_window[index] is None:
                self.next_at_window[index] = self._after_lunch(index + 1, at + self.rng.uniform(*self.STAFF_LAG_S))
                unclaimed -= 1


def local_midnight(now: float) -> float:
    """The epoch second the local day of ``now`` began."""
    moment = datetime.datetime.fromtimestamp(now).astimezone()
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


class TownHallDay(Scenario):
    """Residents and staff on the counter's mock pins, on a clock ``time_scale`` times faster.

    The simulated day starts at today's opening time; after ``day_h`` simulated hours
    (opening to closing, with time to serve the last) the clock moves on to the next
    morning, so numbers restart at 1 and yesterday's service times carry on.
    """

    def __init__(self, config: DeviceConfig, factory: MockFactory):
        super().__init__()
        counter, simulate = config.section("counter"), config.section("simulate")
        self.office = OfficeDay.from_config(simulate)
        self.time_scale = float(simulate.get("time_scale", 30))
        self.day_h = float(simulate.get("day_h", 10))
        self.seed = int(simulate.get("seed", 1))
        self.pins = {"take": factory.pin(counter.get("ticket_pin", 17))}
        for number, window in enumerate(counter.get("window", []), start=1):
            self.pins[("next", number)] = factory.pin(window["next_pin"])
            self.pins[("again", number)] = factory.pin(window["again_pin"])
        self.windows = len(counter.get("window", []))
        self.first_morning = local_midnight(time.time()) + self.office.opens_h * 3600
        self.queue = None
        self.day: CounterDay | None = None
        self.day_number = -1

    def clock(self) -> float:
        """The simulated time, epoch seconds: the app reads this instead of time.time()."""
        elapsed = time.monotonic() - self._started if self._started else 0.0
        days, into = divmod(elapsed * self.time_scale, self.day_h * 3600)
        return self.first_morning + days * 86400 + into

    def attach(self, app) -> None:
        """Give the app the simulated clock and python-escpos's Dummy printer (nothing is printed)."""
        self.queue = app.queue
        app.clock = self.clock
        if app.printer is not None:
            app.printer.simulate()

    def press(self, what: str, window: int | None, at: float) -> None:
        pin = self.pins["take" if what == "take" else (what, window)]
        pin.drive_low()    # the buttons join their pin to ground when pressed
        pin.drive_high()

    def tick(self, elapsed_s: float) -> None:
        if self.queue is None:
            return
        now = self.clock()
        number = math.floor((now - self.first_morning) / 86400)
        if number != self.day_number:
            self.day_number = number
            midnight = local_midnight(self.first_morning + number * 86400)
            self.day = CounterDay(self.office, self.windows, midnight, random.Random(self.seed * 1000 + number),
                                  self.press, self.queue)
        # One press a tick: each reaches the app at its own moment of the simulated clock.
        self.day.advance(now, most=1)
