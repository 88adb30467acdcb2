"""``jisaku bench web``: how fast the dashboard serves residents while 500 vehicles move.

One run, everything on this machine, each part in its own process as in a deployment:

- a SQLite database with ``--vehicles`` public buses (plus one private printer tray, which
  must never show), filled through the real store; a *mover* process keeps writing a new
  position for every vehicle every ``--report-every`` seconds, in small batches as the
  gateway does;
- the dashboard under uvicorn in its own process, started the way ``jisaku dashboard``
  starts it (one process, access log off), with one extra trivial FastAPI JSON endpoint
  (``/bench/trivial``) used as the yardstick;
- (a) requests/s of ``GET /api/v1/latest.geojson`` and of the trivial endpoint, measured
  with the same load generator in the same run, and their ratio. The load generator is
  ``wrk`` (C, Debian package ``wrk``) when installed, else a small asyncio client in its own
  process; the trivial endpoint shows how much the generator and the machine allow at all;
- (b) ``--streams`` open ``/api/v1/stream`` connections (server-sent events) in a client
  process; once all have their first event, one vehicle's position is written with a
  unique marker and the time until each stream has seen it is measured (max, p50, p99).

Why one uvicorn process by default: ``jisaku dashboard`` runs one, and on a 2-core machine
the second core is what the gateway (and here the load generator) uses. ``--workers 2``
shows what a second process buys; each worker then polls the database for its own streams.
uvicorn's access log costs about as much as the request itself (one log line and one write
per request); ``jisaku dashboard`` leaves it off unless given ``--access-log``, and so does
this benchmark unless given ``--access-log``.

Example::

    jisaku bench web                          # 500 vehicles, 1,000 streams
    jisaku bench web --vehicles 50 --streams 100 --seconds 3
    python -c "from jisaku.bench import web; web.web(vehicles=20, streams=10, seconds=1)"
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
TRIVIAL_PATH = "/bench/trivial"
LATEST_PATH = "/api/v1/latest.geojson"
STREAM_PATH = "/api/v1/stream"
# The targets of the issue, on a 2-core machine.
TARGET_RPS = 2000.0
TARGET_STREAM_S = 2.0
# Takayama, where the buses drive in circles for the benchmark.
CENTER = (36.146, 137.252)
MOVER_BATCH_S = 0.25
START_TIMEOUT_S = 20.0
STREAM_TIMEOUT_S = 15.0
WARMUP_S = 1.0


# ---------------------------------------------------------------- the town


def vehicle_ids(count: int) -> list[str]:
    return [f"bench-bus-{i:04d}" for i in range(count)]


def where(index: int, t: float) -> dict[str, float]:
    """Vehicle ``index``'s position at time ``t``: circles of different sizes around CENTER."""
    radius = 0.002 + 0.0001 * (index % 50)
    angle = t / 60.0 + index
    return {"lat": round(CENTER[0] + radius * math.sin(angle), 6),
            "lon": round(CENTER[1] + radius * math.cos(angle), 6),
            "speed_kmh": round(20 + index % 30, 1), "heading": round(math.degrees(angle) % 360, 1)}


def build_town(db_path: Path, vehicles: int) -> None:
    """Register the vehicles (and one private device) and write their first positions."""
    from jisaku.contract.protocol import Reading
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import DeviceRecord, Registry
    from jisaku.gateway.store import Batch, SQLiteStore

    db = Database(db_path)
    registry, store = Registry(db), SQLiteStore(db)
    for device_id in vehicle_ids(vehicles):
        registry.add_device(DeviceRecord(device_id, "bus", name=device_id, interval_s=2))
    registry.add_device(DeviceRecord("bench-tray", "printer_tray", name="inside the office", public=False))
    now = time.time()
    store.write(Batch(readings=[(device_id, Reading(now, 1, where(i, now)))
                                for i, device_id in enumerate(vehicle_ids(vehicles))]))
    db.close()


