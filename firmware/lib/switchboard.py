"""Switching outputs safely: one set of rules for a Raspberry Pi and a MicroPython board.

This file decides, and nothing else: which output is on, and why. It never touches a pin
or the network itself; it is given a *clock* and, optionally, *pins* (small adapters with
``set(on)``), and it is written in the Python that both CPython and MicroPython run (no
typing, no dataclasses), so the Raspberry Pi (``jisaku.firmware.lib.switchboard``) and a
board (``/lib/switchboard.py``) obey exactly the same rules. tests/vectors/switching.json
plays one table of situations through both and checks they decide alike.

The rules, whatever the device is told:

- at start, and on a fault, every output goes to its *safe* state ("off" or "on");
- an output may stay on at most ``max_on_min`` minutes without a break, then it switches
  off by itself (``by: "max_on"``); 0 means no limit;
- outputs in one *interlock* group are never on together: switching one on while another
  of its group is on is refused (code ``interlock``, with the reason); the other one is
  never switched off to make room;
- a command whose ``expires`` has passed is refused (``expired``); a device whose clock is
  not set refuses any command that has ``expires`` (``no_clock``);
- without the broker for ``link_loss_min`` minutes, ``on_link_loss = "safe"`` puts every
  output in its safe state once; ``"stay"`` keeps them as they are. 0: no link-loss rule;
- a *schedule* (list of ``{"output", "on": "05:00", "off": "08:00", "days": "mon-fri"}``)
  switches outputs at its on and off times, in the town's local time, network or not. At
  start (and when a new schedule comes) an output whose window is open is switched on;
  afterwards the schedule acts only at its on/off times, so an operator's command holds
  until the next one. Interlocks and the longest on-time still apply.

Example::

    import switchboard
    board = switchboard.SwitchBoard.from_config(config, clock)   # config: the device's tables
    board.start()                                  # every output safe, open windows on
    board.command({"id": "c1", "do": "switch", "args": {"output": "heater", "on": True},
                   "expires": 1764750000})         # {"ok": True, "result": {"heater": 1, ...}}
    board.tick(link_up=True)                       # a few times a second: max on-time, link loss, schedule
    board.take_changes()                           # [{"output": "heater", "on": 1, "by": "command", "cmd": "c1"}]
"""

CLOCK_SET_AFTER = 1577836800  # 2020-01-01: a clock before this has not been set
MAX_SCHEDULE = 24
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SAFE_STATES = ("off", "on")
ON_LINK_LOSS = ("safe", "stay")


class SwitchError(ValueError):
    """A mistake in the outputs or [switching] table, saying what to write instead."""


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _name_ok(name):
    # An output's name becomes a reading, "<name>_on": a-z first, then a-z 0-9 _.
    if not isinstance(name, str) or not 0 < len(name) <= 40 or not "a" <= name[0] <= "z":
        return False
    for char in name:
        if not ("a" <= char <= "z" or "0" <= char <= "9" or char == "_"):
            return False
    return True


class Output:
    """One thing that can be switched: a relay, an SSR, a contactor's coil.

    ``safe`` is "off" or "on": where it goes at start, on a fault and (if so set) on link loss.
    ``max_on_min``: the longest it may stay on without a break (0: no limit).
    """

    def __init__(self, name, pin, label=None, active_high=True, safe="off", max_on_min=0):
        where = "[outputs.%s]" % name
        if not _name_ok(name):
            raise SwitchError("%s: an output's name is 1-40 of a-z 0-9 _, starting with a letter,"
                              " e.g. [outputs.pump_1]" % where)
        if isinstance(pin, bool) or not isinstance(pin, (int, str)):
            raise SwitchError("%s: pin must be the pin's number, e.g. pin = 17, not %r" % (where, pin))
        if not isinstance(active_high, bool):
            raise SwitchError("%s: active_high must be true or false (false for relay boards"
                              " that switch on a LOW input), not %r" % (where, active_high))
        if safe not in SAFE_STATES:
            raise SwitchError('%s: safe must be "off" or "on", not %r' % (where, safe))
        if not _is_number(max_on_min) or max_on_min < 0:
            raise SwitchError("%s: max_on_min must be minutes (0 for no limit), not %r" % (where, max_on_min))
        if safe == "on" and max_on_min:
            raise SwitchError('%s: an output that is safe "on" cannot have a longest on-time:'
                              " set max_on_min = 0 or safe = \"off\"" % where)
        self.name = name
        self.pin = pin
        self.label = label if isinstance(label, str) and label else name
        self.active_high = active_high
        self.safe = safe
        self.safe_on = safe == "on"
        self.max_on_min = max_on_min
        self.max_on_ms = int(max_on_min * 60000)

    def level(self, on):
        """The pin level (1 or 0) that makes this output ``on`` (or off)."""
        return 1 if bool(on) == self.active_high else 0


