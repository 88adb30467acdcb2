"""A Raspberry Pi updates itself from afar, and can never be left dead (issue 15, docs/updates.md).

Real parts: a town (broker, gateway, the dashboard serving bundles over HTTP), bundles signed with
the town's key, and the Pi as it runs in the field: ``jisaku device run`` in its own process, the
supervisor starting the app as a child process. The test plays the town's server: it publishes a
bundle and puts the offer on ``jisaku/tray-1/update`` (retained), then watches what the Pi reports.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from jisaku.contract.bundles import read_header
from jisaku.device.config import load_device_config
from jisaku.device.runner import app_folder
from jisaku.device.supervisor import Supervisor
from jisaku.device.versions import Versions
from jisaku.gateway.bundle_signing import build_bundle, load_private_key, make_keys
from jisaku.gateway.bundle_store import BundleStore
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord
from jisaku.gateway.updates import UpdateBook

from .test_updates import CuttingRelay
from .town import KINDS, REPO, wait_until

# The app the Pi was installed with: a reading {"beat": 1} every 0.3 s.
BEAT = '''
class Beat:
    def __init__(self, config, link, pin_factory=None):
        self.link = link

    def run(self, stop):
        while not stop.wait(0.3):
            self.link.publish_reading({"beat": BEAT})

    def close(self):
        pass
'''
DEVICE_TOML = '''
[device]
id = "tray-1"
kind = "printer_tray"
app = "beat.py:Beat"
interval_s = 1

[tray]
report_every_s = 0.5
'''
WAIT_S = 60  # generous: a 2-core machine running several Python processes at once


class Pi:
    """tray-1 as a Raspberry Pi in the field, and the town it belongs to."""

    def __init__(self, make_town, tmp_path: Path):
        self.folder = tmp_path / "tray-1"
        self.folder.mkdir()
        (self.folder / "device.toml").write_text(DEVICE_TOML)
        (self.folder / "beat.py").write_text(BEAT.replace("BEAT", "1"))
        self.town = make_town([load_device_config(self.folder)])
        self.keys = make_keys(self.town.directory)
        self.url = self.town.start_dashboard(tiles="osm")
        self.store = BundleStore(self.town.directory)
        self.data = tmp_path / "pi"                       # the Pi's own data folder (JISAKU_DATA)
        self.state = self.data / "devices" / "tray-1"
        self.log = tmp_path / "pi.log"
        self.process: subprocess.Popen | None = None
        self.tmp_path = tmp_path
        self.offers = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-server", protocol=mqtt.MQTTv311)
        self.offers.username_pw_set("_tester", self.town.tester_secret)
        host, port = self.town.broker_url.removeprefix("mqtt://").split(":")
        self.offers.connect(host, int(port))
        self.offers.loop_start()

    # ------------------------------------------------------------ the Pi

    def start(self, server: str | None = None) -> None:
        environment = {**os.environ, "JISAKU_DATA": str(self.data), "JISAKU_BROKER": self.town.broker_url,
                       "JISAKU_DEVICE_SECRET": self.town.secrets["tray-1"], "JISAKU_SERVER": server or self.url}
        environment.pop("PYTHONPATH", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jisaku.cli", "device", "run", str(self.folder), "--simulate"],
            cwd=self.tmp_path, env=environment, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.offers.loop_stop()
        self.offers.disconnect()

    def versions(self) -> dict:
        path = self.state / "versions.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # ------------------------------------------------------------ what the town sees

    def updates(self) -> list[dict]:
        """The Pi's update events, oldest first."""
        events = [e for e in self.town.store.events("tray-1", limit=1000) if e["event"] == "update"]
        return [e["v"] for e in sorted(events, key=lambda e: e["seq"])]

    def states(self, offer: int) -> list[str]:
        return [v["state"] for v in self.updates() if v["offer"] == offer]

    def wait_state(self, offer: int, state: str) -> dict:
        return wait_until(lambda: next((v for v in self.updates() if v["offer"] == offer and v["state"] == state),
                                       None), WAIT_S, f"tray-1 reports {state} for offer {offer}\n{self.tail()}")

    def status(self) -> dict:
        row = self.town.store.db.connection.execute(
            "SELECT state, info FROM device_status WHERE device_id = 'tray-1'").fetchone()
        return {"state": row["state"], **json.loads(row["info"] or "{}")} if row else {}

    def readings(self, metric: str) -> int:
        return sum(1 for r in self.town.store.readings("tray-1", since=0, limit=100000) if metric in r["v"])

    def wait_working(self, metric: str = "beat") -> None:
        before = self.readings(metric)
        wait_until(lambda: self.readings(metric) > before, WAIT_S, f"tray-1 sends {metric} readings\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:]) if self.log.exists() else ""

    # ------------------------------------------------------------ the town's server

    def publish(self, folder: Path, version: str, kind: str = "printer_tray") -> Path:
        bundle = self.tmp_path / f"{kind}-{version}.bundle"
        build_bundle(folder, version, kind, "pi", load_private_key(self.town.directory), bundle)
        published, _ = self.store.publish(bundle, "test")
        return self.store.path_of(kind, version)

    def app_folder(self, name: str, files: dict[str, str]) -> Path:
        folder = self.tmp_path / name
        folder.mkdir()
        for file_name, text in files.items():
            (folder / file_name).write_text(text)
        return folder

    def offer(self, number: int, version: str, bundle: Path, trial_s: float = WAIT_S, kind: str = "") -> None:
        with open(bundle, "rb") as stream:
            manifest_sha256 = hashlib.sha256(read_header(stream).manifest_bytes).hexdigest()
        path = f"/api/v1/devices/tray-1/bundles/{version}" + (f"?kind={kind}" if kind else "")
        offer = {"offer": number, "version": version, "runs_on": "pi", "bytes": bundle.stat().st_size,
                 "manifest_sha256": manifest_sha256, "path": path, "trial_s": trial_s}
        self.offers.publish("jisaku/tray-1/update", json.dumps(offer), qos=1, retain=True).wait_for_publish(10)


@pytest.fixture
def pi(make_town, tmp_path):
    device = Pi(make_town, tmp_path)
    yield device
    device.stop()


EMBEDDED = pytest.mark.parametrize("broker_kind", ["embedded"], indirect=True)


@EMBEDDED
def test_an_update_to_a_kind_folder_goes_through_a_dropped_link_and_runs(pi):
    # The new version is the printer tray's kind folder, changed to say hello when it starts.
    kind_folder = pi.tmp_path / "printer_tray"
    shutil.copytree(KINDS / "printer_tray", kind_folder, ignore=shutil.ignore_patterns("__pycache__"))
    code = (kind_folder / "pi.py").read_text()
    code = code.replace("        self.link = link\n",
                        "        self.link = link\n        link.publish_event(\"hello\", {\"from\": \"bundle\"})\n", 1)
    (kind_folder / "pi.py").write_text(code)
    bundle = pi.publish(kind_folder, "2.0")
    # Between the Pi and the town's server, a link that drops once half-way through the bundle.
    relay = CuttingRelay(pi.url, cut_after=bundle.stat().st_size // 2)
    try:
        pi.start(server=relay.url)
        pi.wait_working()
        wait_until(lambda: (pi.state / "bundle-signing.pub").exists(), WAIT_S, "the Pi pins the town's key")
        assert (pi.state / "bundle-signing.pub").read_text() == pi.keys.public.read_text()
        assert pi.status()["version"] is None  # the app it was installed with

        pi.offer(1, "2.0", bundle)
        pi.wait_state(1, "running")
    finally:
        relay.close()
    assert pi.states(1) == ["downloading", "verified", "switched", "running"]
    updates = pi.updates()
    assert updates[0]["bytes"] == bundle.stat().st_size and updates[2]["from"] == "installed"
    assert relay.cuts == 1 and "link dropped, going on from byte" in pi.log.read_text()
    # What runs now is the bundle's code: the tray's readings, and its hello.
    pi.wait_working("paper")
    assert any(e["event"] == "hello" for e in pi.town.store.events("tray-1"))
    wait_until(lambda: pi.status().get("version") == "2.0", WAIT_S, "the status says version 2.0")
    versions = pi.versions()
    assert (versions["app"], versions["app_before"], versions["trial"], versions["done"]) == ("2.0", None, None, [1])


@EMBEDDED
def test_a_corrupted_download_is_refused_and_the_device_keeps_running(pi):
    bundle = pi.publish(pi.app_folder("v2.1", {"beat.py": BEAT.replace("BEAT", "2")}), "2.1")
    data = bytearray(bundle.read_bytes())
    data[-5] ^= 0x01  # one bit flipped on the server's disk
    bundle.write_bytes(bytes(data))
    pi.start()
    pi.wait_working()
    pi.offer(2, "2.1", bundle)
    refused = pi.wait_state(2, "refused")
    assert refused["reason"] == "hash" and "do not match the hash" in refused["detail"]
    assert pi.states(2) == ["downloading", "refused"]
    pi.wait_working()  # still measuring, with what it had
    assert pi.versions()["app"] is None and pi.versions()["done"] == [2]
    assert not (pi.state / "app" / "2.1").exists()


@EMBEDDED
def test_a_version_that_crashes_on_start_is_rolled_back_by_the_device(pi):
    broken = "raise RuntimeError('broken on purpose')\n" + BEAT.replace("BEAT", "3")
    bundle = pi.publish(pi.app_folder("v3", {"beat.py": broken}), "3.0")
    pi.start()
    pi.wait_working()
    pi.offer(3, "3.0", bundle)
    rolled_back = pi.wait_state(3, "rolled_back")
    assert rolled_back["reason"] == "crash" and "broken on purpose" in rolled_back["detail"]
    assert pi.states(3) == ["downloading", "verified", "switched", "rolled_back"]
    pi.wait_working()
    versions = pi.versions()
    assert (versions["app"], versions["trial"], versions["report"], versions["done"]) == (None, None, None, [3])
    wait_until(lambda: pi.status().get("state") == "online" and pi.status().get("version") is None, WAIT_S,
               "online again, with the app it was installed with")


@EMBEDDED
def test_a_version_that_never_reports_within_its_trial_is_rolled_back(pi):
    silent = BEAT.replace('self.link.publish_reading({"beat": BEAT})', "pass")
    bundle = pi.publish(pi.app_folder("v4", {"beat.py": silent}), "4.0")
    pi.start()
    pi.wait_working()
    pi.offer(4, "4.0", bundle, trial_s=3)
    rolled_back = pi.wait_state(4, "rolled_back")
    assert rolled_back["reason"] == "no_report"
    assert pi.states(4) == ["downloading", "verified", "switched", "rolled_back"]
    pi.wait_working()
    assert pi.versions()["app"] is None


def make_wheel(out_dir: Path, version: str, broken: bool = False, needs: str | None = None) -> Path:
    """A real wheel of jisaku's device part (what a Pi runs), with its own version number.

    ``broken``: its device runner fails on import. ``needs``: one more requirement.
    """
    sources = {"jisaku": "jisaku", "contract": "jisaku/contract", "device": "jisaku/device",
               "kinds": "jisaku/kinds", "firmware": "jisaku/firmware"}
    dist_info = f"jisaku-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: jisaku\nVersion: {version}\nRequires-Dist: paho-mqtt>=2.1\n"
    if needs:
        metadata += f"Requires-Dist: {needs}\n"
    files: dict[str, bytes] = {}
    for source, target in sources.items():
        for path in sorted((REPO / source).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[f"{target}/{path.relative_to(REPO / source).as_posix()}"] = path.read_bytes()
    files["jisaku/device/__init__.py"] = f'__version__ = "{version}"\n'.encode()
    if broken:
        files["jisaku/device/runner.py"] = b"raise RuntimeError('this jisaku is broken on purpose')\n"
    files[f"{dist_info}/METADATA"] = metadata.encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: jisaku-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
              for name, data in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n").encode()
    wheel = out_dir / f"jisaku-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


@EMBEDDED
def test_a_jisaku_wheel_installs_offline_and_a_broken_one_is_rolled_back(pi):
    wheels = pi.tmp_path / "dist"
    wheels.mkdir()
    good = pi.publish(_one(wheels, make_wheel(wheels, "0.9.1")), "0.9.1", kind="jisaku")
    pi.start()
    pi.wait_working()
    assert pi.status()["fw"] != "0.9.1"
    pi.offer(5, "0.9.1", good, kind="jisaku")  # as the town's server offers the package (gateway/updates.py)
    pi.wait_state(5, "running")
    assert pi.states(5) == ["downloading", "verified", "switched", "running"]
    wait_until(lambda: pi.status().get("fw") == "0.9.1", WAIT_S, "the status says jisaku 0.9.1 runs")
    assert (pi.state / "jisaku" / "0.9.1" / "site" / "jisaku" / "device" / "updater.py").exists()

    # A wheel that needs a package this Pi lacks is refused before anything changes.
    needy = pi.publish(_one(wheels, make_wheel(wheels, "0.9.2", needs="no-such-package-anywhere>=1")), "0.9.2",
                       kind="jisaku")
    pi.offer(6, "0.9.2", needy, kind="jisaku")
    refused = pi.wait_state(6, "refused")
    assert refused["reason"] == "dependency" and "no-such-package-anywhere" in refused["detail"]

    # A wheel whose jisaku cannot start: the Pi goes back to 0.9.1 by itself.
    broken = pi.publish(_one(wheels, make_wheel(wheels, "0.9.3", broken=True)), "0.9.3", kind="jisaku")
    pi.offer(7, "0.9.3", broken, kind="jisaku")
    rolled_back = pi.wait_state(7, "rolled_back")
    assert rolled_back["reason"] == "crash" and "broken on purpose" in rolled_back["detail"]
    pi.wait_working()
    assert pi.versions()["jisaku"] == "0.9.1"
    wait_until(lambda: pi.status().get("fw") == "0.9.1", WAIT_S, "back on jisaku 0.9.1")


def _one(folder: Path, wheel: Path) -> Path:
    """A folder holding only ``wheel``: what a jisaku bundle is made of."""
    single = folder / wheel.stem
    single.mkdir()
    shutil.move(wheel, single / wheel.name)
    return single


def test_versions_json_is_whole_or_old_after_a_power_cut_and_unreadable_means_installed(tmp_path):
    versions = Versions(tmp_path)
    versions.switch("app", "2.0", offer=8, trial_s=60)
    # A power cut while writing the next change leaves its temporary file; the pointer is the last whole one.
    (tmp_path / "versions.json.tmp").write_text('{"app": "3.')
    assert versions.load().app == "2.0" and versions.load().trial["offer"] == 8
    (tmp_path / "versions.json").write_text('{"app": "2.')  # a damaged SD card
    assert versions.load().app is None  # the app the device was installed with
    assert app_folder(tmp_path, "2.0") is None  # named, but its folder is gone: the installed app too


def test_the_supervisor_gives_up_a_version_that_keeps_failing_even_across_reboots(tmp_path):
    versions = Versions(tmp_path)
    versions.switch("app", "2.0", offer=9, trial_s=600)
    versions.count_start()
    versions.count_start()  # two starts in earlier boots (a power cut each time)
    supervisor = Supervisor(["-c", "import sys; print('ImportError: no gauge', file=sys.stderr); sys.exit(3)"],
                            tmp_path, pause_s=0.05)
    stop = threading.Event()
    runner = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    runner.start()
    try:
        report = wait_until(lambda: versions.load().report, WAIT_S, "the supervisor goes back")
    finally:
        stop.set()
        runner.join(10)
    assert report["reason"] == "crash" and "ImportError: no gauge" in report["detail"]
    state = versions.load()
    assert (state.app, state.trial, state.done) == (None, None, [9])


@EMBEDDED
def test_a_rollout_from_the_towns_server_reaches_the_pi_end_to_end(pi):
    """The gateway's own rollout (gateway/updates.py) offers the bundle; the Pi runs it; the rollout is done."""
    bundle = pi.publish(pi.app_folder("v5", {"beat.py": BEAT.replace("BEAT", "5")}), "5.0")
    assert bundle.exists()
    pi.start()
    pi.wait_working()
    book = UpdateBook(Database(pi.town.db_path), pi.store)
    wait_until(lambda: (book.software("tray-1") or None) and book.software("tray-1").runs_on == "pi", WAIT_S,
               "the gateway knows tray-1 is a Pi (its status says so)")
    rollout = book.start("printer_tray", "5.0", None, first=0, trial_s=60, actor="test")
    done = wait_until(lambda: (r := book.rollout(rollout.id)).state == "done" and r, WAIT_S,
                      f"the rollout is done\n{pi.tail()}")
    assert [(d.device_id, d.state, d.from_version) for d in done.devices] == [("tray-1", "running", "installed")]
    wait_until(lambda: pi.readings("beat") and pi.status().get("version") == "5.0", WAIT_S, "tray-1 runs 5.0")
    assert book.software("tray-1").version == "5.0"
    # The gateway withdraws the finished offer (an empty retained message): the Pi does nothing.
    pi.wait_working()
    assert pi.states(done.devices[0].offer) == ["downloading", "verified", "switched", "running"]


@EMBEDDED
def test_a_staged_rollout_stops_when_the_first_pi_goes_back_and_the_rest_are_never_offered_it(pi):
    """The first Pi of a rollout gets a version that crashes: it goes back by itself, and tray-2 never gets it."""
    pi.town.registry.add_device(DeviceRecord("tray-2", "printer_tray", name="tray-2"))
    broken = "raise RuntimeError('broken on purpose')\n" + BEAT.replace("BEAT", "6")
    pi.publish(pi.app_folder("v6", {"beat.py": broken}), "6.0")
    pi.start()
    pi.wait_working()
    book = UpdateBook(Database(pi.town.db_path), pi.store)
    rollout = book.start("printer_tray", "6.0", ["tray-1", "tray-2"], first=1, trial_s=60, actor="test")
    stopped = wait_until(lambda: (r := book.rollout(rollout.id)).state == "stopped" and r, WAIT_S,
                         f"the rollout stops\n{pi.tail()}")
    assert stopped.reason.startswith("tray-1 went back to its old version (crash: ")
    assert "broken on purpose" in stopped.reason
    first, rest = stopped.devices
    assert (first.device_id, first.state, first.reason) == ("tray-1", "rolled_back", "crash")
    assert (rest.device_id, rest.state, rest.offered_at) == ("tray-2", "withdrawn", None), "never offered"
    pi.wait_working()  # tray-1 measures again, with the version it was installed with
    assert pi.status().get("version") is None and book.software("tray-1").version is None


@EMBEDDED
def test_a_device_run_inside_another_program_refuses_updates_it_could_not_go_back_from(make_town, tmp_path):
    """jisaku demo runs its devices in its own process, with no supervisor to go back: they say no."""
    town = make_town([load_device_config(KINDS / "printer_tray")])
    make_keys(town.directory)
    town.start_dashboard(tiles="osm")
    store = BundleStore(town.directory)
    bundle = tmp_path / "tray-2.0.bundle"
    build_bundle(KINDS / "printer_tray", "2.0", "printer_tray", "pi", load_private_key(town.directory), bundle)
    store.publish(bundle, "test")
    town.run_devices()
    wait_until(lambda: town.store.reading_count("tray-1") >= 1, WAIT_S, "the tray reports")
    book = UpdateBook(Database(town.db_path), store)
    rollout = book.start("printer_tray", "2.0", ["tray-1"], actor="test")
    done = wait_until(lambda: (r := book.rollout(rollout.id)).state == "done" and r, WAIT_S, "the tray answers")
    assert (done.devices[0].state, done.devices[0].reason) == ("refused", "no_supervisor")
    status = town.store.db.connection.execute("SELECT state, info FROM device_status WHERE device_id='tray-1'")
    state, info = status.fetchone()
    assert state == "online" and json.loads(info)["version"] is None, "still there, with the version it had"
