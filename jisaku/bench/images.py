"""``jisaku bench images``: how fast the server takes cameras' pictures, through the real upload.

Many cameras upload a ~200 kB JPEG each, over and over, as fast as they can, to the
dashboard (``POST /api/v1/devices/{id}/pictures``, HTTP basic with each camera's own
secret), which checks, stores, makes the public copy and the thumbnail and fsyncs them
before it answers. In the same run the same bytes go the same way to a plain copy: an
endpoint of the benchmark's server that writes them to a file and fsyncs it, nothing more.
Printed: pictures stored per second, MB/s, the ratio to the plain copy, and the server's
peak memory (PSS, sampled every 0.1 s).

Example::

    jisaku bench images                        # 100 cameras, 3 pictures each
    python -c "from jisaku.bench import images; images.images(cameras=10, rounds=1)"
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import os
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .ingest import MemorySampler
from .web import HOST, Server

SINK_PATH = "/bench/sink"
TARGET_PSS_MB = 150.0
PICTURE_KB = 200


def bench_app():
    """The dashboard on ``$JISAKU_BENCH_DB`` plus the plain-copy endpoint (uvicorn ``--factory``)."""
    from starlette.responses import JSONResponse

    from jisaku.dashboard.app import create_app

    db = Path(os.environ["JISAKU_BENCH_DB"])
    app = create_app(db, tiles="osm")
    sink = db.parent / "sink"
    sink.mkdir(exist_ok=True)

    async def plain_copy(request) -> JSONResponse:
        data = await request.body()
        with open(sink / request.path_params["name"], "wb") as out:  # as durable as a stored picture
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return JSONResponse({"stored": True}, status_code=201)

    app.router.add_route(SINK_PATH + "/{name}", plain_copy, methods=["POST"], include_in_schema=False)
    return app


def picture(kb: int = PICTURE_KB) -> bytes:
    """A JPEG of about ``kb`` kilobytes: a noisy 1280 × 720 scene, as a grainy winter dusk is."""
    from PIL import Image

    rng = random.Random(7)
    noise = Image.frombytes("L", (320, 180), bytes(rng.randrange(256) for _ in range(320 * 180)))
    image = Image.merge("RGB", (noise, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT), noise)).resize((1280, 720))
    low, high, best = 5, 95, b""
    while low <= high:  # the quality that comes closest to the size asked for
        quality = (low + high) // 2
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        best = out.getvalue()
        if len(best) > kb * 1024:
            high = quality - 1
        else:
            low = quality + 1
    return best


def _camera(url: str, device_id: str, secret: str, data: bytes, rounds: int, path: str, answers: list) -> None:
    """One camera: ``rounds`` uploads one after the other on one kept-alive connection."""
    connection = http.client.HTTPConnection(HOST, int(url.rsplit(":", 1)[1]), timeout=60)
    auth = "Basic " + base64.b64encode(f"{device_id}:{secret}".encode()).decode()
    for seq in range(rounds):
        target = (f"{SINK_PATH}/{device_id}-{seq}.jpg" if path == "sink"
                  else f"/api/v1/devices/{device_id}/pictures?ts={time.time():.3f}&seq={seq}")
        connection.request("POST", target, body=data, headers={
            "Authorization": auth, "Content-Type": "image/jpeg", "Content-Length": str(len(data))})
        response = connection.getresponse()
        response.read()
        answers.append(response.status)
    connection.close()


def _phase(url: str, secrets: dict[str, str], data: bytes, rounds: int, path: str) -> tuple[float, list[int]]:
    """Every camera at once; (seconds from the first upload to the last answer, the answers)."""
    answers: list[int] = []
    threads = [threading.Thread(target=_camera, args=(url, device_id, secret, data, rounds, path, answers))
               for device_id, secret in secrets.items()]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, answers


def images(cameras: int = 100, rounds: int = 3, kb: int = PICTURE_KB) -> dict[str, Any]:
    """Run the benchmark, print its figures, and return them."""
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import DeviceRecord, Registry

    data = picture(kb)
    folder = Path(tempfile.mkdtemp(prefix="jisaku-bench-images-"))
    server = None
    try:
        registry = Registry(Database(folder / "jisaku.db"))
        secrets = {f"cam-{i:03d}": registry.add_device(DeviceRecord(f"cam-{i:03d}", "snow_camera"))
                   for i in range(cameras)}
        server = Server(folder / "jisaku.db", 1, folder / "server.log", app="jisaku.bench.images:bench_app")
        memory = MemorySampler([server.process.pid])
        memory.start()
        _phase(server.url, dict(list(secrets.items())[:2]), data, 1, "sink")  # warm up: imports, first writes
        plain_s, plain_answers = _phase(server.url, secrets, data, rounds, "sink")
        stored_s, stored_answers = _phase(server.url, secrets, data, rounds, "pictures")
        memory.stop()
        sent = cameras * rounds
        kept = registry.db.connection.execute("SELECT count(*) FROM pictures").fetchone()[0]
        if stored_answers.count(201) != sent or kept != sent or plain_answers.count(201) != sent:
            raise RuntimeError(f"of {sent} pictures, {stored_answers.count(201)} were answered 201 and {kept}"
                               f" stored (plain copy: {plain_answers.count(201)}); see {folder / 'server.log'}")
        figures = {
            "cameras": cameras, "pictures": sent, "picture_kb": round(len(data) / 1024, 1),
            "stored_per_s": sent / stored_s, "stored_mb_s": sent * len(data) / stored_s / 1e6,
            "plain_per_s": sent / plain_s, "ratio": plain_s / stored_s,
            "peak_pss_mb": memory.peak_kb / 1024,
        }
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    _print(figures)
    return figures


def _print(f: dict[str, Any]) -> None:
    print(f"\n  {f['cameras']} cameras, {f['pictures']} pictures of {f['picture_kb']} kB, through"
          " POST /api/v1/devices/{id}/pictures (checked, public copy and thumbnail made, fsync'd)")
    print(f"  {'figure':32} {'measured':>12} {'target':>14}  result")
    print(f"  {'(a) pictures stored':32} {f['stored_per_s']:>10,.1f}/s")
    print(f"  {'(a) MB stored':32} {f['stored_mb_s']:>10,.1f}/s")
    print(f"  {'(b) plain copy, same bytes':32} {f['plain_per_s']:>10,.1f}/s {'(baseline)':>14}")
    print(f"  {'a/b':32} {f['ratio']:>12.2f}")
    verdict = "PASS" if f["peak_pss_mb"] < TARGET_PSS_MB else "FAIL"
    print(f"  {'(c) server peak PSS':32} {f['peak_pss_mb']:>9.1f} MB {'< 150 MB':>14}  {verdict}")


def cmd_images(args: argparse.Namespace) -> None:
    images(cameras=args.cameras, rounds=args.rounds, kb=args.kb)


def add_parser(bench) -> None:
    """Add ``images`` to the ``jisaku bench`` subcommands (``bench`` is their subparsers object)."""
    parser = bench.add_parser("images", help="pictures/s and MB/s the server stores from many cameras at once")
    parser.add_argument("--cameras", type=int, default=100, help="cameras uploading at once")
    parser.add_argument("--rounds", type=int, default=3, help="pictures each camera sends, one after another")
    parser.add_argument("--kb", type=int, default=PICTURE_KB, help="size of each picture, in kB")
    parser.set_defaults(run=cmd_images)
