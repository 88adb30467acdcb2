"""A MicroPython board updates its app from afar and is never left dead (docs/updates.md, "On a board").

The firmware runs under real MicroPython (the WebAssembly port, tests/firmware/run.mjs); the
bundles are real, signed with jisaku.gateway.bundle_signing, and served by a real HTTP server
in this process that answers as dashboard/bundles.py does (device id:secret as HTTP Basic,
Range → 206). The port has no sockets of its own: the stand-in socket module relays each
connection to this server over a real TCP connection (tests/firmware/stubs/socket.py).
Each scenario powers a board on again and again (tests/firmware/mp_ota.py), its flash kept,
its time driven by a fake clock: nothing here waits for real time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from jisaku.contract.bundles import read_header
from jisaku.gateway.bundle_signing import build_bundle, load_private_key, make_keys

from .test_firmware import FIRMWARE, HERE, boards, run_micropython

TRAY = boards()["printer_tray"]
DEVICE, SECRET = "tray-1", "s3cret"
# An ESP32 without PSRAM has ~110 KB free for Python: the update must stay well under that.
UPDATE_HEAP_LIMIT = 88 * 1024    # 80 % of it


class BundleServer:
    """Serves bundles as the dashboard does: GET /api/v1/devices/tray-1/bundles/<version>.

    ``flip[version] = offset`` flips one byte of that bundle on the way (a damaged download).
    """

    def __init__(self):
        self.bundles: dict[str, bytes] = {}
        self.flip: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.answer(self)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        expected = "Basic " + base64.b64encode(f"{DEVICE}:{SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return self.send(request, 401, b"wrong id or secret")
        prefix = f"/api/v1/devices/{DEVICE}/bundles/"
        version = request.path[len(prefix):] if request.path.startswith(prefix) else None
        data = self.bundles.get(version)
        if data is None:
            return self.send(request, 404, b"no such bundle")
        first, _, last = request.headers.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")
        first, last = int(first), min(int(last or len(data) - 1), len(data) - 1)
        if first >= len(data):
            return self.send(request, 416, b"")
        body = bytearray(data[first:last + 1])
        flip = self.flip.get(version)
        if flip is not None and first <= flip <= last:
            body[flip - first] ^= 0x01
        self.send(request, 206, bytes(body), {"Content-Range": f"bytes {first}-{last}/{len(data)}"})

    @staticmethod
    def send(request, code: int, body: bytes, headers: dict | None = None) -> None:
        request.send_response(code)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def stop(self):
        self.http.shutdown()


def make_bundle(tmp: Path, folder: Path, version: str) -> tuple[bytes, str]:
    """A real bundle of ``folder`` signed with a fresh town key: its bytes and its manifest's SHA-256."""
    out = tmp / f"printer_tray-{version}.bundle"
    build_bundle(folder, version, "printer_tray", "board", load_private_key(tmp), out)
    data = out.read_bytes()
    with open(out, "rb") as stream:
        header = read_header(stream)
    return data, hashlib.sha256(header.manifest_bytes).hexdigest()


def handmade_bundle(manifest: dict, files: list[bytes]) -> bytes:
    """A bundle as a board reads it, made by hand, e.g. with a file name jisaku bundle build refuses.

    Its signature is zeros: a board does not check it (it trusts the offer's manifest_sha256).
    """
    signed = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return b"jisaku-bundle 1\n" + b"0" * 128 + b"\n" + str(len(signed)).encode() + b"\n" + signed + b"".join(files)