def read_outputs(outputs, switching):
    """``[outputs.*]`` and ``[switching]`` (as dicts), checked: (outputs list, interlocks, loss_min, on_loss)."""
    if not isinstance(outputs, dict) or not outputs:
        raise SwitchError("no outputs: add one table per output, e.g. [outputs.heater] with pin = 17")
    found = []
    for name in sorted(outputs):
        table = outputs[name]
        if not isinstance(table, dict) or "pin" not in table:
            raise SwitchError("[outputs.%s] needs pin = <the pin's number>" % name)
        known = ("pin", "name", "active_high", "safe", "max_on_min")
        for key in table:
            if key not in known:
                raise SwitchError("[outputs.%s]: unknown key %r (an output takes %s)" % (name, key, ", ".join(known)))
        found.append(Output(name, table["pin"], table.get("name"), table.get("active_high", True),
                            table.get("safe", "off"), table.get("max_on_min", 0)))
    switching = switching or {}
    if not isinstance(switching, dict):
        raise SwitchError("[switching] must be a table")
    names = [o.name for o in found]
    interlocks = switching.get("interlocks", [])
    if not isinstance(interlocks, list):
        raise SwitchError('[switching] interlocks must be a list of groups, e.g. [["pump_1", "pump_2"]]')
    groups = []
    for group in interlocks:
        if not isinstance(group, list) or len(group) < 2:
            raise SwitchError('[switching] interlocks: each group lists two or more outputs,'
                              ' e.g. ["pump_1", "pump_2"], not %r' % (group,))
        for name in group:
            if name not in names:
                raise SwitchError("[switching] interlocks name %r, which is not an output (there are %s)"
                                  % (name, ", ".join(names)))
        groups.append(list(group))
    loss_min = switching.get("link_loss_min", 15)
    if not _is_number(loss_min) or loss_min < 0:
        raise SwitchError("[switching] link_loss_min must be minutes (0: no link-loss rule), not %r" % (loss_min,))
    on_loss = switching.get("on_link_loss", "safe")
    if on_loss not in ON_LINK_LOSS:
        raise SwitchError('[switching] on_link_loss must be "safe" or "stay", not %r' % (on_loss,))
    return found, groups, loss_min, on_loss


# ---------------------------------------------------------------- schedules


def _minute_of(text, where):
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 2 or len(parts[0]) not in (1, 2) or len(parts[1]) != 2 \
            or not parts[0].isdigit() or not parts[1].isdigit():
        raise SwitchError('%s must be a time like "05:00", not %r' % (where, text))
    hour, minute = int(parts[0]), int(parts[1])
    if hour > 23 or minute > 59:
        raise SwitchError('%s must be a time from "00:00" to "23:59", not %r' % (where, text))
    return hour * 60 + minute


def _days_of(text, where):
    """"mon-fri", "sat,sun", "mon,wed,fri" -> a list of 7 True/False, Monday first."""
    if text is None:
        return [True] * 7
    chosen = [False] * 7
    if not isinstance(text, str) or not text:
        raise SwitchError('%s must be like "mon-fri", "sat,sun" or "mon,wed,fri", not %r' % (where, text))
    for part in text.lower().split(","):
        ends = part.strip().split("-")
        if len(ends) > 2 or ends[0] not in DAYS or ends[-1] not in DAYS:
            raise SwitchError('%s must be like "mon-fri", "sat,sun" or "mon,wed,fri", not %r' % (where, text))
        day, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
        while True:  # "fri-mon" wraps over the weekend
            chosen[day] = True
            if day == last:
                break
            day = (day + 1) % 7
    return chosen


