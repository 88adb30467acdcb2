"""``jisaku bench ingest``: how fast the gateway stores readings through a real Mosquitto.

Many simulated devices publish N QoS 1 readings (one per message) through Mosquitto; the
gateway runs as its own process, exactly as ``jisaku gateway`` does in a deployment. One run
measures:

(a) the sustained rate at which the gateway stores them, and checks that every one of the N
    is stored exactly once;
(b) the ceiling, in the same run and on the same stream: the rate at which ``mosquitto_sub``
    (C, QoS 1) receives it. a/b says how much of what the broker can hand out the gateway
    keeps up with. Both subscribe at once rather than in two passes: mosquitto_sub costs
    little CPU, and one pass means both see exactly the same burst;
(c) publish-to-queryable latency p50/p99 at a steady rate (the ``received`` column the
    gateway writes minus the reading's ``ts``, both UTC seconds on this machine's clock);
(d) the gateway's peak RSS (VmHWM of its process).

The throughput phase publishes with a minimal MQTT writer (``--client raw``, the default):
two paho publishers manage only ~4,000 readings/s on a 2-core machine, so they, not the
broker, would be the ceiling. ``--client paho`` uses paho, as devices do.

Example::

    jisaku bench ingest                       # 100,000 readings from 100 devices
    python -c "from jisaku.bench import ingest; ingest.ingest(readings=20_000)"
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
WARMUP_DEVICE = "bench-warmup"
BENCH_USER = "_bench"

# The targets of the issue, on a 2-core machine.
TARGET_STORED_PER_S = 10_000
TARGET_RATIO = 0.7  # issue 16: at least 0.7 of what mosquitto_sub takes from the same stream
TARGET_P99_MS = 250.0
TARGET_RSS_MB = 100.0

START_TIMEOUT_S = 15.0
# Give up waiting for the gateway when the stored count has not moved for this long.
STALL_TIMEOUT_S = 30.0
POLL_S = 0.2
# How often the latency phase looks for newly visible readings.
OBSERVE_S = 0.005
# The raw publisher: unacknowledged messages at most, and packets per write.
RAW_INFLIGHT = 1000
RAW_CHUNK = 100


# ---------------------------------------------------------------- publishers (own processes)


def _publisher(index: int, url: str, password: str, plan: list[tuple[str, int, int]], rate: float | None,
               start, results) -> None:
    """Publish ``plan`` (device, first seq, count), round-robin over its devices, at QoS 1.

    ``rate`` None: as fast as paho allows; otherwise paced at ``rate`` readings/s.
    Puts ("ready", index) on ``results`` once connected, waits for ``start``, then puts
    ("done", index, published, acked, last_ack_time, error).
    """
    from jisaku.contract import protocol
    from jisaku.contract.mqtt import BrokerAddress, new_client

    error = None
    published = 0
    acked = 0
    last_ack = 0.0
    all_acked = threading.Event()
    total = sum(count for _, _, count in plan)
    try:
        broker = BrokerAddress.parse(url)
        client = new_client(f"jisaku-bench-pub-{index}-{os.getpid()}", BENCH_USER, password, broker)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)  # no limit: queued in paho until the broker has room
        connected = threading.Event()

        def on_connect(client, userdata, flags, reason_code, properties):
            if not reason_code.is_failure:
                connected.set()

        def on_publish(client, userdata, mid, reason_code, properties):
            nonlocal acked, last_ack
            acked += 1
            last_ack = time.time()
            if acked >= total:
                all_acked.set()

        client.on_connect = on_connect
        client.on_publish = on_publish
        client.connect(broker.host, broker.port, keepalive=60)
        client.loop_start()
        if not connected.wait(START_TIMEOUT_S):
            raise RuntimeError(f"publisher {index} could not connect to {url}")
        results.put(("ready", index))
        start.wait()
        topics = {device: protocol.topic(device, "data") for device, _, _ in plan}
        rounds = max((count for _, _, count in plan), default=0)
        began = time.time()
        for r in range(rounds):
            for device, first_seq, count in plan:
                if r >= count:
                    continue
                if rate is not None:
                    due = began + published / rate
                    delay = due - time.time()
                    if delay > 0:
                        time.sleep(delay)
                now = time.time()
                payload = protocol.encode_reading(first_seq + r, {"v_c": round(20 + (r % 100) / 10, 1)}, ts=now)
                client.publish(topics[device], payload, qos=1)
                published += 1
        if total and not all_acked.wait(600):
            error = f"publisher {index}: only {acked} of {total} acknowledged by the broker"
        client.disconnect()
        client.loop_stop()
    except KeyboardInterrupt:
        return
    except Exception as err:  # reported to the parent, which prints it
        error = f"publisher {index}: {type(err).__name__}: {err}"
    results.put(("done", index, published, acked, last_ack, error))


def _raw_publisher(index: int, url: str, password: str, plan: list[tuple[str, int, int]], rate: float | None,
                   start, results) -> None:
    """Like :func:`_publisher`, but speaking MQTT 3.1.1 over a plain socket, QoS 1, up to
    ``RAW_INFLIGHT`` unacknowledged messages, packets written in chunks.

    paho spends ~100-200 µs of Python per message, so two paho publishers on a 2-core
    machine cannot offer the broker more than a few thousand readings/s: they, not the
    broker nor the gateway, would set the ceiling. This one costs a few µs per message.
    """
    import struct

    from jisaku.contract import protocol
    from jisaku.contract.mqtt import BrokerAddress

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            n, digit = n >> 7, n & 0x7F
            out.append(digit | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def string(s: str) -> bytes:
        b = s.encode()
        return struct.pack("!H", len(b)) + b

    error = None
    published = acked = 0
    last_ack = 0.0
    total = sum(count for _, _, count in plan)
    cond = threading.Condition()
    try:
        broker = BrokerAddress.parse(url)
        sock = socket.create_connection((broker.host, broker.port), timeout=START_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = (string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 600)
                + string(f"jisaku-bench-raw-{index}-{os.getpid()}") + string(BENCH_USER) + string(password))
        sock.sendall(b"\x10" + varint(len(body)) + body)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise RuntimeError("the broker closed the connection during CONNECT")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"the broker refused the publisher (CONNACK {connack.hex()})")
        sock.settimeout(None)

        def read_acks() -> None:
            nonlocal acked, last_ack
            buffer = b""
            while acked < total:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                n = len(buffer) // 4  # only PUBACKs (4 bytes each) come back to a publisher
                buffer = buffer[n * 4:]
                with cond:
                    acked += n
                    last_ack = time.time()
                    cond.notify_all()

        reader = threading.Thread(target=read_acks, daemon=True)
        reader.start()
        results.put(("ready", index))
        start.wait()
        topics = {device: string(protocol.topic(device, "data")) for device, _, _ in plan}
        rounds = max((count for _, _, count in plan), default=0)
        pending: list[bytes] = []
        mid = 0

        def flush() -> None:
            nonlocal pending
            with cond:
                while published - acked > RAW_INFLIGHT - len(pending):
                    cond.wait(1)
            sock.sendall(b"".join(pending))
            pending = []

        for r in range(rounds):
            for device, first_seq, count in plan:
                if r >= count:
                    continue
                payload = protocol.encode_reading(first_seq + r, {"v_c": round(20 + (r % 100) / 10, 1)},
                                                  ts=time.time())
                mid = mid % 65535 + 1
                topic = topics[device]
                pending.append(b"\x32" + varint(len(topic) + 2 + len(payload)) + topic
                               + struct.pack("!H", mid) + payload)
                published += 1
                if len(pending) >= RAW_CHUNK:
                    flush()
        if pending:
            flush()
        with cond:
            deadline = time.monotonic() + 600
            while acked < total and time.monotonic() < deadline:
                cond.wait(1)
        if acked < total:
            error = f"publisher {index}: only {acked} of {total} acknowledged by the broker"
        sock.sendall(b"\xe0\x00")
        sock.close()
    except KeyboardInterrupt:
        return
    except Exception as err:  # reported to the parent, which prints it
        error = f"publisher {index}: {type(err).__name__}: {err}"
    results.put(("done", index, published, acked, last_ack, error))


# ---------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _mosquitto_exe() -> str:
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if exe is None:
        raise RuntimeError("mosquitto is not installed (sudo apt-get install mosquitto)")
    return exe


def _wait_accepting(port: int, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited during start-up:\n{_tail(log)}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not accept connections on {HOST}:{port}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen | None, timeout: float = 5) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _proc_status(pid: int, key: str) -> int | None:
    """A kB figure from /proc/<pid>/status (VmHWM is the peak resident set size)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _gateway_pids(pid: int) -> list[int]:
    """The gateway process and, with --workers, its worker processes."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(child) for child in children)]


def _total(values: list) -> float | None:
    return None if not values or any(v is None for v in values) else sum(values)


def _count(db: sqlite3.Connection, where: str = "", args: tuple = ()) -> int:
    sql = "SELECT count(*) FROM readings WHERE device_id != ?" + (f" AND {where}" if where else "")
    return db.execute(sql, (WARMUP_DEVICE, *args)).fetchone()[0]


def _wait_stored(db: sqlite3.Connection, expected: int, where: str = "", args: tuple = (),
                 alive=lambda: True) -> int:
    """Poll the count until ``expected`` rows, or until it stops moving; return the last count."""
    last, moved = -1, time.monotonic()
    while True:
        count = _count(db, where, args)
        if count >= expected:
            return count
        if count != last:
            last, moved = count, time.monotonic()
        elif time.monotonic() - moved > STALL_TIMEOUT_S or not alive():
            return count
        time.sleep(POLL_S)


def _plans(devices: list[str], counts: dict[str, int], first_seq: int, publishers: int) -> list[list]:
    plans: list[list] = [[] for _ in range(publishers)]
    for i, device in enumerate(devices):
        if counts[device]:
            plans[i % publishers].append((device, first_seq, counts[device]))
    return plans


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


# ---------------------------------------------------------------- the benchmark


def ingest(readings: int = 100_000, devices: int = 100, publishers: int = 2, rate_for_latency: int = 1000,
           latency_seconds: float = 10, *, client: str = "raw", gateway_workers: int = 1) -> dict:
    """Run the ingest benchmark, print a report and return its figures (see the module docstring).

    ``client`` is what the publishers of the throughput phase speak: "raw" (a minimal MQTT
    writer, so that the load generator is not the bottleneck) or "paho" (what devices use).
    The latency phase always publishes with paho, at a steady rate. ``gateway_workers`` > 1 runs
    ``jisaku gateway --workers N``: N processes on a shared subscription.
    """
    from jisaku.contract import protocol
    from jisaku.gateway.db import Database
    from jisaku.gateway.mosquitto import write_mosquitto_files
    from jisaku.gateway.registry import DeviceRecord, Registry

    if readings < 1 or devices < 1 or publishers < 1:
        raise ValueError("readings, devices and publishers must be at least 1")
    publishers = min(publishers, devices)
    if client not in ("raw", "paho"):
        raise ValueError(f"client must be raw or paho, not {client!r}")
    publish_fn = _raw_publisher if client == "raw" else _publisher
    mosquitto_exe = _mosquitto_exe()
    mosquitto_sub_exe = shutil.which("mosquitto_sub")
    if mosquitto_sub_exe is None:
        raise RuntimeError("mosquitto_sub is not installed (sudo apt-get install mosquitto-clients)")

    ctx = multiprocessing.get_context("spawn")
    # Stopped with SIGTERM, clean up as on Ctrl-C (the finally below), not leave processes behind.
    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():
        previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="jisaku-bench-"))
    procs: dict[str, subprocess.Popen] = {}
    workers: list = []
    files: list = []
    figures: dict[str, Any] = {"client": client, "readings": readings, "devices": devices, "publishers": publishers,
                               "workers": gateway_workers,
                               "rate_for_latency": rate_for_latency, "latency_seconds": latency_seconds}
    try:
        # ---- registry, accounts, broker
        data = tmp / "data"
        database = Database(data / "jisaku.db")
        registry = Registry(database)
        names = [f"bench-{i:04d}" for i in range(1, devices + 1)]
        for name in [*names, WARMUP_DEVICE]:
            registry.add_device(DeviceRecord(name, "bench", name=name))
        gateway_secret = registry.service_secret("_gateway", data / "secrets")
        bench_secret = registry.service_secret(BENCH_USER, data / "secrets")
        port = _free_port()
        url = f"mqtt://{HOST}:{port}"
        conf = write_mosquitto_files(tmp / "mosquitto", {"_gateway": gateway_secret, BENCH_USER: bench_secret},
                                     port, HOST, persistence=True, user="root" if os.geteuid() == 0 else None)
        mosquitto_log = tmp / "mosquitto" / "mosquitto.log"
        files.append(mosquitto_log.open("ab"))
        procs["mosquitto"] = subprocess.Popen([mosquitto_exe, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                              stdout=files[-1], stderr=files[-1])
        _wait_accepting(port, procs["mosquitto"], "mosquitto", mosquitto_log)

        # ---- one retained warm-up reading: the gateway and mosquitto_sub each get exactly one
        # copy when they subscribe, which tells us they are subscribed.
        _publish_warmup(url, bench_secret, "data", protocol.encode_reading(0, {"v_c": 0.0}, ts=time.time()),
                        retain=True)

        # ---- the gateway, as its own process, as `jisaku gateway` runs in a deployment
        env = {k: v for k, v in os.environ.items() if not k.startswith("JISAKU_")}
        env.update(JISAKU_BROKER=url, JISAKU_DATA=str(data), JISAKU_GATEWAY_SECRET=gateway_secret)
        gateway_log = tmp / "gateway.log"
        files.append(gateway_log.open("ab"))
        gateway = procs["gateway"] = subprocess.Popen(
            [sys.executable, "-m", "jisaku.cli", "gateway", "--workers", str(gateway_workers)], cwd=tmp, env=env,
            stdin=subprocess.DEVNULL, stdout=files[-1], stderr=files[-1])

        # ---- the ceiling: mosquitto_sub on the same stream, in the same run
        sub_out = tmp / "mosquitto_sub.out"
        files.append(sub_out.open("wb"))
        sub_err = tmp / "mosquitto_sub.err"
        files.append(sub_err.open("wb"))
        sub = procs["mosquitto_sub"] = subprocess.Popen(
            [mosquitto_sub_exe, "-h", HOST, "-p", str(port), "-q", "1", "-t", "jisaku/+/data",
             "-u", BENCH_USER, "-P", bench_secret, "-C", str(readings + 1), "-F", "%U",
             "-i", f"jisaku-bench-sub-{os.getpid()}"],
            stdin=subprocess.DEVNULL, stdout=files[-2], stderr=files[-1])

        db = sqlite3.connect(data / "jisaku.db", timeout=30)
        deadline = time.monotonic() + START_TIMEOUT_S
        last_warmup = 0.0
        while True:
            # A shared subscription gets no retained messages: the gateway is ready once
            # a warm-up event (which mosquitto_sub does not subscribe to) is stored.
            gateway_ready = (gateway_log.read_text().count("gateway connected") >= gateway_workers
                             and db.execute("SELECT count(*) FROM events WHERE device_id=?",
                                            (WARMUP_DEVICE,)).fetchone()[0] > 0)
            if not gateway_ready and time.monotonic() - last_warmup > 0.5:
                _publish_warmup(url, bench_secret, "event",
                                protocol.encode_event(int(time.time() * 1000), "warmup", ts=time.time()))
                last_warmup = time.monotonic()
            sub_ready = sub_out.stat().st_size > 0
            if gateway_ready and sub_ready:
                break
            for what, proc, log in (("the gateway", gateway, gateway_log), ("mosquitto_sub", sub, sub_err)):
                if proc.poll() is not None:
                    raise RuntimeError(f"{what} exited during start-up:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not subscribed within {START_TIMEOUT_S:.0f} s (gateway: {gateway_ready},"
                                   f" mosquitto_sub: {sub_ready})\n{_tail(gateway_log)}\n{_tail(sub_err)}")
            time.sleep(0.05)
        gateway_pids = _gateway_pids(gateway.pid)
        cpu_before = _total([_cpu_seconds(pid) for pid in gateway_pids])
        memory = MemorySampler(gateway_pids)
        memory.start()

        # ---- phase 1: N readings as fast as the publishers go
        counts = {name: readings // devices + (1 if i < readings % devices else 0) for i, name in enumerate(names)}
        results = ctx.Queue()
        start = ctx.Event()
        plans = _plans(names, counts, 1, publishers)
        workers = [ctx.Process(target=publish_fn, args=(i, url, bench_secret, plan, None, start, results),
                               name=f"bench-publisher-{i}", daemon=True) for i, plan in enumerate(plans)]
        for w in workers:
            w.start()
        _wait_ready(results, len(workers), workers)
        t0 = time.time()
        start.set()
        stored = _wait_stored(db, readings, alive=lambda: gateway.poll() is None)
        t_polled = time.time()
        done = _collect(results, len(workers))
        pub_errors = [d[5] for d in done if d[5]]
        published = sum(d[2] for d in done)
        last_ack = max((d[4] for d in done), default=0.0)
        last_received = db.execute("SELECT max(received) FROM readings WHERE device_id != ?",
                                   (WARMUP_DEVICE,)).fetchone()[0] or t_polled
        # The gateway stamps `received` once per batch, just before its transaction; the last
        # batch's commit is a few ms later, well inside the 0.2 s polling step.
        stored_elapsed = last_received - t0
        stored_rate = stored / stored_elapsed if stored_elapsed > 0 else 0.0
        cpu_after = _total([_cpu_seconds(pid) for pid in gateway_pids])

        # exactly once?
        rows = db.execute("SELECT count(*), count(DISTINCT device_id || '/' || seq) FROM readings"
                          " WHERE device_id != ?", (WARMUP_DEVICE,)).fetchone()
        expected = {(d, s) for d, c in counts.items() for s in range(1, c + 1)}
        have = set(db.execute("SELECT device_id, seq FROM readings WHERE device_id != ?", (WARMUP_DEVICE,)))
        missing = len(expected - have)
        extra = len(have - expected)
        duplicates = rows[0] - rows[1]
        exactly_once = rows[0] == readings and rows[1] == readings and not missing and not extra

        # the ceiling
        try:
            sub.wait(STALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            sub.terminate()
            sub.wait(5)
        lines = [line for line in sub_out.read_text().split("\n") if line.strip()]
        sub_received = max(0, len(lines) - 1)  # the first line is the retained warm-up reading
        sub_last = float(lines[-1]) if sub_received else t0
        sub_elapsed = sub_last - t0
        sub_rate = sub_received / sub_elapsed if sub_elapsed > 0 else 0.0

        figures.update(
            stored=stored, stored_seconds=stored_elapsed, stored_per_s=stored_rate,
            exactly_once=exactly_once, missing=missing, duplicates=duplicates, unexpected=extra,
            published=published, publish_seconds=last_ack - t0 if last_ack else None,
            publish_per_s=published / (last_ack - t0) if last_ack > t0 else None,
            publisher_errors=pub_errors,
            sub_received=sub_received, sub_seconds=sub_elapsed, sub_per_s=sub_rate,
            ratio=stored_rate / sub_rate if sub_rate else None,
            gateway_cpu_seconds=(cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else None,
        )

        # ---- phase 2: steady rate, publish-to-queryable latency
        n_latency = int(rate_for_latency * latency_seconds)
        latencies: list[float] = []
        seen: list[float] = []
        lat_stored = 0
        if n_latency > 0 and gateway.poll() is None:
            first_seq = readings + 1  # above every seq of phase 1, so seq keeps growing per device
            lat_counts = {name: n_latency // devices + (1 if i < n_latency % devices else 0)
                          for i, name in enumerate(names)}
            start2 = ctx.Event()
            worker = ctx.Process(target=_publisher, args=(
                0, url, bench_secret, _plans(names, lat_counts, first_seq, 1)[0], float(rate_for_latency),
                start2, results), name="bench-latency-publisher", daemon=True)
            workers.append(worker)
            worker.start()
            _wait_ready(results, 1, [worker])
            observer = _Observer(data / "jisaku.db", names, time.time())
            observer.start()
            start2.set()
            try:
                lat_stored = _wait_stored(db, n_latency, "seq >= ?", (first_seq,),
                                          alive=lambda: gateway.poll() is None)
                time.sleep(OBSERVE_S * 3)
            finally:
                observer.stop()
            _collect(results, 1)
            seen = sorted(observer.latencies_ms)
            latencies = sorted(
                (received - ts) * 1000 for ts, received in
                db.execute("SELECT ts, received FROM readings WHERE device_id != ? AND seq >= ?",
                           (WARMUP_DEVICE, first_seq)))
        figures.update(
            latency_readings=n_latency, latency_stored=lat_stored,
            p50_ms=_percentile(latencies, 50), p99_ms=_percentile(latencies, 99),
            max_ms=latencies[-1] if latencies else float("nan"),
            seen_p50_ms=_percentile(seen, 50) if n_latency > 0 else None,
            seen_p99_ms=_percentile(seen, 99) if n_latency > 0 else None,
        )

        # ---- peak memory of the gateway, over the whole run
        memory.stop()
        peaks = [_proc_status(pid, "VmHWM") for pid in gateway_pids]
        hwm = _total(peaks)
        if len(gateway_pids) == 1:
            figures["peak_rss_mb"] = hwm / 1024 if hwm is not None else None
        else:
            # Several processes: the sum of their RSS peaks counts the libraries they share once
            # per process; their proportional share (PSS), summed and sampled, counts it once.
            figures["peak_rss_mb"] = memory.peak_kb / 1024 if memory.peak_kb else None
            figures["rss_peaks_mb"] = [p / 1024 for p in peaks if p is not None]
        figures["gateway_alive"] = gateway.poll() is None
        # Mosquitto drops QoS 1 messages for a client whose queue is full (max_queued_messages).
        figures["broker_drop_warnings"] = [line for line in _tail(mosquitto_log, 100000).splitlines()
                                           if "dropped" in line.lower()][:3]
        if not figures["gateway_alive"]:
            figures["gateway_log"] = _tail(gateway_log)
        db.close()
        database.close()
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
            w.join(5)
        for name in ("mosquitto_sub", "gateway", "mosquitto"):
            _stop(procs.get(name))
        for f in files:
            f.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)

    _report(figures)
    return figures


class MemorySampler(threading.Thread):
    """The gateway processes' summed PSS (proportional set size), every 0.1 s: its peak."""

    def __init__(self, pids: list[int]):
        super().__init__(name="bench-memory", daemon=True)
        self.pids = pids
        self.peak_kb = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.1):
            total = 0
            for pid in self.pids:
                try:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            total += int(line.split()[1])
                except (OSError, ValueError):
                    pass
            self.peak_kb = max(self.peak_kb, total)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