def _mover(db_path: str, vehicles: int, report_s: float, stop) -> None:
    """Own process: every vehicle reports every ``report_s`` seconds, written in small batches."""
    from jisaku.contract.protocol import Reading
    from jisaku.gateway.db import Database
    from jisaku.gateway.store import Batch, SQLiteStore

    store = SQLiteStore(Database(Path(db_path)))
    ids = vehicle_ids(vehicles)
    per_batch = max(1, round(vehicles * MOVER_BATCH_S / report_s))
    seq, turn = 1, 0
    while not stop.is_set():
        began = time.time()
        batch = Batch()
        for _ in range(per_batch):
            index = turn % vehicles
            if index == 0:
                seq += 1
            batch.readings.append((ids[index], Reading(began, seq, where(index, began))))
            turn += 1
        store.write(batch)
        stop.wait(max(0.0, MOVER_BATCH_S - (time.time() - began)))


# ---------------------------------------------------------------- the server


def bench_app():
    """The dashboard on ``$JISAKU_BENCH_DB`` plus the trivial endpoint (uvicorn ``--factory``)."""
    from jisaku.dashboard.app import create_app

    app = create_app(Path(os.environ["JISAKU_BENCH_DB"]))

    @app.get(TRIVIAL_PATH, include_in_schema=False)
    async def trivial() -> dict[str, bool]:
        return {"ok": True}

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _raise_open_files() -> int:
    """Allow as many open sockets as the system lets this user have (1,000 streams need 1,000+)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Server:
    """``uvicorn`` serving :func:`bench_app` in its own process, as ``jisaku dashboard`` runs it."""

    def __init__(self, db_path: Path, workers: int, log_path: Path, access_log: bool = False,
                 app: str = "jisaku.bench.web:bench_app"):
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        code = ("import uvicorn; uvicorn.run(%r, factory=True, host=%r, port=%d,"
                " workers=%d, log_level='info', access_log=%r)" % (app, HOST, self.port, workers, access_log))
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-c", code], stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "JISAKU_BENCH_DB": str(db_path)})
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the dashboard did not start; see {log_path}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# ---------------------------------------------------------------- load generators


def wrk_rps(url: str, seconds: float, connections: int) -> float:
    """Requests/s that ``wrk`` (one thread) gets from ``url``; raises on errors or non-2xx answers."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if bad:
        raise RuntimeError(f"{url}: {bad.group(1)} answers were not 2xx:\n{output}")
    errors = re.search(r"Socket errors: (.*)", output)
    if errors and re.search(r"(connect|read|write) [1-9]", errors.group(1)):
        raise RuntimeError(f"{url}: socket errors ({errors.group(1)}):\n{output}")
    if errors:  # answers slower than wrk's 2 s: the machine is overloaded; say so, the rate still counts
        print(f"  note: {url.rsplit('/', 1)[-1]}: wrk socket errors {errors.group(1)}", flush=True)
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


async def _python_load(host: str, port: int, path: str, seconds: float, connections: int) -> float:
    """Keep-alive GETs on ``connections`` sockets for ``seconds``; returns requests/s."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    done = 0
    counting = False
    stop = False

    async def one_connection() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while not stop:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"{path}: {head.splitlines()[0].decode()}")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)))
                if counting:
                    done += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(one_connection()) for _ in range(connections)]
    await asyncio.sleep(min(WARMUP_S, seconds / 2))
    counting, began = True, time.perf_counter()
    await asyncio.sleep(seconds)
    counted, elapsed = done, time.perf_counter() - began
    stop = True
    await asyncio.gather(*tasks)
    return counted / elapsed


def _python_load_process(url: str, seconds: float, connections: int, results) -> None:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    path = "/" + url.split("//", 1)[1].split("/", 1)[1]
    try:
        results.put(asyncio.run(_python_load(host, int(port), path, seconds, connections)))
    except Exception as err:  # told to the parent, which raises it
        results.put(f"{type(err).__name__}: {err}")


def python_rps(url: str, seconds: float, connections: int) -> float:
    """The asyncio load generator, in its own process so that it has a core of its own."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_python_load_process, args=(url, seconds, connections, results))
    process.start()
    answer = results.get(timeout=seconds + 60)
    process.join()
    if isinstance(answer, str):
        raise RuntimeError(answer)
    return answer


