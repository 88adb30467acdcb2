"""Memory of the switch box's steady loop under MicroPython (see mp_memory.py for the others).

Four relays, an operator's command every 50 turns (some refused by the interlock, each with an
expiry), a schedule and the longest on-time at work. Test-only: not shipped to boards.
"""

import clock
import harness
from harness import broker, result

TURNS = 500
NAMES = ("pump_1", "pump_2", "heater", "sprinkler")
sent = [0]
board = ft = None


def _count_only(topic, payload, retain, qos):
    sent[0] += 1  # the stand-in broker keeps no messages here: its memory is not the board's


def start():
    global board, ft
    from switchbox import SwitchBox
    broker._store = _count_only
    ft = harness.FakeTime()
    clock.set_unix(1764705000)
    boot = harness.boot_config("heater-1", {"interval_s": 5, "schedule": [
        {"output": "sprinkler", "on": "05:00", "off": "05:10"}, {"output": "heater", "on": "05:20", "off": "05:25"}]})
    boot["switching"] = {"link_loss_min": 15, "interlocks": [["pump_1", "pump_2"]]}
    boot["outputs"] = {}
    for number, name in enumerate(NAMES):
        boot["outputs"][name] = {"pin": 16 + number, "active_high": False, "max_on_min": 1}
    board = harness.new_board(SwitchBox, boot)


def turns():
    for turn in range(TURNS):
        if turn % 50 == 0:
            command = '{"id":"c%d","do":"switch","args":{"output":"%s","on":%s},"expires":1864705000.0}' % (
                turn, NAMES[(turn // 50) % 4], "true" if turn % 100 == 0 else "false")
            broker.deliver("jisaku/heater-1/cmd", command.encode())
        board.turn()
        ft.advance(board.app.POLL_MS)


def published():
    result(sent[0])
