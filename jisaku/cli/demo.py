"""``jisaku demo``: a whole small town in one process, with simulated devices (see demo_town.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import load_settings


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo_town import run_demo

    run_demo(load_settings(), Path(args.city))


def add_parser(commands) -> None:
    demo = commands.add_parser("demo", help="the whole system with simulated devices")
    demo.add_argument("--city", default="examples/demo-city/city.toml", help="the demo town's devices")
    demo.set_defaults(run=cmd_demo)
