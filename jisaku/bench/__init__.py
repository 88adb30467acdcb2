"""``jisaku bench``: benchmarks that ship with jisaku, each printing its figures and their targets.

    jisaku bench ingest     readings/s the gateway stores through a real Mosquitto (ingest.py)
    jisaku bench web        requests/s of latest.geojson and the live stream's delay (web.py)
    jisaku bench images     pictures/s the server stores from many cameras at once (images.py)
    jisaku bench counter    how close the resident counter's waiting estimate comes to the real wait (counter.py)
"""

from __future__ import annotations

from . import counter, images, ingest, web


def add_parser(commands) -> None:
    bench = commands.add_parser("bench", help="measure how fast the parts are").add_subparsers(
        dest="bench", required=True)
    ingest.add_parser(bench)
    web.add_parser(bench)
    images.add_parser(bench)
    counter.add_parser(bench)
