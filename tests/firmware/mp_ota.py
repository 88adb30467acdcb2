# Update scenarios under real MicroPython: a board powered on again and again, its flash kept.
#
# Test-only: not shipped to boards. pytest (tests/test_board_updates.py) runs a real HTTP
# server with real bundles; the stand-in socket relays the board's requests to it. Each
# power_on() forgets everything in memory, as a reset does, and keeps the flash, the broker
# (umqtt stand-in) and the network: then runs /boot.py and /main.py as MicroPython does.


import gc
import json
import os
import sys

import socket
from umqtt import simple

broker = simple.broker
DEVICE = "tray-1"
SECRET = "s3cret"
KEEP = ("umqtt", "umqtt.simple", "socket", "network", "mp_ota")
# /lib before the root, as versions.start() orders it (the /outbox folder is no package).
STAND_INS_PATH = ["/lib", "", "/stubs", "/tests"]


class PowerOff(BaseException):
    # The test ends a run (or cuts the power): not an Exception, so the board's code cannot catch it.
    pass


class FakeClock:
    # ticks_ms starts again at every power-on, as on a board; moves only when the loop sleeps.

    def __init__(self, clock):
        self.ms = 1000
        clock.ticks_ms = lambda: self.ms
        clock.board_time = lambda: 3600 + self.ms // 1000
        clock.sleep_ms = self.advance
        clock.offset = None
        clock.synced_at = None

    def advance(self, ms):
        self.ms += ms


def result(value):
    print("@@RESULT " + json.dumps(value))


def setup(server, settings=None):
    # A tray as jisaku flash leaves it, with the town's server in config.json.
    boot = {"device_id": DEVICE, "secret": SECRET, "wifi": {"ssid": "office", "password": "pw"},
            "broker": {"host": "192.168.1.10", "port": 1883}, "server": server,
            "settings": settings or {"report_every_s": 5, "left_after_s": 3}, "ntp": None}
    with open("/config.json", "w") as f:
        json.dump(boot, f)
    broker.users[DEVICE] = SECRET


def offer(number, version, bytes_, manifest_sha256, trial_s=300):
    payload = {"offer": number, "version": version, "runs_on": "board", "bytes": bytes_,
               "manifest_sha256": manifest_sha256, "trial_s": trial_s,
               "path": "/api/v1/devices/%s/bundles/%s" % (DEVICE, version)}
    broker.deliver("jisaku/%s/update" % DEVICE, json.dumps(payload).encode(), retain=True)


def forget():
    for name in list(sys.modules):
        if name not in KEEP:
            del sys.modules[name]
    sys.path[:] = STAND_INS_PATH
    gc.collect()


def power_on(seconds=60, before_boot=None):
    # One start of the board: "reset" (machine.reset), "off" (the run ended), or what happened.
    forget()
    import clock
    fake = FakeClock(clock)
    import board

    def run(self):
        end = fake.ms + int(seconds * 1000)
        while fake.ms < end:
            self.turn()
            fake.advance(self.app.POLL_MS)
        raise PowerOff()

    board.Board.run = run
    try:
        if before_boot:
            before_boot()
        with open("/boot.py") as f:
            exec(f.read(), {"__name__": "__main__"})
        with open("/main.py") as f:
            exec(f.read(), {"__name__": "__main__"})
    except SystemExit:
        return "reset"
    except PowerOff:
        return "off"
    return "returned"


def updates():
    # The update events the board sent, as dicts (v of each).
    found = []
    for payload in broker.on("jisaku/%s/event" % DEVICE):
        message = json.loads(payload)
        for item in message if isinstance(message, list) else [message]:
            if item.get("event") == "update":
                found.append(item["v"])
    return found


def last_status():
    statuses = [json.loads(p) for p in broker.on("jisaku/%s/status" % DEVICE) if p.startswith(b"{")]
    return statuses[-1] if statuses else None


def state():
    try:
        with open("/app/state.json") as f:
            return json.load(f)
    except OSError:
        return None


def files(folder):
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return None


def read(path):
    with open(path, "rb") as f:
        return f.read()


def report(boots, **more):
    found = {"boots": boots, "updates": updates(), "status": last_status(), "state": state(),
             "app": files("/app"), "root_main": read("/main.py").decode(), "update_folder": files("/update")}
    found.update(more)
    result(found)


# ---------------------------------------------------------------- scenarios


def goes_through(server, size, digest):
    """An offer: the board restarts, downloads, switches, and the new version reports running."""
    setup(server)
    offer(12, "1.1.0", size, digest, trial_s=120)
    boots = [power_on(30)]          # the app gets the offer: saves it, restarts
    boots.append(power_on(30))      # the update, before the app: download, check, switch, restart
    boots.append(power_on(60))      # the new version on trial: online, a reading acknowledged
    status_on_trial = last_status()
    boots.append(power_on(30))      # and again: it stays, the retained offer is ignored now
    installed = {name: read("/app/1.1.0/" + name).decode() for name in files("/app/1.1.0")}
    report(boots, status_on_trial=status_on_trial, installed=installed, requests=[r[1] for r in socket.requests])


def corrupted(server, size, digest):
    """A byte flipped on the way: refused (hash); the board keeps the installed version."""
    setup(server)
    offer(20, "1.2.0", size, digest)
    boots = [power_on(30), power_on(30), power_on(30)]
    report(boots)