def refusal_cases(tmp: Path, server: BundleServer) -> list[list]:
    """[offer id, version, bytes, manifest_sha256, server] of offers a board must refuse."""
    def digest_of(data: bytes) -> str:
        lines = data.split(b"\n", 3)
        return hashlib.sha256(lines[3][:int(lines[2])]).hexdigest()

    pi = tmp / "pi-app"
    pi.mkdir()
    (pi / "main.py").write_text("print('a Pi app')\n")
    out = tmp / "pi.bundle"
    build_bundle(pi, "2.0.0", "printer_tray", "pi", load_private_key(tmp), out)
    server.bundles["2.0.0"] = out.read_bytes()
    sneaky = b"import os\n"
    server.bundles["2.0.1"] = handmade_bundle(
        {"format": 1, "kind": "printer_tray", "runs_on": "board", "version": "2.0.1", "made": 1.0, "key_id": "0" * 16,
         "files": [{"path": "main.py", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()},
                   {"path": "../boot.py", "size": len(sneaky), "sha256": hashlib.sha256(sneaky).hexdigest()}]},
        [b"", sneaky])
    good, _ = make_bundle(tmp, TRAY, "2.0.2")
    server.bundles["2.0.2"] = good
    return [[81, "2.0.0", len(server.bundles["2.0.0"]), digest_of(server.bundles["2.0.0"]), server.url],
            [82, "2.0.1", len(server.bundles["2.0.1"]), digest_of(server.bundles["2.0.1"]), server.url],
            [83, "2.0.2", len(good), "0" * 64, server.url],                 # not the manifest's hash
            [84, "2.0.3", 2 * 1024 * 1024, "0" * 64, server.url],           # more than a board takes
            [85, "2.0.2", len(good), digest_of(good), None]]                 # config.json without server


SCENARIOS = {  # scenario: (version, folder)
    "goes_through": ("1.1.0", "tray"),
    "corrupted": ("1.2.0", "tray"),
    "crashes": ("1.3.0", "broken"),
    "never_online": ("1.4.0", "tray"),
    "resumes": ("1.5.0", "tray"),
    "memory": ("1.6.0", "tray"),
    "power_cuts": ("1.7.0", "tray"),
}


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    """The bundles, the server, and every scenario run in one Node process."""
    tmp = tmp_path_factory.mktemp("board-updates")
    make_keys(tmp)
    broken = tmp / "broken"
    shutil.copytree(TRAY, broken)
    # A typo in the new version's main.py: it fails on every start.
    (broken / "main.py").write_text("import board\nfrom traay import PrinterTray\n\nboard.start(PrinterTray)\n")
    server = BundleServer()
    sent = {}
    for name, (version, folder) in SCENARIOS.items():
        data, digest = make_bundle(tmp, broken if folder == "broken" else TRAY, version)
        server.bundles[version] = data
        sent[name] = data
        if name == "corrupted":
            server.flip[version] = len(data) - 100   # inside the last file
    refusals = refusal_cases(tmp, server)
    mounts = [[str(FIRMWARE), "/"], [str(HERE / "stubs"), "/stubs"], [str(HERE), "/tests"], [str(TRAY), "/"]]
    scenarios = []
    for name, (version, _) in SCENARIOS.items():
        data = sent[name]
        digest = hashlib.sha256(data[data.index(b"\n", 16 + 129) + 1:][:int(data.split(b"\n")[2])]).hexdigest()
        scenario = {"name": name, "mounts": mounts,
                    "code": f"import mp_ota\nmp_ota.{name}({server.url!r}, {len(data)}, {digest!r})"}
        if name == "memory":  # in steps, so that run.mjs measures the live heap between them
            scenario.update(code=f"import mp_ota\nmp_ota.memory_setup({server.url!r}, {len(data)}, {digest!r})",
                            repeat=2, step="mp_ota.memory_step()", after="mp_ota.memory_update()")
        scenarios.append(scenario)
    scenarios.append({"name": "refusals", "mounts": mounts,
                      "code": f"import mp_ota\nmp_ota.refusals({refusals!r})"})
    try:
        yield run_micropython(scenarios), sent
    finally:
        server.stop()


def outcome(runs: dict, name: str) -> dict:
    run = runs[name]
    assert run["error"] is None, f"{name} failed under MicroPython:\n{run['error']}\n{run['output']}"
    (value,) = run["results"]
    return value


def states(found: dict) -> list[str]:
    return [v["state"] for v in found["updates"]]


