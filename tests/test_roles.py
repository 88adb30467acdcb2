"""Each role installs what it needs: a Raspberry Pi gets the device part and nothing of the web.

``pip install jisaku`` installs only pyproject's base dependencies. Rather than install into
a new environment (which needs the network), the test runs ``jisaku`` in a process that
refuses to import any package outside the base dependencies and what they require, as a
Pi's environment would, and checks that a simulated device reports through a real broker,
and that a server command says which extra it needs.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
from packaging.requirements import Requirement

from jisaku.gateway.secrets import new_secret

from .brokers import HOST, EmbeddedBrokerThread
from .town import REPO, wait_until

# A process whose imports are limited to BLOCKED's complement, then the jisaku command.
# tests/pi_install/sitecustomize.py makes every Python process the test starts (and theirs)
# fail to import what a Pi with only `pip install jisaku` lacks.
PI_INSTALL = Path(__file__).parent / "pi_install"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def base_closure() -> set[str]:
    """The distributions ``pip install jisaku`` brings: the base dependencies and theirs, no extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [re.match(r"[A-Za-z0-9_.-]+", dep).group(0) for dep in project["dependencies"]]
    found: set[str] = set()
    while wanted:
        name = canonical(wanted.pop())
        if name in found:
            continue
        found.add(name)
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)  # extras and other Pythons' needs do not come along
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
    return found


def not_on_a_pi() -> set[str]:
    """Top-level modules installed here that a Pi with ``pip install jisaku`` would not have."""
    allowed = base_closure() | {"jisaku"}
    blocked = set()
    for module, distributions in metadata.packages_distributions().items():
        if module not in sys.stdlib_module_names and not {canonical(d) for d in distributions} & allowed:
            blocked.add(module)
    return blocked


def run_on_a_pi(*argv: str, env: dict[str, str], **options) -> subprocess.Popen:
    like_a_pi = {"PYTHONPATH": str(PI_INSTALL), "JISAKU_TEST_NOT_INSTALLED": ",".join(sorted(not_on_a_pi()))}
    return subprocess.Popen([sys.executable, "-m", "jisaku.cli", *argv], env={**os.environ, **env, **like_a_pi},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, **options)


def test_a_pi_install_leaves_out_the_server_parts():
    blocked = not_on_a_pi()
    assert {"fastapi", "amqtt", "argon2", "pydantic", "folium", "uvicorn", "mpremote"} <= blocked
    assert not {"paho", "gpiozero", "pynmea2", "serial"} & blocked


def test_a_device_runs_on_a_pi_with_only_the_device_part(tmp_path):
    secret, tester = new_secret(), new_secret()
    broker = EmbeddedBrokerThread({"snow-7": secret, "_tester": tester})
    received = threading.Event()
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tester")
    watcher.username_pw_set("_tester", tester)
    watcher.on_connect = lambda client, *_: client.subscribe("jisaku/snow-7/data", qos=1)
    watcher.on_message = lambda *_: received.set()
    watcher.connect(HOST, broker.port)
    watcher.loop_start()
    env = {"JISAKU_BROKER": f"mqtt://{HOST}:{broker.port}", "JISAKU_DEVICE_SECRET": secret,
           "JISAKU_DATA": str(tmp_path / "data")}
    device = run_on_a_pi("device", "run", "kinds/snow_gauge", "--id", "snow-7", "--simulate", env=env)
    try:
        wait_until(lambda: received.is_set() or device.poll() is not None, 30,
                   "the simulated gauge, with only the device part importable, publishes a reading")
        assert received.is_set(), device.communicate()[0]
    finally:
        device.terminate()
        device.wait(10)
        watcher.loop_stop()
        broker.stop()


def test_a_server_command_on_a_pi_says_what_to_install(tmp_path):
    done = run_on_a_pi("dashboard", env={"JISAKU_DATA": str(tmp_path / "data")})
    out, _ = done.communicate(timeout=60)
    assert done.returncode != 0
    assert "jisaku dashboard: needs" in out and "pip install 'jisaku[all]'" in out, out
    assert "Traceback" not in out
