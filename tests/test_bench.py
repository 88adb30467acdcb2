"""`jisaku bench ingest` runs end to end on a small load: figures present, every reading stored once.

No assertion on speed: timed assertions are flaky on shared CI machines; the benchmark
prints its figures against the targets for people to read.
"""

from __future__ import annotations

import math

from jisaku import bench
from jisaku.bench import ingest

from .brokers import mosquitto_available
from .conftest import require


def test_ingest_smoke():
    require(mosquitto_available(), "Mosquitto", "sudo apt-get install mosquitto")

    figures = ingest.ingest(readings=3000, devices=10, publishers=1, latency_seconds=2)

    assert figures["exactly_once"], figures
    assert figures["stored"] == 3000
    assert figures["missing"] == 0 and figures["duplicates"] == 0 and figures["unexpected"] == 0
    assert figures["publisher_errors"] == []
    assert figures["sub_received"] == 3000
    assert figures["latency_stored"] == figures["latency_readings"] == 2000
    for key in ("stored_per_s", "sub_per_s", "ratio", "peak_rss_mb"):
        value = figures[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    # ts is sent rounded to the millisecond, so a fast store can even look a little early.
    for key in ("p50_ms", "p99_ms", "seen_p50_ms", "seen_p99_ms"):
        assert isinstance(figures[key], float) and math.isfinite(figures[key]), (key, figures[key])


def test_bench_ingest_command_line():
    import argparse

    top = argparse.ArgumentParser(prog="jisaku")
    bench.add_parser(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(["bench", "ingest", "--readings", "500", "--devices", "5", "--publishers", "1",
                           "--latency-seconds", "1"])
    assert (args.readings, args.devices, args.publishers, args.latency_seconds) == (500, 5, 1, 1.0)
    assert args.run is ingest.cmd_ingest
