"""``jisaku bench counter``: how close the resident counter's waiting estimate comes to the real wait.

Simulated days at a town hall counter (kinds/counter/simulate.py: 08:30 to the last ticket
at 17:15, a crowd at the door, a busy morning, a lunch-hour bump, two windows, window 2
20 % slower and closed for lunch 12:00-12:45, a few residents who have gone when called)
go through TicketQueue on a simulated clock: a day takes milliseconds. For every ticket,
the estimate printed on it is compared with the wait it really had (taken to called).

An estimate is **right** when it is within 25 % of the real wait, or within 1 minute of it,
whichever is wider: for a wait of 2 minutes, "within 25 %" would mean 30 seconds, closer
than anyone can say or needs. Because that floor makes short waits easy, the share is also
printed for waits of 5 minutes and more, with the 25 % alone.

Three estimators see the same day in the same process:

- the counter's own (TicketQueue: the mean of each window's recent service times);
- the same with the rolling median (the first idea; see queue.py for why it lost);
- a baseline: ``minutes_per_person`` × people ahead ÷ windows, fixed.

Example::

    jisaku bench counter                      # 5 days, seed 1
    python -c "from jisaku.bench import counter; counter.counter(days=1)"
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when it runs: `jisaku --help` on a Pi loads no simulation
    from jisaku.kinds.counter.simulate import OfficeDay

JAPAN_S = 9 * 3600
FIRST_DAY = datetime.datetime(2025, 4, 7, tzinfo=datetime.timezone(datetime.timedelta(seconds=JAPAN_S)))
RIGHT_WITHIN = 0.25      # of the real wait
RIGHT_FLOOR_MIN = 1.0    # ... or this many minutes, whichever is wider
LONG_WAIT_MIN = 5.0


@dataclass
class Estimator:
    """One way of estimating, with the estimate each ticket got from it."""

    name: str
    estimates: dict[tuple[int, int], float] = field(default_factory=dict)  # (day, number) -> minutes

    def scores(self, waits: dict[tuple[int, int], float]) -> dict[str, float]:
        pairs = [(self.estimates[key], wait) for key, wait in waits.items()]
        right = [abs(e - w) <= max(RIGHT_WITHIN * w, RIGHT_FLOOR_MIN) for e, w in pairs]
        long = [abs(e - w) <= RIGHT_WITHIN * w for e, w in pairs if w >= LONG_WAIT_MIN]
        return {"right": sum(right) / len(right),
                "right_long": sum(long) / len(long) if long else float("nan"),
                "median_error_min": statistics.median(abs(e - w) for e, w in pairs)}


def counter(days: int = 5, seed: int = 1, windows: int = 2, minutes_per_person: float = 5.0,
            office: OfficeDay | None = None, quiet: bool = False) -> dict[str, Any]:
    """Play ``days`` simulated days, print the figures (unless ``quiet``) and return them."""
    from jisaku.kinds.counter.queue import TicketQueue
    from jisaku.kinds.counter.simulate import CounterDay, OfficeDay

    office = office or OfficeDay()
    queue = TicketQueue(windows, minutes_per_person, utc_offset_s=JAPAN_S)
    median = TicketQueue(windows, minutes_per_person, utc_offset_s=JAPAN_S, average="median")
    own, by_median, baseline = Estimator("mean"), Estimator("median"), Estimator("baseline")
    taken: dict[tuple[int, int], float] = {}
    waits: dict[tuple[int, int], float] = {}   # (day, number) -> minutes from taking to being called
    longest = 0.0
    for day in range(days):
        midnight = (FIRST_DAY + datetime.timedelta(days=day)).timestamp()

        def press(what: str, window: int | None, at: float, day: int = day) -> None:
            if what == "take":
                ticket = queue.take(at)
                key = (day, ticket.number)
                taken[key] = at
                own.estimates[key] = ticket.estimate_min
                by_median.estimates[key] = median.take(at).estimate_min
                baseline.estimates[key] = minutes_per_person * ticket.waiting_before / windows
            elif what == "next":
                number = queue.call_next(window, at)
                median.call_next(window, at)
                if number is not None:
                    waits[(day, number)] = (at - taken[(day, number)]) / 60
            else:
                queue.call_again(window, at)

        played = CounterDay(office, windows, midnight, random.Random(seed * 1000 + day), press, queue)
        while (at := played.next_at()) is not None:
            played.advance(at)
            longest = max(longest, len(queue.waiting))
    figures = {"days": days, "seed": seed, "windows": windows, "tickets": len(waits),
               "not_called": len(taken) - len(waits),
               "median_wait_min": statistics.median(waits.values()),
               "p90_wait_min": statistics.quantiles(waits.values(), n=10)[-1],
               "longest_queue": longest,
               "mean": own.scores(waits), "median": by_median.scores(waits), "baseline": baseline.scores(waits)}
    figures["ratio"] = figures["mean"]["right"] / figures["baseline"]["right"]
    if not quiet:
        _print(figures, minutes_per_person)
    return figures


def _print(f: dict[str, Any], minutes_per_person: float) -> None:
    print(f"\n  {f['days']} simulated days (seed {f['seed']}), {f['windows']} windows, {f['tickets']} tickets called;"
          f" real wait: median {f['median_wait_min']:.1f} min, 90 % under {f['p90_wait_min']:.1f} min,"
          f" longest queue {f['longest_queue']}")
    print(f"  right = the estimate printed on the ticket is within {RIGHT_WITHIN:.0%} of the real wait"
          f" or within {RIGHT_FLOOR_MIN:g} min, whichever is wider")
    print(f"  {'estimator':46} {'right':>7} {'right, waits ≥ 5 min':>22} {'median error':>13}")
    rows = [("(a) the counter's: mean of recent service times", "mean"),
            ("(b) the same with the rolling median", "median"),
            (f"(c) baseline: {minutes_per_person:g} min × ahead ÷ windows", "baseline")]
    for label, key in rows:
        s = f[key]
        print(f"  {label:46} {s['right']:>7.1%} {s['right_long']:>22.1%} {s['median_error_min']:>9.1f} min")
    print(f"  {'a/c (share right)':46} {f['ratio']:>7.2f}")
    verdict = "PASS" if f["mean"]["right"] > 0.5 else "FAIL"
    print(f"  {'(a) right for most tickets (> 50 %)':46} {verdict:>7}")


def cmd_counter(args: argparse.Namespace) -> None:
    counter(days=args.days, seed=args.seed, minutes_per_person=args.minutes_per_person)


def add_parser(bench) -> None:
    """Add ``counter`` to the ``jisaku bench`` subcommands (``bench`` is their subparsers object)."""
    parser = bench.add_parser("counter",
                              help="how close the resident counter's waiting estimate comes to the real wait")
    parser.add_argument("--days", type=int, default=5, help="simulated days, one after another")
    parser.add_argument("--seed", type=int, default=1, help="the same seed plays the same days")
    parser.add_argument("--minutes-per-person", type=float, default=5.0,
                        help="the setting: the estimate before any service is seen, and the baseline's")
    parser.set_defaults(run=cmd_counter)