class Window:
    """One schedule entry: ``output`` on from ``on`` to ``off`` on ``days``, local time."""

    def __init__(self, entry, names, where):
        if not isinstance(entry, dict):
            raise SwitchError('%s must be like {"output": "heater", "on": "05:00", "off": "08:00"}' % where)
        for key in entry:
            if key not in ("output", "on", "off", "days"):
                raise SwitchError("%s: unknown key %r (an entry has output, on, off, days)" % (where, key))
        if entry.get("output") not in names:
            raise SwitchError("%s: output %r is not one of this device's outputs (%s)"
                              % (where, entry.get("output"), ", ".join(names)))
        self.output = entry["output"]
        self.on_min = _minute_of(entry.get("on"), where + " on")
        self.off_min = _minute_of(entry.get("off"), where + " off")
        if self.on_min == self.off_min:
            raise SwitchError("%s: on and off are the same time; leave the entry out instead" % where)
        self.days = _days_of(entry.get("days"), where + " days")

    def is_open(self, weekday, minute):
        """True while the window is open; one past midnight belongs to the day it started."""
        if self.on_min < self.off_min:
            return self.days[weekday] and self.on_min <= minute < self.off_min
        if minute >= self.on_min:
            return self.days[weekday]
        return minute < self.off_min and self.days[(weekday + 6) % 7]


def read_schedule(entries, names):
    """A schedule setting, checked: a list of Windows, or SwitchError with what is wrong."""
    if not isinstance(entries, list):
        raise SwitchError('schedule must be a list of {"output", "on", "off", "days"}, not %r' % (entries,))
    if len(entries) > MAX_SCHEDULE:
        raise SwitchError("schedule has %d entries; at most %d" % (len(entries), MAX_SCHEDULE))
    windows = []
    for number, entry in enumerate(entries):
        windows.append(Window(entry, names, "schedule entry %d" % (number + 1)))
    return windows


def local_time(unix, utc_offset_s):
    """(weekday with Monday 0, minute of the day) at Unix time ``unix`` in a zone ``utc_offset_s`` from UTC."""
    seconds = int(unix) + int(utc_offset_s)
    days = seconds // 86400
    return (days + 3) % 7, (seconds % 86400) // 60  # 1970-01-01 was a Thursday


def exact_expires(command, payload):
    """The command with its ``expires`` read as whole seconds from the raw JSON ``payload``.

    ESP32 and Pico W floats are 32-bit: 1764750000.0 read as a float can be a minute off,
    too coarse for a command's expiry. The digits before the point, read as an int, are exact.
    """
    expires = command.get("expires")
    if not _is_number(expires) or not payload:
        return command
    if isinstance(payload, str):
        payload = payload.encode()
    start = payload.find(b'"expires"')
    if start < 0:
        return command
    start = payload.find(b":", start) + 1
    while payload[start:start + 1] == b" ":
        start += 1
    end = start
    while b"0" <= payload[end:end + 1] <= b"9":
        end += 1
    if end > start:
        command["expires"] = int(payload[start:end])
    return command


# ---------------------------------------------------------------- clocks


class DrivenClock:
    """A clock the caller moves: for tests, simulations and the shared test table.

    Every clock has ``ms()`` (monotonic milliseconds, never jumps), ``unix()`` (Unix
    seconds, or None while not set) and ``utc_offset_s(unix)`` (the town's time zone).
    """

    def __init__(self, unix=None, utc_offset_s=9 * 3600):
        self.now_ms = 0
        self.unix_s = unix
        self.offset_s = utc_offset_s

    def advance(self, seconds):
        self.now_ms += int(seconds * 1000)
        if self.unix_s is not None:
            self.unix_s += seconds

    def ms(self):
        return self.now_ms

    def unix(self):
        if self.unix_s is None or self.unix_s < CLOCK_SET_AFTER:
            return None
        return self.unix_s

    def utc_offset_s(self, unix):
        return self.offset_s