def test_an_update_goes_through_and_the_new_version_reports_running(town):
    runs, sent = town
    found = outcome(runs, "goes_through")
    # offer → restart; update at start → restart; new version on trial → running; it stays.
    assert found["boots"] == ["reset", "reset", "off", "off"], runs["goes_through"]["output"]
    assert states(found) == ["downloading", "verified", "switched", "running"]
    downloading, _, switched, running = found["updates"]
    assert downloading == {"offer": 12, "version": "1.1.0", "state": "downloading", "bytes": len(sent["goes_through"])}
    assert switched["from"] == ""                      # "": the version jisaku flash put on
    assert running == {"offer": 12, "version": "1.1.0", "state": "running"}
    assert found["status_on_trial"]["version"] == "1.1.0" and found["status"]["version"] == "1.1.0"
    assert found["state"]["active"] == "1.1.0" and found["state"]["trial"] is None
    assert found["state"]["previous"] is None and 12 in found["state"]["done"]
    assert found["installed"]["tray.py"] == (TRAY / "tray.py").read_text()
    assert found["installed"]["main.py"] == (TRAY / "main.py").read_text()
    assert found["root_main"] == (TRAY / "main.py").read_text(), "the installed version is never touched"
    assert found["update_folder"] is None
    # In pieces that fit a board: 4 kB at most per request.
    for asked in found["requests"]:
        first, last = map(int, asked.removeprefix("Range: bytes=").split("-"))
        assert last - first < 4096


def test_a_corrupted_download_is_refused_and_the_board_keeps_its_version(town):
    found = outcome(runs := town[0], "corrupted")
    # The update at start refuses; the installed version starts in that same start and runs.
    assert found["boots"] == ["reset", "off", "off"], runs["corrupted"]["output"]
    assert states(found) == ["downloading", "refused"]
    refused = found["updates"][-1]
    assert refused["reason"] == "hash" and "do not match the SHA-256" in refused["detail"]
    assert len(refused["detail"]) <= 256
    assert found["state"]["active"] is None and 20 in found["state"]["done"]
    assert found["app"] == ["state.json"], "the refused download is not kept"
    assert found["status"]["version"] is None


def test_a_version_that_crashes_on_start_is_rolled_back_by_the_board(town):
    found = outcome(runs := town[0], "crashes")
    # offer; switch; three starts that fail (each a reset); back on the installed version.
    assert found["boots"] == ["reset", "reset", "reset", "reset", "reset", "off"], runs["crashes"]["output"]
    assert "ImportError" in runs["crashes"]["output"] and "traay" in runs["crashes"]["output"]
    assert states(found) == ["downloading", "verified", "switched", "rolled_back"]
    rolled_back = found["updates"][-1]
    assert rolled_back["reason"] == "crash" and "3 times" in rolled_back["detail"]
    assert found["state"]["active"] is None and found["state"]["trial"] is None
    assert found["app"] == ["state.json"]
    assert found["status"]["version"] is None          # the restored version is online and says so


def test_a_version_that_never_gets_online_within_trial_s_is_rolled_back(town):
    found = outcome(runs := town[0], "never_online")
    assert found["boots"] == ["reset", "reset", "reset", "off"], runs["never_online"]["output"]
    assert states(found) == ["downloading", "verified", "switched", "rolled_back"]
    rolled_back = found["updates"][-1]
    assert rolled_back["reason"] == "no_report" and "30 s" in rolled_back["detail"]
    assert found["state"]["active"] is None and 40 in found["state"]["done"]


def test_a_dropped_link_and_a_power_cut_mid_download_go_on_from_what_is_on_flash(town):
    runs, sent = town
    found = outcome(runs, "resumes")
    assert found["boots"] == ["reset", "off", "reset", "off"], runs["resumes"]["output"]
    assert states(found) == ["downloading", "downloading", "verified", "switched", "running"]
    ranges = [tuple(map(int, r.removeprefix("Range: bytes=").split("-"))) for r in found["requests"]]
    # The 3rd request was cut after 700 bytes: the 4th asks from there, not from the start.
    assert ranges[3][0] == ranges[2][0] + 700
    # The 5th was cut after 900 bytes by a power cut: after the restart the header and the
    # manifest (kept on flash, checked again) come first, then the file goes on from there.
    resumed = [r for r in ranges[5:] if r[0] > 0 and r[0] == ranges[4][0] + 900]
    assert resumed, ranges
    # No piece is fetched again from its start after a cut.
    starts = [first for first, _ in ranges if first > 0]
    assert starts.count(ranges[2][0]) == 1 and starts.count(ranges[4][0]) == 1, ranges


