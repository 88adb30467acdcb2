# Memory of each example's steady loop under MicroPython, turned 500 times per step.
#
# run.mjs calls ``turns()`` 20 times (10,000 turns) and measures the live heap after each.
# Test-only: not shipped to boards.


import harness
from harness import broker, result

TURNS = 500
board = ft = before_turn = None


def turns():
    for turn in range(TURNS):
        before_turn(board.outbox.seq + turn)
        board.turn()
        ft.advance(board.app.POLL_MS)


def _count_only(topic, payload, retain, qos):
    # The stand-in broker keeps no messages here: its memory is not the board's.
    sent[0] += 1


sent = [0]
broker._store = _count_only


def printer_tray():
    global board, ft, before_turn
    import machine
    from tray import PrinterTray
    ft = harness.FakeTime()
    board = harness.new_board(PrinterTray, harness.boot_config("tray-1", {"report_every_s": 5, "left_after_s": 3}))
    def before(turn):
        machine.light_u16 = 5000 if ft.ms % 10000 < 6000 else 60000   # paper comes and goes
    before_turn = before


def snow_gauge():
    global board, ft, before_turn
    import machine
    from gauge import SnowGauge
    ft = harness.FakeTime()
    machine.echo_default = 9000
    board = harness.new_board(SnowGauge, harness.boot_config("snow-1", {"interval_s": 1}))
    before_turn = lambda turn: None


def vehicle_tracker(lines):
    # ``lines``: NMEA sentences, fed one every fourth turn.
    global board, ft, before_turn
    import machine
    from tracker import VehicleTracker
    ft = harness.FakeTime()
    board = harness.new_board(VehicleTracker, harness.boot_config("bus-1", {"every_s": 1}))
    uart = machine.uarts[-1]
    state = [0]

    def before(turn):
        state[0] += 1
        if state[0] % 4 == 0:
            uart.feed(lines[(state[0] // 4) % len(lines)])
    before_turn = before


def published():
    result(sent[0])
