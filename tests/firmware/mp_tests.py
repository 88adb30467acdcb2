"""Firmware test scenarios, run under real MicroPython by run.mjs; pytest checks their results.

Test-only: not shipped to boards. Each function is one scenario in a fresh interpreter.
"""

import json
import os

import harness
from harness import broker, result, sent


# ---------------------------------------------------------------- wire contract


def vectors(calls):
    """Encode each shared test vector with the firmware's protocol module."""
    import protocol

    def value(x):
        if x == "__nan__":
            return float("nan")
        if x == "__inf__":
            return float("inf")
        if isinstance(x, dict):
            return {k: value(v) for k, v in x.items()}
        return x

    out = []
    for call in json.loads(calls):
        try:
            if call["kind"] == "readings":
                items = [protocol.reading(r.get("seq"), value(r.get("v")), value(r.get("ts")), r.get("age"))
                         for r in call["items"]]
                payload = protocol.dumps(items[0]) if call["single"] else protocol.encode_readings(items)
            elif call["kind"] == "event":
                r = call["item"]
                payload = protocol.encode_event(r.get("seq"), r.get("event"), r.get("v"), r.get("ts"))
            elif call["kind"] == "status":
                payload = protocol.encode_status(call["state"], call["info"])
            else:
                payload = protocol.dumps({"seq": 1, "v": {"x": 1}})
                protocol.topic(call["device_id"], "data")
            out.append({"payload": payload.decode()})
        except protocol.ProtocolError as err:
            out.append({"error": err.reason})
    result(out)


# ---------------------------------------------------------------- printer tray


def _tray(settings=None, network_up=True):
    import machine
    import network
    from tray import PrinterTray
    network.up = network_up
    broker.up = network_up
    ft = harness.FakeTime()
    board = harness.new_board(PrinterTray, harness.boot_config("tray-1", settings))
    return ft, board, machine.pwms[-1]


def tray_without_network():
    """Paper left on the tray with no Wi-Fi at all: beeps on time; events sent once back."""
    import machine
    import network
    ft, board, buzzer = _tray({"left_after_s": 30, "report_every_s": 60}, network_up=False)
    machine.light_u16 = 60000          # bright: no paper
    harness.run(board, ft, 5)
    machine.light_u16 = 5000           # a printout shades the sensor
    placed = ft.ms
    sound = []                         # (seconds after the paper came, buzzer on?)
    was = False
    while ft.ms - placed < 40000:
        board.turn()
        on = buzzer.duty > 0
        if on != was:
            sound.append([(ft.ms - placed) / 1000, on])
            was = on
        ft.advance(100)
    machine.light_u16 = 60000          # taken
    harness.run(board, ft, 2)
    queued = len(board.outbox)
    network.up = broker.up = True      # the network comes back
    harness.run(board, ft, 30)
    result({"sound": sound[:6], "beeping_after_taken": buzzer.duty > 0, "queued_offline": queued,
            "events": sent("event"), "data": sent("data"), "status": sent("status"),
            "queued_after": len(board.outbox)})


def tray_settings_and_commands():
    """Operators' config (refused and accepted, kept across a restart) and commands."""
    import network
    ft, board, buzzer = _tray()
    harness.run(board, ft, 3)
    topic = "jisaku/tray-1/"
    broker.deliver(topic + "config", json.dumps({"rev": 2, "left_after_s": 0}), retain=True)
    harness.run(board, ft, 1)
    after_bad = board.app.left_after_s
    broker.deliver(topic + "config", json.dumps({"rev": 3, "left_after_s": 45, "colour": 1}), retain=True)
    harness.run(board, ft, 1)
    broker.deliver(topic + "config", json.dumps({"rev": 4, "left_after_s": 45}), retain=True)
    harness.run(board, ft, 1)
    after_good = board.app.left_after_s
    for i, command in enumerate([{"do": "report_status"}, {"do": "test_buzzer"}, {"do": "report_now"},
                                 {"do": "self_destruct"}, {"do": 5}]):
        command["id"] = "c%d" % i
        if i == 1:
            changes = buzzer.changes
        broker.deliver(topic + "cmd", json.dumps(command))
        harness.run(board, ft, 0.2)
    harness.run(board, ft, 3)
    beeps = (buzzer.changes - changes) / 2     # each beep: on, then off
    with open("/settings.json") as f:
        saved = json.load(f)
    # Restart with no network: the saved settings are used.
    network.up = broker.up = False
    from tray import PrinterTray
    again = harness.new_board(PrinterTray, harness.boot_config("tray-1"))
    result({"after_bad": after_bad, "after_good": after_good, "acks": sent("config/ack"),
            "cmd_acks": sent("cmd/ack"), "test_beeps": beeps, "saved": saved,
            "after_restart": again.app.left_after_s, "data": sent("data")})


