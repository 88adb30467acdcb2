"""``jisaku bench counter``: the waiting estimate against the real wait, on simulated days.

The issue asks that the estimate be within 25 % of the real wait "for most tickets". Most
is more than half; the bench's "right" is within 25 % or 1 minute, whichever is wider
(jisaku/bench/counter.py says why). Simulated days are random: one seed's days are
checked as the command prints them, and ten seeds together, so the claim does not rest
on a lucky seed.
"""

from __future__ import annotations

import argparse
import statistics

from jisaku import bench
from jisaku.bench import counter


def test_most_tickets_are_right_and_the_estimate_beats_the_fixed_guess(capsys):
    figures = counter.counter(days=5, seed=1)
    out = capsys.readouterr().out
    assert figures["tickets"] > 400 and figures["not_called"] == 0, "about 100 residents a day, all served"
    assert figures["median_wait_min"] > 5, "a day busy enough for the estimate to matter"
    assert figures["mean"]["right"] > 0.5, "within 25 % (or 1 min) for most tickets"
    assert figures["mean"]["right"] > figures["baseline"]["right"] + 0.1
    assert figures["mean"]["median_error_min"] < figures["baseline"]["median_error_min"]
    for line in ("(a) the counter's", "(b) the same with the rolling median", "(c) baseline", "a/c", "PASS"):
        assert line in out


def test_over_ten_seeds_most_are_right_and_the_mean_beats_the_median():
    runs = [counter.counter(days=5, seed=seed, quiet=True) for seed in range(1, 11)]
    assert statistics.mean(r["mean"]["right"] for r in runs) > 0.5
    assert all(r["mean"]["right"] > r["baseline"]["right"] for r in runs), "never worse than the fixed guess"
    # Why queue.py averages with the mean: a wait is a sum of service times (see its notes).
    assert statistics.mean(r["mean"]["right"] for r in runs) > statistics.mean(r["median"]["right"] for r in runs)
    long_waits = {name: statistics.mean(r[name]["right_long"] for r in runs) for name in ("mean", "median")}
    assert long_waits["mean"] > long_waits["median"]


def test_the_same_seed_plays_the_same_days():
    assert counter.counter(days=2, seed=7, quiet=True) == counter.counter(days=2, seed=7, quiet=True)


def test_bench_counter_command_line():
    top = argparse.ArgumentParser(prog="jisaku")
    bench.add_parser(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(["bench", "counter", "--days", "3", "--seed", "4"])
    assert (args.days, args.seed, args.minutes_per_person) == (3, 4, 5.0) and args.run is counter.cmd_counter
