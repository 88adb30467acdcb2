# Helpers for the firmware tests under MicroPython: a fake clock, a board, results.
#
# Test-only: not shipped to boards.


import json
import os

import clock
from umqtt import simple

broker = simple.broker
DEVICE = "tray-1"
SECRET = "s3cret"


def result(value):
    # Hand a value back to pytest.
    print("@@RESULT " + json.dumps(value))


class FakeTime:
    # Time that moves only when the test says so. The board's RTC starts at its epoch + 1 h.

    def __init__(self, board_start=3600):
        self.ms = 1000
        self.board_start = board_start
        clock.ticks_ms = self.ticks_ms
        clock.board_time = self.board_time
        clock.sleep_ms = self.advance
        clock.offset = None
        clock.synced_at = None

    def ticks_ms(self):
        return self.ms

    def board_time(self):
        return self.board_start + self.ms // 1000

    def advance(self, ms):
        self.ms += ms


def boot_config(device_id=DEVICE, settings=None, pins=None, ntp=None):
    return {"device_id": device_id, "secret": SECRET, "wifi": {"ssid": "office", "password": "pw"},
            "broker": {"host": "192.168.1.10", "port": 1883}, "settings": settings or {},
            "pins": pins or {}, "ntp": ntp}


def write_config(boot, path="/config.json"):
    with open(path, "w") as f:
        json.dump(boot, f)


def new_board(app_class, boot):
    import board
    broker.users[boot["device_id"]] = SECRET
    return board.Board(app_class, boot, outbox_folder="/outbox")


def run(board, ft, seconds, step_ms=None):
    # Turn the board's loop for ``seconds`` of fake time.
    step_ms = step_ms or board.app.POLL_MS
    end = ft.ms + int(seconds * 1000)
    while ft.ms < end:
        board.turn()
        ft.advance(step_ms)


def sent(channel, device=DEVICE):
    # Payloads (text) the board published on one of its channels.
    return [p.decode() for p in broker.on("jisaku/%s/%s" % (device, channel))]


def wipe(folder="/outbox"):
    try:
        for name in os.listdir(folder):
            os.remove(folder + "/" + name)
    except OSError:
        pass
