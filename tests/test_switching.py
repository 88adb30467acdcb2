"""Switching rules written once (firmware/lib/switchboard.py), the same on a Pi and a board.

1. tests/vectors/switching.json, a table of situations, is played through the switchboard on
   CPython (as the Raspberry Pi imports it) and on the MicroPython WebAssembly port (as a
   board runs it): both must decide exactly alike, and as the table says.
2. The switch box's board code (kinds/switch_box/board) under MicroPython, with a fake clock
   and the in-memory broker of tests/firmware/stubs: what an operator would notice of the
   interlock, the longest on-time, a late command, link loss and a schedule.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from jisaku.contract import kinds
from jisaku.firmware.lib import switchboard

from .test_firmware import HERE, MEMORY_STEPS, ROOT, check_steady_heap, result, run_micropython

CASES = json.loads((Path(__file__).parent / "vectors" / "switching.json").read_text())["scenarios"]
BOARD = kinds.folder("switch_box").board_path
MOUNTS = [[str(ROOT / "firmware" / "lib"), "/lib"], [str(HERE / "stubs"), "/stubs"], [str(HERE), "/tests"]]
BOARD_SCENARIOS = {"rules": "rules()", "clockless": "clockless()", "link_loss_safe": "link_loss('safe')",
                   "link_loss_stay": "link_loss('stay')", "schedule": "schedule()"}
ON, OFF = 0, 1   # the example's relay board switches on a LOW input
# The switch box carries the switching rules (switchboard.py) on top of the library: it needs more
# than the 48 KB of the measuring examples (tests/test_firmware.py), still a fraction of an ESP32's
# ~110 KB free heap or a Pico W's ~180 KB.
SWITCH_BOX_HEAP_LIMIT = 72 * 1024


def player():
    spec = importlib.util.spec_from_file_location("switch_play", HERE / "switch_play.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def micropython() -> dict:
    """Every MicroPython scenario of this module, run in one Node process."""
    scenarios = [{"name": "table", "mounts": MOUNTS, "code": (
        "import json, switchboard, switch_play\n"
        "print('@@RESULT ' + json.dumps(switch_play.play(switchboard, json.loads(%r))))" % json.dumps(CASES))}]
    for name, call in BOARD_SCENARIOS.items():
        scenarios.append({"name": name, "mounts": MOUNTS + [[str(BOARD), "/"]],
                          "code": "import mp_switch\nmp_switch." + call})
    scenarios.append({"name": "memory", "mounts": MOUNTS + [[str(BOARD), "/"]],
                      "code": "import mp_switch_memory\nmp_switch_memory.start()", "repeat": MEMORY_STEPS,
                      "step": "mp_switch_memory.turns()", "after": "mp_switch_memory.published()"})
    return run_micropython(scenarios)


# ---------------------------------------------------------------- one table, two runtimes


def test_the_table_decides_alike_on_cpython_and_micropython(micropython):
    on_pi = json.loads(json.dumps(player().play(switchboard, CASES)))   # as JSON: tuples become lists
    on_board = result(micropython, "table")
    for case, pi, board in zip(CASES, on_pi, on_board):
        assert pi == board, f"{case['name']}: the Pi and the board decide differently"
    assert len(on_board) == len(CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_each_situation_is_decided_as_the_table_says(case):
    got = player().play_case(switchboard, case)
    if "expect_error" in case:
        assert got == {"error": case["expect_error"]}
        return
    for number, (step, record) in enumerate(zip(case["steps"], got["steps"])):
        for key, wanted in step.get("expect", {}).items():
            assert record[key] == wanted, f"step {number + 1} ({step['do']}): {key}"


# ---------------------------------------------------------------- the board


def test_board_safe_at_start_interlock_and_longest_on_time(micropython):
    found = result(micropython, "rules")
    assert found["at_start"] == {"heater": OFF, "sprinkler": OFF, "pump_1": OFF, "pump_2": OFF}
    assert found["clean_session"] is False, "a board with outputs keeps a persistent session"
    assert found["status_outputs"]["heater"] == {"name": "Road heater", "safe": "off", "max_on_min": 180}
    acks = found["acks"]
    assert acks["p1"] == {"id": "p1", "ok": True, "result": {"heater": 0, "pump_1": 1, "pump_2": 0, "sprinkler": 0}}
    for attempt in range(3):
        assert acks[f"p2-{attempt}"] == {"id": f"p2-{attempt}", "ok": False, "code": "interlock",
                                         "reason": "pump_1 is on: pump_1 and pump_2 may never be on together"}
    assert found["after_interlock"]["pump_1"] == ON and found["after_interlock"]["pump_2"] == OFF
    assert found["at_179_min"]["heater"] == ON and found["at_180_min"]["heater"] == OFF
    assert {"output": "heater", "on": 0, "by": "max_on"} in found["switched"]
    assert {"output": "pump_1", "on": 0, "by": "max_on"} in found["switched"]


def test_board_refuses_a_command_that_expired_while_it_was_cut_off(micropython):
    found = result(micropython, "rules")
    assert found["answered_while_away"] is False
    late = found["acks"]["late"]
    assert late["ok"] is False and late["code"] == "expired" and "expired 60 s before it arrived" in late["reason"]
    assert found["acks"]["in-time"]["ok"] is True, "the persistent session delivered both once it was back"
    assert found["after_return"]["sprinkler"] == OFF, "the late command moved nothing"
    assert found["after_return"]["heater"] == ON
    assert not [s for s in found["switched"] if s["output"] == "sprinkler" and s["on"] == 1]
    # every change is also a reading with the state of every output
    sent = [r["v"] for batch in found["readings"] for r in (batch if isinstance(batch, list) else [batch])]
    assert {"heater_on": 1, "pump_1_on": 0, "pump_2_on": 0, "sprinkler_on": 0} in sent


def test_board_without_a_clock_refuses_expiring_commands_and_says_so(micropython):
    found = result(micropython, "clockless")
    assert found["acks"]["a"]["code"] == "no_clock"
    assert found["acks"]["b"]["ok"] is True
    assert found["status"]["schedule"] == "no clock"
    assert found["config_error"] == ("config.json: [switching] interlocks name 'pump_9', which is not an output"
                                     " (there are heater, pump_1, pump_2, sprinkler)")


def test_board_link_loss_safe_goes_safe_after_the_limit(micropython):
    found = result(micropython, "link_loss_safe")
    assert found["before"]["heater"] == ON and found["before"]["sprinkler"] == ON
    assert found["at_14_min"] == found["before"]
    assert found["at_16_min"] == {"heater": OFF, "sprinkler": OFF, "pump_1": OFF, "pump_2": OFF}
    assert {"output": "heater", "on": 0, "by": "link_loss"} in found["switched"], "reported once back"


def test_board_link_loss_stay_keeps_the_outputs(micropython):
    found = result(micropython, "link_loss_stay")
    assert found["at_16_min"] == found["before"]
    assert not [s for s in found["switched"] if s["by"] == "link_loss"]


def test_board_schedule_from_afar_runs_with_the_broker_down(micropython):
    found = result(micropython, "schedule")
    first, second = found["config_acks"][:2]
    assert first == {"rev": 1, "ok": True}
    assert second["ok"] is False and "output 'boiler' is not one of this device's outputs" in second["reason"]
    assert found["at_0459"]["sprinkler"] == OFF
    assert found["at_0500"]["sprinkler"] == ON
    assert found["at_0600"]["sprinkler"] == OFF
    assert [s for s in found["switched"] if s["by"] == "schedule"] == [
        {"output": "sprinkler", "on": 1, "by": "schedule"}, {"output": "sprinkler", "on": 0, "by": "schedule"}]


def test_board_steady_loop_stays_small_and_does_not_grow(micropython, record_property):
    """10,000 turns with commands, refusals, a schedule and the longest on-time at work."""
    check_steady_heap(micropython["memory"], "switch_box", SWITCH_BOX_HEAP_LIMIT, record_property)


def test_a_boards_expiry_is_read_to_the_second_not_as_a_32_bit_float():
    """ESP32 / Pico W floats would put 1764750000.0 a minute off: the board reads the digits."""
    command = {"do": "switch", "expires": 1764750000.0}
    payload = b'{"do": "switch", "args": {"output": "heater", "on": true}, "expires": 1764750000.9}'
    assert switchboard.exact_expires(command, payload)["expires"] == 1764750000
    assert switchboard.exact_expires({"expires": "soon"}, b'{"expires": "soon"}')["expires"] == "soon"
    assert switchboard.exact_expires({"do": "switch"}, b'{"do": "switch"}') == {"do": "switch"}
