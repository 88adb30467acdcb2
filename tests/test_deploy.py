"""The shipped systemd units and nginx site stay in step with the jisaku command line."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from jisaku.cli import parser

DEPLOY = Path(__file__).parent.parent / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def exec_start(unit: Path) -> list[str]:
    config = configparser.ConfigParser(strict=False, interpolation=None)
    config.read_string(unit.read_text())
    return shlex.split(config["Service"]["ExecStart"])


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_each_unit_runs_a_command_that_exists(unit):
    command = exec_start(unit)
    if Path(command[0]).name == "jisaku":
        parser().parse_args(command[1:])  # exits (fails the test) on an unknown subcommand or option
    else:
        assert command[0] == "/usr/sbin/mosquitto"


def test_mosquitto_and_its_sync_use_the_same_folder():
    mosquitto = exec_start(DEPLOY / "systemd" / "jisaku-mosquitto.service")
    sync = exec_start(DEPLOY / "systemd" / "jisaku-mosquitto-sync.service")
    config_dir = Path(mosquitto[mosquitto.index("-c") + 1]).parent
    assert Path(sync[sync.index("--dir") + 1]) == config_dir


def test_the_jisaku_services_run_unprivileged_and_write_only_their_data():
    for name in ("jisaku-gateway.service", "jisaku-dashboard.service"):
        text = (DEPLOY / "systemd" / name).read_text()
        assert "User=jisaku" in text and "ProtectSystem=strict" in text and "ReadWritePaths=/var/lib/jisaku" in text


def test_nginx_passes_the_stream_unbuffered_and_the_visitor_address():
    site = (DEPLOY / "nginx" / "jisaku.conf").read_text()
    stream = site[site.index("location = /api/v1/stream"):]
    assert "proxy_buffering off;" in stream.split("}")[0]
    assert "X-Forwarded-For" in site and "X-Forwarded-Proto" in site