class _Observer(threading.Thread):
    """Another reader of the database, as the dashboard is: when does each reading become visible?

    ``received`` is stamped by the gateway just before its transaction, so it leaves out
    the commit (and its fsync); this measures up to the moment a reader sees the row, to
    within the polling step.
    """

    def __init__(self, path: Path, devices: list[str], since: float):
        super().__init__(name="bench-observer", daemon=True)
        self.path, self.devices, self.since = path, devices, since
        self.latencies_ms: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(self.path, timeout=30)
        sql = (f"SELECT device_id, seq, ts FROM readings WHERE device_id IN ({','.join('?' * len(self.devices))})"
               " AND ts > ?")
        seen: set[tuple[str, int]] = set()
        newest = self.since
        try:
            while not self._stop_event.is_set():
                rows = db.execute(sql, (*self.devices, max(self.since, newest - 1.0))).fetchall()
                now = time.time()
                for device_id, seq, ts in rows:
                    if (device_id, seq) not in seen:
                        seen.add((device_id, seq))
                        self.latencies_ms.append((now - ts) * 1000)
                        newest = max(newest, ts)
                self._stop_event.wait(OBSERVE_S)
        finally:
            db.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def _publish_warmup(url: str, secret: str, channel: str, payload: bytes, retain: bool = False) -> None:
    """One warm-up message from the warm-up device, waiting until the broker has it."""
    from jisaku.contract import protocol
    from jisaku.contract.mqtt import BrokerAddress, new_client

    broker = BrokerAddress.parse(url)
    client = new_client(f"jisaku-bench-warmup-{os.getpid()}", BENCH_USER, secret, broker)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        message = client.publish(protocol.topic(WARMUP_DEVICE, channel), payload, qos=1, retain=retain)
        message.wait_for_publish(timeout=START_TIMEOUT_S)
        if not message.is_published():
            raise RuntimeError(f"the broker did not take the warm-up {channel} message")
    finally:
        client.disconnect()
        client.loop_stop()