def test_a_power_cut_just_before_or_after_the_switch_leaves_a_board_that_starts(town):
    found = outcome(runs := town[0], "power_cuts")
    assert found["boots"] == ["reset", "off", "off", "off", "off"], runs["power_cuts"]["output"]
    # Cut before the new state was renamed into place: the board starts its old version, and
    # the update, still waiting, goes through at the next start from the files on flash.
    assert found["first_cut"] is None, "no state written yet: the installed version starts"
    assert all(r == "Range: bytes=0-299" for r in found["asked_again"]), "nothing but the header again"
    # Cut just after: the new version starts, on trial, and reports running.
    assert found["second_cut"]["active"] == "1.7.0" and found["second_cut"]["trial"]["starts"] == 0
    assert states(found)[-1] == "running" and states(found).count("switched") == 2
    assert found["state"]["active"] == "1.7.0" and found["state"]["trial"] is None
    assert found["update_folder"] is None, "the offer the cut left behind is cleared"


def test_offers_a_board_must_not_install_are_refused_with_the_reason(town):
    found = outcome(runs := town[0], "refusals")
    assert found["boots"] == ["reset", "off"] * 5, runs["refusals"]["output"]
    refused = [v for v in found["updates"] if v["state"] == "refused"]
    assert [(v["offer"], v["reason"]) for v in refused] == [
        (81, "kind"), (82, "path"), (83, "hash"), (84, "size"), (85, "no_server")]
    assert "not for a MicroPython board" in refused[0]["detail"]
    assert "../boot.py" in refused[1]["detail"]
    assert "--server" in refused[4]["detail"]
    assert all(len(v["detail"]) <= 256 for v in refused)
    assert found["state"]["active"] is None and found["app"] == ["state.json"]
    assert found["root_main"] == (TRAY / "main.py").read_text()
    assert found["status"]["version"] is None


def test_the_update_fits_the_heap_of_an_esp32_without_psram(town, record_property):
    """The most heap the update at start has in use stays well under the ~110 KB an ESP32
    without PSRAM has free. Measured on this port as (see tests/firmware/mp_ota.py):

    - code: what stays in the heap once versions.py, updater.py and the modules they use are
      loaded (live, measured between calls);
    - compile: everything loading them allocated (compiling is the moment it peaks);
    - download: everything the update allocated from boot.py to the switch, code loaded.

    Nothing freed is taken off the last two, so the peak is at most max(compile, code + download).
    """
    run = town[0]["memory"]
    assert run["error"] is None, f"memory failed under MicroPython:\n{run['error']}\n{run['output']}"
    before, loaded, found = run["results"]
    assert found["boots"] == ["reset"], run["output"]
    assert found["state"]["active"] == "1.6.0" and found["state"]["trial"]["starts"] == 0   # switched
    code = loaded - before
    peak = max(found["compile"], code + found["download"])
    record_property("update_peak_heap_bytes", peak)
    print(f"update at start: at most {peak} bytes of heap (code {code} live, compiling it {found['compile']},"
          f" the download and switch {found['download']})")
    assert 0 < code < found["compile"]
    assert peak < UPDATE_HEAP_LIMIT, found["per_request"]


# ---------------------------------------------------------------- jisaku flash


def test_jisaku_flash_writes_the_server_and_puts_boot_py_on_the_board(monkeypatch, tmp_path):
    from jisaku.cli import flash, parser

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JISAKU_WIFI_SSID", "townhall-iot")
    def request(*more):
        args = parser().parse_args(["flash", "printer_tray", "--id", "tray-9", "--broker-host", "192.168.1.10", *more])
        return flash.make_request(args, "mqtt://192.168.1.10:1883")

    config = flash.board_config(request("--server", "http://192.168.1.10:8000/"), "s3cret")
    assert config["server"] == "http://192.168.1.10:8000"
    assert "server" not in flash.board_config(request(), "s3cret")   # no --server: the board refuses offers
    for wrong in ("https://192.168.1.10", "192.168.1.10:8000", "http://127.0.0.1:8000"):
        with pytest.raises(flash.FlashError, match="--server"):
            request("--server", wrong)
    steps = flash.build_plan(request(), FIRMWARE, "/dev/ttyUSB0", "given", False, "mqtt://192.168.1.10:1883")
    copied = [dest for step in steps if step.do == "copy" for _, dest in step.args["files"]]
    assert "/boot.py" in copied and "/lib/versions.py" in copied and "/lib/updater.py" in copied
    assert "/app/state.json" in flash.FORGET_SETTINGS, "flashed again: the files just copied are what runs"