# ---------------------------------------------------------------- event streams


async def _streams(host: str, port: int, count: int, marker: bytes, conn) -> None:
    """Open ``count`` streams, say "ready" when each has its first event, then report when each saw ``marker``."""
    first = [asyncio.Event() for _ in range(count)]
    seen: list[float | None] = [None] * count
    go = asyncio.Event()

    async def one_stream(index: int) -> None:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        writer.write(f"GET {STREAM_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
                     .encode())
        tail = b""
        try:
            while seen[index] is None:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    raise RuntimeError(f"stream {index} closed by the server")
                now = time.time()
                if not first[index].is_set() and b"event: latest" in tail + chunk:
                    first[index].set()
                if go.is_set() and marker in tail + chunk:
                    seen[index] = now
                tail = chunk[-len(marker):]
        finally:
            writer.close()

    tasks = []
    for index in range(count):  # a hundred at a time, so the listen backlog never overflows
        tasks.append(asyncio.create_task(one_stream(index)))
        if index % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in first)), STREAM_TIMEOUT_S)
    go.set()
    conn.send(("ready", count))
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), STREAM_TIMEOUT_S)
    except TimeoutError:
        pass
    conn.send(("seen", seen))


def _streams_process(url: str, count: int, marker: bytes, conn) -> None:
    _raise_open_files()
    host, port = url.split("//", 1)[1].split(":")
    try:
        asyncio.run(_streams(host, int(port), count, marker, conn))
    except Exception as err:  # told to the parent, which raises it
        conn.send(("error", f"{type(err).__name__}: {err}"))


def stream_latency(url: str, db_path: Path, count: int) -> list[float | None]:
    """Open ``count`` streams, write one marked position, and return each stream's delay (None: never)."""
    from jisaku.contract.protocol import Reading
    from jisaku.gateway.db import Database
    from jisaku.gateway.store import Batch, SQLiteStore

    nonce = random.randrange(10**8, 10**9)
    marker = b'"bench_mark":%d' % nonce
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_streams_process, args=(url, count, marker, child))
    process.start()
    try:
        if not parent.poll(STREAM_TIMEOUT_S + 30):
            raise RuntimeError(f"the {count} streams did not all open within {STREAM_TIMEOUT_S} s")
        kind, answer = parent.recv()
        if kind == "error":
            raise RuntimeError(f"opening {count} streams: {answer}")
        # The publish: one vehicle's new position, written as the gateway writes it.
        store = SQLiteStore(Database(db_path))
        now = time.time()
        store.write(Batch(readings=[(vehicle_ids(1)[0], Reading(now, 10**9, {**where(0, now),
                                                                           "bench_mark": nonce}))]))
        published = time.time()
        store.db.close()
        kind, answer = parent.recv()
        if kind == "error":
            raise RuntimeError(f"waiting on {count} streams: {answer}")
        return [None if t is None else max(0.0, t - published) for t in answer]
    finally:
        process.join(timeout=STREAM_TIMEOUT_S + 10)
        if process.is_alive():
            process.kill()