def crashes(server, size, digest):
    """A version that fails on start: after three starts the board goes back by itself."""
    setup(server)
    offer(30, "1.3.0", size, digest)
    boots = [power_on(30), power_on(30)]            # offer; download and switch
    for _ in range(4):                                # three failing starts, then back
        boots.append(power_on(30))
    report(boots)


def never_online(server, size, digest):
    """A version that never gets a reading to the broker within trial_s goes back by itself."""
    setup(server)
    offer(40, "1.4.0", size, digest, trial_s=30)
    boots = [power_on(30), power_on(30)]

    def locked_out():
        broker.users[DEVICE] = "not the new version's"   # it cannot log in
    boots.append(power_on(90, locked_out))
    broker.users[DEVICE] = SECRET
    boots.append(power_on(30))                           # back on the installed version
    report(boots)


def resumes(server, size, digest):
    """A link dropped mid-piece, then a power cut mid-piece: the download goes on where it was."""
    setup(server)
    offer(50, "1.5.0", size, digest)
    socket.cuts[3] = (700, OSError(104))       # the 3rd connection: 700 bytes, then the link drops
    socket.cuts[5] = (900, PowerOff())         # the 5th: 900 bytes, then the power goes
    boots = [power_on(30), power_on(30), power_on(30), power_on(60)]
    report(boots, requests=[r[1] for r in socket.requests])


class CutOnSwitch:
    # versions.py's os, with the power cut at the switch: "before" the state file is renamed
    # into place (the new state written beside it, not yet in force), or just "after".

    def __init__(self, real, when):
        self.real, self.when = real, when

    def __getattr__(self, name):
        return getattr(self.real, name)

    def rename(self, old, new):
        switching = new == "/app/state.json" and b'"trial": {' in read(old).replace(b'"trial":{', b'"trial": {')
        if switching and self.when == "before":
            raise PowerOff()
        self.real.rename(old, new)
        if switching and self.when == "after":
            raise PowerOff()


def cut_power_at_switch(when):
    def before_boot():
        import versions
        versions.os = CutOnSwitch(os, when)
    return before_boot


def power_cuts(server, size, digest):
    """The power goes just before, and just after, the switch: the board starts either way."""
    setup(server)
    offer(70, "1.7.0", size, digest)
    boots = [power_on(30)]
    boots.append(power_on(30, cut_power_at_switch("before")))
    state_after_first_cut = state()
    asked_before = len(socket.requests)
    boots.append(power_on(30, cut_power_at_switch("after")))
    asked_again = [r[1] for r in socket.requests[asked_before:]]
    state_after_second_cut = state()
    boots.append(power_on(60))       # the new version on trial: running
    boots.append(power_on(30))       # the offer left behind by the cut is cleared
    report(boots, first_cut=state_after_first_cut, second_cut=state_after_second_cut, asked_again=asked_again)


def refusals(cases):
    """Offers the board must refuse, one after another: it keeps the installed version.

    ``cases``: [offer id, version, bytes, manifest_sha256, server or None], each offered in turn.
    """
    boots = []
    for number, version, size, digest, server in cases:
        setup(server)
        offer(number, version, size, digest)
        boots.append(power_on(30))    # the offer: restart
        boots.append(power_on(30))    # refused at start; the installed version runs on
    report(boots)


# The memory of the update at start, in three parts run.mjs runs as separate calls
# (memory_setup, memory_step twice, memory_update). Between its calls run.mjs measures the live
# heap after a collection; inside one call this port frees nothing allocated during it, so the
# heap in use inside a call counts everything allocated since the call began.

compile_bytes = [0]


def memory_setup(server, size, digest):
    # A board as the app leaves it: the offer waits in flash for the next start.
    setup(server)
    os.mkdir("/update")
    with open("/update/offer.json", "w") as f:
        json.dump({"offer": 60, "version": "1.6.0", "runs_on": "board", "bytes": size, "manifest_sha256": digest,
                   "trial_s": 300, "path": "/api/v1/devices/%s/bundles/1.6.0" % DEVICE}, f)
    forget()


def memory_step():
    # 1st call: nothing (run.mjs measures the heap before the update). 2nd: the update's code
    # is loaded, as versions.start() loads it (run.mjs measures what stays: the code, live).
    if compile_bytes[0] == 0:
        compile_bytes[0] = -1
        return
    before = gc.mem_alloc()
    import versions
    import updater
    import outbox
    import protocol
    compile_bytes[0] = gc.mem_alloc() - before   # all it allocated: its compiling's peak is below


def memory_update():
    """The update itself, from boot.py to the switch: the most heap it has in use at any read
    from the network, above what was in use when it began (the code is loaded already).
    What the stand-in socket allocates for itself is taken off (socket.own_bytes)."""
    start = gc.mem_alloc()
    peak = [0]
    per_request = [0] * 40

    def measure():
        used = gc.mem_alloc() - socket.own_bytes - start
        peak[0] = max(peak[0], used)
        if per_request[len(socket.requests)] == 0:
            per_request[len(socket.requests)] = used
    socket.on_read = measure
    try:
        with open("/boot.py") as f:
            exec(f.read(), {"__name__": "__main__"})
        boots = ["returned"]
    except SystemExit:
        boots = ["reset"]
    socket.on_read = None
    report(boots, download=peak[0], compile=compile_bytes[0], per_request=per_request)