# ---------------------------------------------------------------- link, outbox, clock


def reconnect_and_backlog():
    """The broker goes away: last will, readings kept, then sent oldest first in batches."""
    ft, board, _ = _tray({"report_every_s": 5})
    harness.run(board, ft, 4)
    online = sent("status")
    broker.go_down()
    harness.run(board, ft, 120)        # 24 readings while the broker is away
    waiting = len(board.outbox)
    files = [n for n in os.listdir("/outbox") if n[0] == "q"]
    broker.up = True
    harness.run(board, ft, 180)
    result({"online": online, "status": sent("status"), "waiting": waiting, "files": files,
            "data": sent("data"), "connects": broker.connects, "left": len(board.outbox)})


def outbox_durable():
    """Messages survive a reset; seq goes on; a full outbox drops the oldest and counts them."""
    import outbox as ob
    ft = harness.FakeTime()
    writes = []
    real_open = open

    def counting_open(path, mode="r"):
        if mode != "r":
            writes.append(path)
        return real_open(path, mode)

    ob.open = counting_open
    box = ob.Outbox("/outbox")
    for i in range(25):
        box.put("data", {"v": {"n": i}}, taken=ft.board_time())
        box.save()
    box.save(force=True)             # what a board has in memory is lost at a reset...
    box = ob.Outbox("/outbox")       # ...but the flash keeps the rest: a reset
    first = box.next_batch()
    seq_after_reset = box.put("data", {"v": {"n": 99}})
    writes_25 = len(writes)
    for i in range(1200):            # far more than fits: the oldest go
        box.put("data", {"v": {"n": 1000 + i}}, taken=ft.board_time())
        box.save()
    box.save(force=True)
    kept = len(box)
    dropped = box.dropped
    box = ob.Outbox("/outbox")
    batch = box.next_batch()
    result({"first": first, "seq_after_reset": seq_after_reset, "writes_25": writes_25,
            "kept": kept, "dropped": dropped, "dropped_after_reset": box.dropped,
            "len_after_reset": len(box), "oldest_after_overflow": batch[1][0],
            "writes_total": len(writes)})


def online_never_writes_flash():
    """With the broker in reach, readings go from memory to the broker: no flash writes."""
    import outbox as ob
    writes = []
    real_open = open

    def counting_open(path, mode="r"):
        if mode != "r":
            writes.append(path)
        return real_open(path, mode)

    ob.open = counting_open
    ft, board, _ = _tray({"report_every_s": 5})
    harness.run(board, ft, 600)
    result({"writes": writes, "readings": len(sent("data"))})


def clock_and_epochs():
    """NTP on a board whose RTC counts from 2000 (or 1970): the same Unix time either way."""
    import clock
    import socket
    out = {}
    for name, board_start in (("epoch2000", 3600), ("epoch1970", 1700000000)):
        ft = harness.FakeTime(board_start)
        socket.ntp_unix = 1732300000
        ok = clock.sync_ntp("ntp.example")
        ft.advance(10000)
        out[name] = [ok, clock.unix()]
    ft = harness.FakeTime()
    socket.ntp_unix = None
    out["unreachable"] = [clock.sync_ntp("ntp.example"), clock.unix()]
    import nmea
    out["days_2024_11_22"] = nmea.days_from_civil(2024, 11, 22)
    result(out)


