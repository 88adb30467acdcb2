"""The workshop guide (docs/workshop.md), followed step by step in simulation.

The commands come out of the guide itself: a code block right after a marker such as
``<!-- workshop:server -->`` is run as the guide tells people to type it, as ``jisaku``
subprocesses in a shell, so guide and test cannot drift apart. What learners click on the
operator pages is done through the operator API the pages use, logged in as each seat.

One seat has a Raspberry Pi (its pins are gpiozero's MockFactory, chosen the way gpiozero
itself allows: ``GPIOZERO_PIN_FACTORY=mock``); the other seat has no parts and runs the
simulated tray, as the guide's "Seats without parts" says. Addresses in the guide
(``0.0.0.0:1883``, ``192.168.1.10:8000`` …) are replaced by this test's free ports.

The practice steps need parts A and C of issue 14 (``jisaku devices add --practice``,
``jisaku devices promote``, ``/operator/practice``, a learner's own notification target).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

from jisaku.cli import parser as jisaku_parser

from .brokers import free_port
from .receivers import WebhookReceiver
from .town import REPO, wait_until

GUIDE = REPO / "docs" / "workshop.md"
GUIDE_JA = REPO / "docs" / "workshop.ja.md"
MARKED = re.compile(r"<!-- workshop:([a-z0-9-]+) -->\s*\n```sh\n(.*?)```", re.S)
ANY_SH = re.compile(r"```sh\n(.*?)```", re.S)
LEARNER_PASSWORD = "practice makes perfect"
TRAINER_PASSWORD = "the trainer's long passphrase"


def marked_blocks(path: Path) -> dict[str, str]:
    """The guide's marked blocks by name: ``{"server": "JISAKU_BROKER=… jisaku broker\\n…"}``."""
    return {name: text for name, text in MARKED.findall(path.read_text(encoding="utf-8"))}


def jisaku_lines(path: Path) -> list[str]:
    """Every ``jisaku …`` command in the guide's shell blocks, without leading VAR=value and comments."""
    found = []
    for block in ANY_SH.findall(path.read_text(encoding="utf-8")):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                words.pop(0)
            if words and words[0] == "jisaku":
                found.append(words)
    return found


def test_the_japanese_guide_gives_the_same_commands():
    english, japanese = marked_blocks(GUIDE), marked_blocks(GUIDE_JA)
    assert set(english) >= {"server", "accounts", "pi-run", "sim-add", "sim-run", "promote"}
    assert japanese == english, "workshop.ja.md's marked blocks differ from workshop.md's"
    assert sorted(map(tuple, jisaku_lines(GUIDE_JA))) == sorted(map(tuple, jisaku_lines(GUIDE)))


@pytest.mark.parametrize("words", jisaku_lines(GUIDE), ids=" ".join)
def test_every_jisaku_command_in_the_guide_is_one_jisaku_has(words):
    # argparse exits (code 2, saying which word it did not know) for a subcommand or option jisaku lacks.
    try:
        jisaku_parser().parse_args(words[1:])
    except SystemExit as exit:
        pytest.fail(f"`{' '.join(words)}` is not a jisaku command (argparse exit {exit.code})")