# ---------------------------------------------------------------- the benchmark


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def web(vehicles: int = 500, streams: int = 1000, seconds: float = 5.0, connections: int = 64,
        workers: int = 1, report_every: float = 2.0, loader: str = "auto",
        access_log: bool = False) -> dict[str, Any]:
    """Run the benchmark, print the figures and return them."""
    _raise_open_files()
    if loader == "auto":
        loader = "wrk" if shutil.which("wrk") else "python"
        if loader == "python":
            print("wrk is not installed (sudo apt-get install wrk); using the asyncio load generator instead.",
                  flush=True)
    elif loader == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("--loader wrk: wrk is not installed; sudo apt-get install wrk")
    measure = wrk_rps if loader == "wrk" else python_rps
    figures: dict[str, Any] = {"vehicles": vehicles, "streams": streams, "workers": workers, "loader": loader,
                               "cpus": os.cpu_count(), "access_log": access_log}
    with tempfile.TemporaryDirectory(prefix="jisaku-bench-web-") as tmp:
        db_path = Path(tmp) / "jisaku.db"
        build_town(db_path, vehicles)
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        mover = context.Process(target=_mover, args=(str(db_path), vehicles, report_every, stop), daemon=True)
        mover.start()
        server = None
        try:
            server = Server(db_path, workers, Path(tmp) / "dashboard.log", access_log)
            print(f"{vehicles} vehicles moving (each reports every {report_every:g} s), dashboard: uvicorn,"
                  f" {workers} worker(s), access log {'on' if access_log else 'off'}, {os.cpu_count()} CPUs,"
                  f" load: {loader}, {connections} connections, {seconds:g} s per endpoint", flush=True)
            body = _get(server.url + LATEST_PATH)
            figures["latest_bytes"] = len(body)
            if b"bench-tray" in body:
                raise RuntimeError("the private device appears on latest.geojson")
            figures["trivial_rps"] = measure(server.url + TRIVIAL_PATH, seconds, connections)
            figures["latest_rps"] = measure(server.url + LATEST_PATH, seconds, connections)
            figures["ratio"] = figures["latest_rps"] / figures["trivial_rps"]
            print(f"  trivial FastAPI JSON endpoint   {figures['trivial_rps']:9,.0f} requests/s", flush=True)
            print(f"  latest.geojson ({len(body) / 1000:,.0f} kB)       {figures['latest_rps']:9,.0f} requests/s"
                  f"   target >= {TARGET_RPS:,.0f}: {'met' if figures['latest_rps'] >= TARGET_RPS else 'NOT met'}",
                  flush=True)
            print(f"  ratio latest / trivial          {figures['ratio']:9.2f}", flush=True)
            delays = stream_latency(server.url, db_path, streams)
            received = [d for d in delays if d is not None]
            figures["streams_received"] = len(received)
            figures["stream_max_s"] = max(received) if received else math.inf
            figures["stream_p50_s"] = statistics.median(received) if received else math.inf
            figures["stream_p99_s"] = _percentile(received, 0.99) if received else math.inf
            met = len(received) == streams and figures["stream_max_s"] <= TARGET_STREAM_S
            print(f"  event streams: {len(received):,} of {streams:,} received the update;"
                  f" p50 {figures['stream_p50_s']:.3f} s, p99 {figures['stream_p99_s']:.3f} s,"
                  f" max {figures['stream_max_s']:.3f} s   target all <= {TARGET_STREAM_S:g} s:"
                  f" {'met' if met else 'NOT met'}", flush=True)
        finally:
            if server is not None:
                server.stop()
            stop.set()
            mover.join(timeout=10)
    return figures


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def cmd_web(args: argparse.Namespace) -> None:
    web(vehicles=args.vehicles, streams=args.streams, seconds=args.seconds, connections=args.connections,
        workers=args.workers, report_every=args.report_every, loader=args.loader, access_log=args.access_log)


def add_parser(bench) -> None:
    """Add ``web`` to the ``jisaku bench`` subcommands (``bench`` is their subparsers object)."""
    web_parser = bench.add_parser(
        "web", help="requests/s of latest.geojson while vehicles move, and live-stream delay")
    web_parser.add_argument("--vehicles", type=int, default=500, help="moving vehicles on the map")
    web_parser.add_argument("--streams", type=int, default=1000, help="open /api/v1/stream connections")
    web_parser.add_argument("--seconds", type=float, default=5, help="load per endpoint, in seconds")
    web_parser.add_argument("--connections", type=int, default=64, help="concurrent HTTP connections of the load")
    web_parser.add_argument("--workers", type=int, default=1,
                            help="uvicorn processes (jisaku dashboard runs 1)")
    web_parser.add_argument("--report-every", type=float, default=2.0, help="seconds between a vehicle's reports")
    web_parser.add_argument("--loader", choices=("auto", "wrk", "python"), default="auto",
                            help="load generator: wrk if installed (auto), or the asyncio one")
    web_parser.add_argument("--access-log", action="store_true",
                            help="as jisaku dashboard --access-log: a log line per request")
    web_parser.set_defaults(run=cmd_web)