def ntp_turns_age_into_ts():
    """Readings taken before the clock was set get ts once it is; with no time server, age."""
    import machine
    import network
    import socket
    from tray import PrinterTray
    machine.light_u16 = 60000
    ft = harness.FakeTime()
    socket.ntp_unix = None
    network.up = False
    board = harness.new_board(PrinterTray, harness.boot_config("tray-1", {"report_every_s": 10}, ntp="ntp.example"))
    harness.run(board, ft, 25)       # three readings, no network, no clock
    network.up = True
    harness.run(board, ft, 15)       # network, but no time server: sent with age
    no_ntp = sent("data")
    asked = socket.asked
    board.link._lost()               # drop the connection for a moment
    network.up = False
    harness.run(board, ft, 20)
    socket.ntp_unix = 1732300000 + ft.board_time()
    board.ntp_next = ft.ms           # (do not wait for the next retry)
    network.up = True
    harness.run(board, ft, 40)
    result({"no_ntp": no_ntp, "all": sent("data"), "asked": asked, "unix": clock_unix()})


def clock_unix():
    import clock
    return clock.unix()


def config_file_errors():
    import board
    import config
    from tray import PrinterTray
    out = []
    for text in (None, "{not json", json.dumps({"device_id": "tray-1"}),
                 json.dumps(harness.boot_config(settings={"left_after_s": 99999})),
                 json.dumps(harness.boot_config(settings={"colour": 1}))):
        try:
            os.remove("/config.json")
        except OSError:
            pass
        if text is not None:
            with open("/config.json", "w") as f:
                f.write(text)
        try:
            boot = config.load()
            board.app_settings(PrinterTray, boot)
            out.append("ok")
        except config.ConfigError as err:
            out.append(str(err))
    result(out)


# ---------------------------------------------------------------- snow gauge


def snow_gauge():
    import machine
    from gauge import SnowGauge, ASSUMED_SPEED_OF_SOUND
    ft = harness.FakeTime()
    broker.up = True

    def echo_us(cm):
        return int(cm * 20000 / ASSUMED_SPEED_OF_SOUND)

    board = harness.new_board(SnowGauge, harness.boot_config("snow-1", {"interval_s": 60, "mount_height_cm": 200}))
    # five pings: 162.5 cm three times, one stray echo (a snowflake), one lost
    machine.echoes = [echo_us(162.5), echo_us(30), -1, echo_us(162.6), echo_us(162.4)]
    harness.run(board, ft, 3)
    machine.echoes = [-1, -1, -1, echo_us(150), -2]       # too few came back
    harness.run(board, ft, 60)
    machine.echoes = [echo_us(150)] * 5
    broker.deliver("jisaku/snow-1/config", json.dumps({"rev": 1, "samples": 20}), retain=True)
    harness.run(board, ft, 1)
    broker.deliver("jisaku/snow-1/config", json.dumps({"rev": 2, "mount_height_cm": 210}), retain=True)
    harness.run(board, ft, 3)   # new settings: measures at once
    gauge = board.app
    result({"data": sent("data", "snow-1"), "acks": sent("config/ack", "snow-1"),
            "cold": gauge.depth([162.5] * 5, -10.0), "warm": gauge.depth([162.5] * 5, 20.0),
            "plain": gauge.depth([162.5] * 5)})


# A snowy day, one reading each: past alert_cm (50), wobbling between warn_cm (20) and
# alert_cm, below warn_cm, and up again (the same day as the Raspberry Pi's test).
SNOWY_DAY = [10, 45, 56, 35, 47, 58, 30, 12, 40, 62]