class Room:
    """The workshop room: a home folder with ``~/jisaku``, the trainer's server, and the seats' shells."""

    def __init__(self, tmp_path: Path):
        self.home = tmp_path / "home"
        # ~/jisaku as the guide has it: the repository's kinds and .venv, but files written
        # there (a seat's secret file) stay in this test's folder.
        self.jisaku = self.home / "jisaku"
        self.jisaku.mkdir(parents=True)
        for name in ("kinds", ".venv"):
            (self.jisaku / name).symlink_to(REPO / name)
        self.mqtt, self.http = free_port(), free_port()
        self.town_target = WebhookReceiver()      # the town's real notifications ([notify] of jisaku.toml)
        self.practice_target = WebhookReceiver()  # the practice talk room's incoming webhook
        self.env = {**os.environ, "HOME": str(self.home), "JISAKU_DATA": str(tmp_path / "data"),
                    "JISAKU_BROKER": f"mqtt://127.0.0.1:{self.mqtt}", "JISAKU_HTTP": f"127.0.0.1:{self.http}",
                    "JISAKU_NOTIFY": json.dumps({"webhook": [{"url": self.town_target.url + "/town"}]}),
                    "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("JISAKU_DEVICE_SECRET", None)
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.running: list[subprocess.Popen] = []

    def here(self, text: str) -> str:
        """The guide's text with this room's addresses for the guide's example ones."""
        for host in ("0.0.0.0", "192.168.1.10"):
            text = text.replace(f"{host}:1883", f"127.0.0.1:{self.mqtt}").replace(f"{host}:8000", f"127.0.0.1:{self.http}")
        return text

    def type(self, commands: str, stdin: str = "", **env: str) -> str:
        """Type ``commands`` in a shell in ~/jisaku; their output (they must succeed)."""
        done = subprocess.run(["bash", "-ec", self.here(commands)], cwd=self.jisaku, input=stdin, text=True,
                              capture_output=True, env={**self.env, **env}, timeout=120)
        assert done.returncode == 0, f"{commands!r} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, name: str, commands: str, **env: str) -> subprocess.Popen:
        """Start a command that keeps running (a terminal of its own), in its own process group."""
        log = (self.logs / f"{name}.log").open("w")
        process = subprocess.Popen(["bash", "-ec", self.here(commands)], cwd=self.jisaku, stdout=log,
                                   stderr=subprocess.STDOUT, env={**self.env, **env}, start_new_session=True)
        self.running.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def close(self) -> None:
        for process in reversed(self.running):  # devices first, the broker last
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self.town_target.close()
        self.practice_target.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def residents_see(self) -> set[str]:
        with urllib.request.urlopen(self.base_url + "/api/v1/latest.geojson", timeout=10) as answer:
            return {feature["id"] for feature in json.load(answer)["features"]}


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def dashboard_up(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "/operator/login", timeout=2).close()
        return True
    except (urllib.error.URLError, ConnectionError):
        return False


def log_in(room: Room, name: str, password: str) -> httpx.Client:
    """A seat's browser: logged in to the operator pages, sending the CSRF token as the pages do."""
    client = httpx.Client(base_url=room.base_url, timeout=20)
    answer = client.post("/api/v1/operator/login", json={"name": name, "password": password})
    assert answer.status_code == 200, answer.text
    client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
    return client


def my_notifications(client: httpx.Client, url: str) -> None:
    """Step 7.1, "My notifications": the learner's own target, a webhook."""
    answer = client.put("/api/v1/operator/me/notify", json={"webhook_url": url, "webhook_format": "generic"})
    assert answer.status_code == 200, answer.text


def device(client: httpx.Client, device_id: str) -> dict:
    answer = client.get(f"/api/v1/operator/devices/{device_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_workshop_day_in_simulation(tmp_path):
    guide = marked_blocks(GUIDE)
    room = Room(tmp_path)
    try:
        # --- The trainer's preparation: the server's three terminals, then the accounts.
        broker, gateway, dashboard = guide["server"].strip().splitlines()
        room.start("broker", broker)
        wait_until(lambda: listening(room.mqtt), 20, "jisaku broker listens")
        room.start("gateway", gateway)
        room.start("dashboard", dashboard)
        wait_until(lambda: dashboard_up(room.base_url), 30, "jisaku dashboard answers")
        wait_until(lambda: "gateway connected" in room.log("gateway"), 20, "the gateway connects to the broker")
        for line in guide["accounts"].strip().splitlines():
            password = TRAINER_PASSWORD if "--role admin" in line else LEARNER_PASSWORD
            assert "added" in room.type(line, stdin=password + "\n")

        # --- Step 1: both seats log in.
        seat01, seat02 = log_in(room, "seat01", LEARNER_PASSWORD), log_in(room, "seat02", LEARNER_PASSWORD)

        # --- Step 3 (seat 01, with a Pi): + Add a device, practice ticked; the secret shown once.
        added = seat01.post("/api/v1/operator/devices", json={
            "id": "tray-01", "kind": "printer_tray", "name": "Seat 1 practice tray",
            "lat": 36.146, "lon": 137.252, "practice": True})
        assert added.status_code == 201, f"part C: the practice field when adding a device: {added.text}"
        secret = added.json()["secret"]
        # Step 4: nano ~/jisaku-secret; chmod 600 — then the guide's command, on mock pins.
        (room.home / "jisaku-secret").write_text(secret + "\n")
        room.start("tray-01", guide["pi-run"], GPIOZERO_PIN_FACTORY="mock")

        # --- Seats without parts (seat 02): register on the server's command line, then run simulated.
        printed = room.type(guide["sim-add"])
        assert "registered tray-02 as a practice device" in printed
        save_secret = next(line.strip() for line in printed.splitlines() if "> tray-02.secret" in line)
        room.type(save_secret)
        room.start("tray-02", guide["sim-run"])

        # Checkpoint of Step 4: both trays are Running on the Devices page.
        wait_until(lambda: "tray-01: connected to" in room.log("tray-01"), 30, "the Pi's tray connects")
        wait_until(lambda: device(seat01, "tray-01")["state"] == "online", 30, "tray-01 shows Running")
        wait_until(lambda: device(seat02, "tray-02")["state"] == "online", 30, "tray-02 shows Running")

        # --- Step 5: on the practice map, not on the residents' map.
        practice_map = seat01.get("/operator/practice")
        assert practice_map.status_code == 200, "part C: the practice map /operator/practice"
        assert "tray-01" in practice_map.text and "tray-02" in practice_map.text
        assert not {"tray-01", "tray-02"} & room.residents_see()

        # --- Step 6 (seat 02): beep after 5 seconds; the device answers "applied".
        sent = seat02.post("/api/v1/operator/devices/tray-02/settings", json={"settings": {"left_after_s": 5}})
        assert sent.status_code == 202, sent.text
        wait_until(lambda: (device(seat02, "tray-02").get("config") or {}).get("state") == "applied", 30,
                   "tray-02 applies left_after_s = 5")

        # --- Step 7: my notifications, then a practice rule on the event tray_left.
        my_notifications(seat02, room.practice_target.url + "/seat02")
        rule = seat02.post("/api/v1/operator/rules", json={
            "name": "Paper left (seat 2)", "device_id": "tray-02", "practice": True,
            "condition": {"type": "event", "event": "tray_left", "clear_event": "tray_cleared"}})
        assert rule.status_code == 201, f"part C: a practice rule: {rule.text}"

        def practice_events() -> list[str]:
            return [body["event"] for body in room.practice_target.delivered("/seat02")
                    if body.get("device_id") == "tray-02"]

        # The simulated paper lies 10 s (then 45 s): raised after 5 s, cleared when it is taken.
        wait_until(lambda: practice_events()[:2] == ["raised", "cleared"], 120,
                   "the learner's own target gets the practice alert raised, then cleared")
        assert not [body for body in room.town_target.delivered() if body.get("device_id") == "tray-02"], \
            "a practice device's alert never reaches the town's real target"
        alerts = seat02.get("/api/v1/operator/alerts/history").json()
        assert any(change.get("device_id") == "tray-02" for change in alerts), alerts

        # --- Step 9: the trainer promotes tray-01 on the server; it shows on the residents' map.
        room.type(guide["promote"])
        wait_until(lambda: "tray-01" in room.residents_see(), 30, "the promoted tray is on the residents' map")
        assert "tray-02" not in room.residents_see(), "the other seat's tray stays practice"
        trainer = log_in(room, "trainer", TRAINER_PASSWORD)
        audit = trainer.get("/api/v1/operator/audit").json()
        assert any(entry.get("action") == "device.promote" and "tray-01" in json.dumps(entry) for entry in audit)
    finally:
        room.close()
