"""`jisaku bench web` runs end to end at a tiny size and prints its figures (no assertion on
speed: the benchmark prints them against the targets for people to read); and the live
stream it measures hands one poll to every open stream and forgets streams that close."""

from __future__ import annotations

import math
import threading
import time

import httpx
import uvicorn

from jisaku.bench import web as bench_web
from jisaku.dashboard.api import broadcaster
from jisaku.dashboard.app import create_app
from jisaku.contract.protocol import Reading
from jisaku.gateway.db import Database
from jisaku.gateway.store import Batch, SQLiteStore

from .brokers import free_port
from .town import wait_until


def test_bench_web_prints_its_figures(capsys):
    figures = bench_web.web(vehicles=20, streams=20, seconds=1, connections=4, loader="python")

    printed = capsys.readouterr().out
    assert "trivial FastAPI JSON endpoint" in printed and "requests/s" in printed
    assert "ratio latest / trivial" in printed
    assert "20 of 20 received the update" in printed
    for key in ("trivial_rps", "latest_rps", "ratio", "stream_max_s", "stream_p50_s", "stream_p99_s"):
        assert isinstance(figures[key], float) and math.isfinite(figures[key]), (key, figures[key])
    assert figures["latest_rps"] > 0 and figures["streams_received"] == 20


def test_bench_web_command_line():
    import argparse

    from jisaku import bench

    top = argparse.ArgumentParser(prog="jisaku")
    bench.add_parser(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(["bench", "web", "--vehicles", "50", "--streams", "100", "--workers", "2",
                           "--access-log"])
    assert (args.vehicles, args.streams, args.workers, args.access_log) == (50, 100, 2, True)
    assert args.run is bench_web.cmd_web


def read_event(lines) -> str:
    """The data of the next event on an open stream: the ``latest`` snapshot or ``changes``."""
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event in ("latest", "changes"):
            return line.removeprefix("data: ")


def test_open_streams_all_get_an_update_and_closed_ones_are_forgotten(tmp_path):
    db_path = tmp_path / "jisaku.db"
    bench_web.build_town(db_path, 3)
    app = create_app(db_path)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the dashboard starts")
    url = f"http://127.0.0.1:{server.config.port}/api/v1/stream"
    try:
        with httpx.Client(timeout=10) as http:
            streams = [http.stream("GET", url) for _ in range(3)]
            responses = [stream.__enter__() for stream in streams]
            lines = [response.iter_lines() for response in responses]
            firsts = [read_event(each) for each in lines]
            assert all('"bench-bus-0002"' in first for first in firsts)
            assert all("bench-tray" not in first for first in firsts), "the private device never streams"
            assert len(broadcaster(app, "main").subscribers) == 3

            store = SQLiteStore(Database(db_path))
            store.write(Batch(readings=[("bench-bus-0001", Reading(time.time(), 99, {"lat": 35.5, "lon": 139.5,
                                                                                   "bench_mark": 4242}))]))
            assert all('"bench_mark":4242' in read_event(each) for each in lines)
            for stream in streams:
                stream.__exit__(None, None, None)
        wait_until(lambda: not broadcaster(app, "main").subscribers, 10, "closed streams are unsubscribed")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