def snow_alarm():
    """The gauge's own alarm with no network, then operators' alarm levels from afar."""
    import config
    from board import app_settings
    import machine
    import network
    from gauge import SnowGauge, ASSUMED_SPEED_OF_SOUND
    ft = harness.FakeTime()
    network.up = broker.up = False

    def snow(cm):  # every ping answers as if the snow were this deep under a 200 cm mount
        machine.echo_default = int((200 - cm) * 20000 / ASSUMED_SPEED_OF_SOUND)

    board = harness.new_board(SnowGauge, harness.boot_config("snow-1", {"interval_s": 60}))
    alarmed = []
    for cm in SNOWY_DAY:
        snow(cm)
        harness.run(board, ft, 60)
        alarmed.append(board.app.alarmed)
    queued = len(board.outbox)
    network.up = broker.up = True          # the network comes back
    harness.run(board, ft, 90)             # Wi-Fi and the broker again, then the backlog
    offline_events = sent("event", "snow-1")
    topic = "jisaku/snow-1/config"
    broker.deliver(topic, json.dumps({"rev": 1, "warn_cm": 40, "alert_cm": 30}), retain=True)
    harness.run(board, ft, 1)
    broker.deliver(topic, json.dumps({"rev": 2, "alert_cm": 15}), retain=True)   # below warn_cm 20
    harness.run(board, ft, 1)
    kept = [board.app.warn_cm, board.app.alert_cm]
    snow(12)
    harness.run(board, ft, 60)             # below warn_cm: the alarm clears
    broker.deliver(topic, json.dumps({"rev": 3, "warn_cm": 10, "alert_cm": 30}), retain=True)
    snow(35)
    harness.run(board, ft, 3)              # new settings: measures at once, 35 cm >= 30 cm
    network.up = broker.up = False         # restart with no network: the saved levels are used
    again = harness.new_board(SnowGauge, harness.boot_config("snow-1"))
    wrong = []
    for settings in ({"warn_cm": 50, "alert_cm": 50}, {"alert_cm": 2000}):
        try:
            app_settings(SnowGauge, harness.boot_config("snow-1", settings))
            wrong.append("ok")
        except config.ConfigError as err:
            wrong.append(str(err))
    result({"alarmed": alarmed, "queued_offline": queued, "offline_events": offline_events,
            "events": sent("event", "snow-1"), "acks": sent("config/ack", "snow-1"), "kept": kept,
            "after_restart": [again.app.warn_cm, again.app.alert_cm], "config_json": wrong})


# ---------------------------------------------------------------- vehicle tracker


def nmea_line(body):
    total = 0
    for char in body:
        total ^= ord(char)
    return "$%s*%02X\r\n" % (body, total)


def rmc(hhmmss, lat, lon, knots="10.0", course="90.0", status="A", date="221124"):
    def dm(value, width):
        degrees = int(abs(value))
        return "%0*d%07.4f" % (width, degrees, (abs(value) - degrees) * 60)
    return nmea_line("GPRMC,%s.00,%s,%s,%s,%s,%s,%s,%s,%s,,,A" % (
        hhmmss, status, dm(lat, 2), "N" if lat >= 0 else "S", dm(lon, 3), "E" if lon >= 0 else "W",
        knots, course, date))


def nmea_parser():
    import nmea
    lines = [rmc("092750", 36.1408, 137.2522), rmc("092751", 36.1408, 137.2522, status="V"),
             nmea_line("GNGGA,092750.00,3608.4480,N,13715.1320,E,1,08,1.0,570.2,M,36.0,M,,"),
             nmea_line("GPGGA,092750.00,,,,,0,00,99.9,,,,,,"),
             rmc("092750", -33.8688, -151.2093, knots="", course=""),
             rmc("092750", 36.1408, 137.2522).replace("A*", "B*"),    # checksum no longer matches
             "$GPRMC,garbage", "", "$GPGSV,3,1,11,03,03,111,00*74"]
    result([nmea.parse(line) for line in lines])