def _wait_ready(results, n: int, workers: list) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S * 2
    ready = 0
    while ready < n:
        try:
            message = results.get(timeout=0.5)
        except Exception:
            message = None
        if message is not None:
            if message[0] == "ready":
                ready += 1
            elif message[0] == "done" and message[5]:
                raise RuntimeError(message[5])
        if any(not w.is_alive() and w.exitcode not in (0, None) for w in workers) or time.monotonic() > deadline:
            raise RuntimeError("a publisher did not start")


def _collect(results, n: int) -> list[tuple]:
    done = []
    while len(done) < n:
        try:
            message = results.get(timeout=STALL_TIMEOUT_S * 2)
        except Exception:
            break
        if message[0] == "done":
            done.append(message)
    return done


def _report(f: dict) -> None:
    def mark(ok: bool | None) -> str:
        return "PASS" if ok else "FAIL"

    def num(x, fmt: str) -> str:
        return "n/a" if x is None or x != x else format(x, fmt)

    n = f["readings"]
    print()
    print(f"jisaku bench ingest: {n:,} QoS 1 readings from {f['devices']} devices, {f['publishers']} publisher"
          f" process(es) ({f['client']} MQTT), Mosquitto, gateway in its own process"
          f"{' with ' + str(f['workers']) + ' workers on a shared subscription' if f['workers'] > 1 else ''};"
          f" {os.cpu_count()} CPU(s)")
    if f.get("exactly_once"):
        print(f"  all {n:,} stored exactly once")
    else:
        print(f"  NOT exactly once: {f.get('stored', 0):,} stored, {f.get('missing', 0):,} missing,"
              f" {f.get('duplicates', 0):,} duplicated, {f.get('unexpected', 0):,} unexpected")
    for line in f.get("broker_drop_warnings") or []:
        print(f"  mosquitto: {line}")
    for err in f.get("publisher_errors") or []:
        print(f"  {err}")
    if f.get("publish_per_s"):
        print(f"  publishers: {f['published']:,} acknowledged by the broker in {f['publish_seconds']:.2f} s"
              f" ({f['publish_per_s']:,.0f}/s)")
    print(f"  gateway: stored in {num(f.get('stored_seconds'), '.2f')} s; CPU used"
          f" {num(f.get('gateway_cpu_seconds'), '.1f')} s"
          f" ({num((f.get('gateway_cpu_seconds') or 0) / n * 1e6, '.0f')} µs per reading)")
    print(f"  mosquitto_sub: {f.get('sub_received', 0):,} received in {num(f.get('sub_seconds'), '.2f')} s"
          " (same run, same stream)")
    print(f"  latency phase: {f.get('latency_stored', 0):,} of {f['latency_readings']:,} stored at"
          f" {f['rate_for_latency']:,}/s for {f['latency_seconds']} s")
    if f.get("rss_peaks_mb"):
        print(f"  gateway memory: RSS peaks {', '.join(f'{mb:.1f}' for mb in f['rss_peaks_mb'])} MB"
              f" (supervisor, workers; {sum(f['rss_peaks_mb']):.1f} MB summed, shared libraries counted"
              " in each); PSS summed and sampled every 0.1 s, below, counts them once")
    if not f.get("gateway_alive", True):
        print("  the gateway DIED during the run:\n" + f.get("gateway_log", ""))
    print()
    rows = [
        ("(a) stored rate", f"{num(f.get('stored_per_s'), ',.0f')}/s", f">= {TARGET_STORED_PER_S:,}/s",
         (f.get("stored_per_s") or 0) >= TARGET_STORED_PER_S and f.get("exactly_once")),
        ("(b) mosquitto_sub rate", f"{num(f.get('sub_per_s'), ',.0f')}/s", "(ceiling)", None),
        ("a/b", num(f.get("ratio"), ".2f"), f">= {TARGET_RATIO}", (f.get("ratio") or 0) >= TARGET_RATIO),
        ("(c) p50 (received - ts)", f"{num(f.get('p50_ms'), '.1f')} ms", "", None),
        ("(c) p99 (received - ts)", f"{num(f.get('p99_ms'), '.1f')} ms", f"< {TARGET_P99_MS:.0f} ms",
         f.get("p99_ms") is not None and f["p99_ms"] < TARGET_P99_MS
         and f.get("latency_stored") == f.get("latency_readings")),
        ("(c) p99 seen by a reader", f"{num(f.get('seen_p99_ms'), '.1f')} ms", f"< {TARGET_P99_MS:.0f} ms",
         f.get("seen_p99_ms") is not None and f["seen_p99_ms"] < TARGET_P99_MS
         and f.get("latency_stored") == f.get("latency_readings")),
        ("(d) gateway peak RSS" if not f.get("rss_peaks_mb") else "(d) gateway peak PSS, summed",
         f"{num(f.get('peak_rss_mb'), '.1f')} MB", f"< {TARGET_RSS_MB:.0f} MB",
         f.get("peak_rss_mb") is not None and f["peak_rss_mb"] < TARGET_RSS_MB),
    ]
    print(f"  {'figure':26} {'measured':>14}  {'target':>14}  result")
    for name, value, target, ok in rows:
        print(f"  {name:26} {value:>14}  {target:>14}  {'' if ok is None else mark(ok)}")
    print(flush=True)


