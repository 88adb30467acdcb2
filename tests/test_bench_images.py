"""``jisaku bench images`` runs through the real upload and prints its figures (a small run)."""

from __future__ import annotations

import argparse

from jisaku import bench
from jisaku.bench import images


def test_bench_images_stores_every_picture_and_prints_its_figures(capsys):
    figures = images.images(cameras=5, rounds=2, kb=50)
    out = capsys.readouterr().out
    assert figures["pictures"] == 10 and 40 < figures["picture_kb"] <= 50
    assert figures["stored_per_s"] > 0 and figures["plain_per_s"] > 0 and figures["peak_pss_mb"] > 10
    for line in ("(a) pictures stored", "(b) plain copy, same bytes", "a/b", "(c) server peak PSS"):
        assert line in out


def test_bench_images_command_line():
    top = argparse.ArgumentParser(prog="jisaku")
    bench.add_parser(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(["bench", "images", "--cameras", "7", "--rounds", "1"])
    assert (args.cameras, args.rounds, args.kb) == (7, 1, 200) and args.run is images.cmd_images