def tracker():
    import machine
    from tracker import VehicleTracker
    ft = harness.FakeTime()
    broker.up = True
    board = harness.new_board(VehicleTracker, harness.boot_config("bus-1", {"every_s": 30, "every_m": 50}))
    uart = machine.uarts[-1]
    harness.run(board, ft, 3)
    lat, lon = 36.1408, 137.2522
    # 5 m/s east for 60 s: one sent at the start, then one every 50 m (every_m) or so.
    step = 0.0000555
    for second in range(60):
        line = rmc("0927%02d" % second, lat, lon + second * step, knots="9.7")
        if second == 10:
            uart.feed(b"\xff\xfe noise\n")
            uart.feed(line[:20].encode())      # half a sentence now, the rest next step
            board.turn()
            ft.advance(50)
            uart.feed(line[20:].encode())
        else:
            uart.feed(line.encode())
        if second == 5:
            uart.feed(rmc("092705", 0, 0, status="V").encode())   # no fix: ignored
        harness.run(board, ft, 1)
    # Standing still: only the every_s timer sends.
    for second in range(60, 95):
        uart.feed(rmc("0928%02d" % (second - 60), lat, lon + 59 * step, knots="0.0").encode())
        harness.run(board, ft, 1)
    broker.deliver("jisaku/bus-1/cmd", json.dumps({"id": "x", "do": "report_now"}))
    harness.run(board, ft, 0.2)
    uart.feed(rmc("092835", lat, lon + 59 * step, knots="0.0").encode())
    harness.run(board, ft, 1)
    broker.deliver("jisaku/bus-1/cmd", json.dumps({"id": "y", "do": "report_status"}))
    harness.run(board, ft, 0.2)
    result({"data": sent("data", "bus-1"), "cmd_acks": sent("cmd/ack", "bus-1")})


# ---------------------------------------------------------------- more than one broker


def broker_rotation():
    """Three brokers: the board starts at the first, moves on when it dies, round the list."""
    import network
    from umqtt import simple
    from tray import PrinterTray
    hosts = ["192.168.1.10", "192.168.1.11", "192.168.1.12"]
    boxes = {}
    for host in hosts:
        boxes[host] = simple.brokers[host] = simple.Broker()
        boxes[host].users[harness.DEVICE] = harness.SECRET
    a, b, c = [boxes[host] for host in hosts]
    network.up = True
    ft = harness.FakeTime()
    boot = harness.boot_config("tray-1", {"report_every_s": 5})
    boot["broker"] = "mqtt://192.168.1.10:1883 mqtt://192.168.1.11:1883, 192.168.1.12"
    board = harness.new_board(PrinterTray, boot)
    found = {}

    def where():
        return [host for host in hosts if boxes[host].client is not None]

    def until(done, limit_s):
        """Turn the loop until done(); the fake seconds it took, or None."""
        start = ft.ms
        while not done():
            if ft.ms - start > limit_s * 1000:
                return None
            harness.run(board, ft, 0.5)
        return (ft.ms - start) / 1000

    harness.run(board, ft, 12)
    found["first"] = where()
    a.go_down()                       # box A dies for good
    found["moved_s"] = until(lambda: where() == [hosts[1]], 120)
    found["tries_a"] = a.tries
    harness.run(board, ft, 12)
    b.go_down()                       # box B dies too, and C was never there:
    c.up = False                      # round the list, one try each at C and A, ...
    tried_a = a.tries
    found["round_s"] = until(lambda: a.tries > tried_a, 300)
    found["tries_while_all_down"] = [b.tries, c.tries, a.tries - tried_a]
    a.up = True                       # ... until A is back, which takes the board again
    found["back_to_a_s"] = until(lambda: where() == [hosts[0]], 300)
    harness.run(board, ft, 30)
    found["left"] = len(board.outbox)
    data = []
    for box in (a, b, c):
        data.append([p.decode() for p in box.on("jisaku/tray-1/data")])
    found["data"] = data
    found["status_b"] = [p.decode() for p in b.on("jisaku/tray-1/status")]
    found["subscribed_b"] = b.connects
    result(found)


def broker_addresses():
    """config.json's broker: one, several in one text, a list; mistakes say what to write."""
    import config
    out = []
    for value in ({"host": "192.168.1.10"}, "192.168.1.10:1884", "mqtt://box-a:1883 mqtt://box-b:1883",
                  "box-a, box-b", ["box-a", "box-b:1884"],
                  "mqtt://box-a:1883;mqtt://box-b", "mqtts://box-a:8883", {"port": 1883}, [], 1883):
        try:
            out.append(config.brokers(value))
        except config.ConfigError as err:
            out.append(str(err))
    result(out)