# ---------------------------------------------------------------- command line


def cmd_ingest(args: argparse.Namespace) -> None:
    figures = ingest(readings=args.readings, devices=args.devices, publishers=args.publishers,
                     rate_for_latency=args.rate, latency_seconds=args.latency_seconds, client=args.client,
                     gateway_workers=args.workers)
    if not figures.get("exactly_once"):
        sys.exit(1)


def add_parser(bench) -> None:
    """Add ``ingest`` to the ``jisaku bench`` subcommands (``bench`` is their subparsers object)."""
    ingest_parser = bench.add_parser(
        "ingest", help="readings/s the gateway stores through a real Mosquitto, latency and memory")
    ingest_parser.add_argument("--readings", type=int, default=100_000, help="how many readings to send (N)")
    ingest_parser.add_argument("--devices", type=int, default=100, help="how many simulated devices send them")
    ingest_parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    ingest_parser.add_argument("--rate", type=int, default=1000, help="readings/s of the latency phase")
    ingest_parser.add_argument("--latency-seconds", type=float, default=10, help="length of the latency phase")
    ingest_parser.add_argument("--client", choices=("raw", "paho"), default="raw",
                               help="publishers of the throughput phase: a minimal MQTT writer (raw), or paho")
    ingest_parser.add_argument("--workers", type=int, default=2,
                               help="gateway processes on a shared subscription (jisaku gateway --workers N)")
    ingest_parser.set_defaults(run=cmd_ingest)