# ---------------------------------------------------------------- the switchboard


class SwitchBoard:
    """Every output of one device and the rules above; see the module's docstring.

    ``pins`` (optional): ``{output name: adapter}``, each adapter with ``set(on)`` that
    drives the real pin (it knows whether the relay board is active-low). Without pins
    the board only decides, as in the tests.
    """

    def __init__(self, outputs, clock, interlocks=(), link_loss_min=15, on_link_loss="safe", pins=None):
        self.outputs = {}
        self.order = []
        for output in outputs:
            self.outputs[output.name] = output
            self.order.append(output.name)
        self.clock = clock
        self.interlocks = [list(group) for group in interlocks]
        self.link_loss_ms = int(link_loss_min * 60000)
        self.on_link_loss = on_link_loss
        self.pins = pins or {}
        self.on = {}
        self.on_since = {}
        for name in self.order:
            self.on[name] = self.outputs[name].safe_on
            self.on_since[name] = None
        self.windows = []
        self.changes = []        # what happened since take_changes(): for events and readings
        self.lost_since = None   # ms when the link went, None while it is up
        self.loss_done = False   # the link-loss rule acts once per loss
        self.last_local = None   # (weekday, minute) the schedule last looked at

    @classmethod
    def from_config(cls, config, clock, pins=None):
        """From the device's tables: ``{"outputs": {...}, "switching": {...}}``; SwitchError on a mistake."""
        outputs, groups, loss_min, on_loss = read_outputs(config.get("outputs"), config.get("switching"))
        return cls(outputs, clock, groups, loss_min, on_loss, pins)

    # ------------------------------------------------------------ what others read

    def states(self):
        """``{"heater": 1, "pump_1": 0, ...}``: the answer's ``result``."""
        found = {}
        for name in self.order:
            found[name] = 1 if self.on[name] else 0
        return found

    def readings(self):
        """``{"heater_on": 1, ...}``: the reading sent at every change and every interval."""
        found = {}
        for name in self.order:
            found[name + "_on"] = 1 if self.on[name] else 0
        return found

    def describe(self):
        """The status object's ``outputs``: name, safe state and longest on-time of each."""
        found = {}
        for name in self.order:
            output = self.outputs[name]
            found[name] = {"name": output.label, "safe": output.safe, "max_on_min": output.max_on_min}
        return found

    def schedule_state(self):
        """"ok", or "no clock" while the clock is not set (the schedule then does nothing)."""
        return "ok" if self.clock.unix() is not None else "no clock"

    def take_changes(self):
        """What changed since the last call (oldest first), and forget it."""
        changes, self.changes = self.changes, []
        return changes

    # ------------------------------------------------------------ switching

    def _set(self, name, on, by, cmd=None):
        """Switch one output, drive its pin and note the change. No checks here."""
        if self.on[name] == on and by != "start":
            return
        pin = self.pins.get(name)
        if pin is not None:
            pin.set(on)
        self.on[name] = on
        self.on_since[name] = self.clock.ms() if on else None
        change = {"output": name, "on": 1 if on else 0, "by": by}
        if cmd is not None:
            change["cmd"] = cmd
        self.changes.append(change)

    def interlock_problem(self, name):
        """Why ``name`` may not be switched on now (another of its group is on), or None."""
        for group in self.interlocks:
            if name not in group:
                continue
            for other in group:
                if other != name and self.on[other]:
                    if len(group) == 2:
                        together = "%s and %s" % (group[0], group[1])
                    else:
                        together = "%s and %s" % (", ".join(group[:-1]), group[-1])
                    return "%s is on: %s may never be on together" % (other, together)
        return None

    def switch(self, name, on, by, cmd=None):
        """Switch one output if the rules allow: None when done, else (code, reason)."""
        if name not in self.outputs:
            return "unknown_output", "no output %r here; this device has %s" % (name, ", ".join(self.order))
        if on and not self.on[name]:
            problem = self.interlock_problem(name)
            if problem:
                return "interlock", problem
        self._set(name, bool(on), by, cmd)
        return None

    def safe_all(self, by):
        """Every output to its safe state (at start, on link loss, on a fault)."""
        for name in self.order:
            self._set(name, self.outputs[name].safe_on, by)

    def start(self):
        """At power-on: every output safe (and said so), then open schedule windows on."""
        self.safe_all("start")
        self.last_local = None
        self._run_schedule()

    # ------------------------------------------------------------ commands

    def command(self, command):
        """A ``cmd`` message in, the ``cmd/ack`` fields out; None for a command that is not ``switch``."""
        if command.get("do") != "switch":
            return None
        if "expires" in command:
            expires = command["expires"]
            if not _is_number(expires):
                return self._refused("bad_request", "expires must be a time (Unix seconds), not %r" % (expires,))
            now = self.clock.unix()
            if now is None:
                return self._refused("no_clock", "this device's clock is not set, so it cannot tell whether"
                                                 " the command is still meant: check its time server (NTP)")
            if now > expires:
                return self._refused("expired", "the command expired %d s before it arrived" % int(now - expires))
        args = command.get("args")
        if not isinstance(args, dict) or not isinstance(args.get("output"), str) \
                or not isinstance(args.get("on"), bool):
            return self._refused("bad_request", 'switch needs args {"output": "<name>", "on": true or false}')
        refused = self.switch(args["output"], args["on"], "command", command.get("id"))
        if refused:
            return self._refused(refused[0], refused[1])
        return {"ok": True, "result": self.states()}

    def _refused(self, code, reason):
        return {"ok": False, "code": code, "reason": reason}

    # ------------------------------------------------------------ schedule

    def check_schedule(self, entries):
        """The schedule's problems as text (empty when it is fine); nothing changes."""
        try:
            read_schedule(entries, self.order)
        except SwitchError as err:
            return [str(err)]
        return []

    def set_schedule(self, entries):
        """A new schedule (SwitchError if it is wrong, and the old one stays); open windows switch on."""
        self.windows = read_schedule(entries, self.order)
        self.last_local = None
        self._run_schedule()

    def _run_schedule(self):
        unix = self.clock.unix()
        if unix is None or not self.windows:
            return
        now = local_time(unix, self.clock.utc_offset_s(unix))
        if now == self.last_local:
            return
        before, self.last_local = self.last_local, now
        for window in self.windows:
            is_open = window.is_open(now[0], now[1])
            if before is None:  # at start, for a new schedule, or once the clock is first set
                if is_open:
                    self._scheduled(window.output, True)
            elif is_open != window.is_open(before[0], before[1]):
                self._scheduled(window.output, is_open)

    def _scheduled(self, name, on):
        refused = self.switch(name, on, "schedule")
        if refused:
            self.changes.append({"output": name, "refused": refused[0], "reason": refused[1], "by": "schedule"})

    # ------------------------------------------------------------ the loop

    def tick(self, link_up=True):
        """Look at the time: the longest on-time, link loss, the schedule. Call it often."""
        now = self.clock.ms()
        for name in self.order:
            output = self.outputs[name]
            since = self.on_since[name]
            if self.on[name] and output.max_on_ms and since is not None and now - since >= output.max_on_ms:
                self._set(name, False, "max_on")
        if link_up:
            self.lost_since = None
            self.loss_done = False
        else:
            if self.lost_since is None:
                self.lost_since = now
            if self.link_loss_ms and not self.loss_done and now - self.lost_since >= self.link_loss_ms:
                self.loss_done = True
                if self.on_link_loss == "safe":
                    self.safe_all("link_loss")
        self._run_schedule()


def send_changes(board, link):
    """Tell the server what changed: an event per change, then one reading of every output.

    ``link`` is the Pi's DeviceLink or a board's Link: both have ``publish_event`` and
    ``publish_reading``, and keep what they are given in their outbox until the broker has it.
    """
    switched = False
    for change in board.take_changes():
        if "refused" in change:  # the schedule wanted it on, an interlock said no
            link.publish_event("switch_refused", change)
        else:
            link.publish_event("switched", change)
            switched = True
    if switched:
        link.publish_reading(board.readings())
