"""Equipment watch: is the town's LAN equipment (phone exchange, router, a server) answering?

Runs on a Raspberry Pi or any small Linux box on the same network; it needs no pins. Every
``interval_s`` seconds it tries each check listed in device.toml — a ping, a TCP port or an
HTTP status page — all at the same time, so one dead box does not hold up the others. A
check that fails is tried again (``tries`` times in all) before it counts as down: one lost
ping is not an alarm.

Setup: list the equipment as ``[[checks]]`` in device.toml (see README.md), then
``jisaku device run kinds/equipment_watch``. Alert rules on ``<name>_up`` warn staff.

Example::

    watch = EquipmentWatch(config, link)
    watch.check_all()    # reading {"phone_exchange_up": 1, "phone_exchange_ms": 2.1, "router_up": 0, "down": 1}
                         # and event "down" {"check": "router", "reason": "connection refused", ...}
    watch.run(stop)      # the same every interval_s, until stop is set
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jisaku.device.config import DeviceConfig, DeviceConfigError
from jisaku.device.link import DeviceLink
from jisaku.kinds.equipment_watch.checks import Check, PingCheck, Result, ping_ready, read_checks, system_ping

log = logging.getLogger(__name__)

DEFAULTS = {"interval_s": 60, "timeout_s": 3, "tries": 3, "retry_after_s": 2}


def watch_settings(config: DeviceConfig) -> dict[str, float]:
    """``[watch]`` of device.toml, checked: numbers, and at least what makes sense."""
    given = config.section("watch")
    settings = {}
    for key, default in DEFAULTS.items():
        value = given.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise DeviceConfigError(f"{config.folder / 'device.toml'}: [watch] {key} must be a number above 0,"
                                    f" e.g. {key} = {default}, not {value!r}")
        settings[key] = value
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise DeviceConfigError(f"{config.folder / 'device.toml'}: [watch] does not know {', '.join(unknown)};"
                                f" it may have {', '.join(DEFAULTS)}")
    return settings


class EquipmentWatch:
    """Tries every check each round; sends one reading a round and an event when a check changes."""

    def __init__(self, config: DeviceConfig, link: DeviceLink, pin_factory=None):
        settings = watch_settings(config)
        self.link = link
        self.interval_s = float(settings["interval_s"])
        self.timeout_s = float(settings["timeout_s"])
        self.tries = int(settings["tries"])
        self.retry_after_s = float(settings["retry_after_s"])
        self.checks: list[Check] = read_checks(config, self.timeout_s)  # a mistake stops it here, at start
        self.was_up: dict[str, bool] = {}           # each check's state after the last round
        self.down_since: dict[str, float] = {}      # when it went down (epoch seconds)
        self.stop = threading.Event()
        self.wake = threading.Event()               # check_now: start the next round at once
        # One thread per check: they all wait for their answers at the same time.
        self.pool = ThreadPoolExecutor(max_workers=min(len(self.checks), 32), thread_name_prefix="check")

    # ------------------------------------------------------------ one round

    def try_check(self, check: Check) -> tuple[Result, int]:
        """Try a check until it answers or ``tries`` are used up; the result and how many tries it took."""
        result = self.probe(check)
        tried = 1
        while not result.up and tried < self.tries and not self.stop.is_set():
            self.stop.wait(self.retry_after_s)
            result = self.probe(check)
            tried += 1
        return result, tried

    @staticmethod
    def probe(check: Check) -> Result:
        """One try. A check that fails in a way nobody foresaw is down with the error, and the others go on."""
        try:
            return check.probe()
        except Exception as err:  # noqa: BLE001 - the watch must keep watching the rest
            log.exception("%s: the check itself failed", check.name)
            return Result(False, None, f"the check failed: {err}")

    def check_all(self) -> dict[str, Result]:
        """One round: every check at once, then one reading and an event for each check that changed."""
        started = time.time()
        outcomes = dict(zip([c.name for c in self.checks], self.pool.map(self.try_check, self.checks)))
        reading: dict[str, Any] = {}
        for check in self.checks:
            result, tried = outcomes[check.name]
            reading[f"{check.name}_up"] = int(result.up)
            if result.up and result.ms is not None:  # a box that is down has no response time
                reading[f"{check.name}_ms"] = result.ms
            self.tell_if_changed(check, result, tried)
        reading["down"] = sum(not result.up for result, _ in outcomes.values())
        self.link.publish_reading(reading, ts=started)
        return {name: result for name, (result, _) in outcomes.items()}

    def tell_if_changed(self, check: Check, result: Result, tried: int) -> None:
        """An event "down" or "up" when a check's state changes (and "down" for one down at start)."""
        before = self.was_up.get(check.name)
        self.was_up[check.name] = result.up
        if before is None and result.up or before == result.up:
            return
        now = time.time()
        if result.up:
            down_s = now - self.down_since.pop(check.name, now)
            self.link.publish_event("up", {"check": check.name, "target": check.target, "ms": result.ms,
                                           "down_s": round(down_s, 1)})
            log.info("%s (%s) is up again after %.0f s", check.name, check.target, down_s)
        else:
            self.down_since[check.name] = now
            self.link.publish_event("down", {"check": check.name, "target": check.target,
                                             "reason": result.reason, "tries": tried})
            log.warning("%s (%s) is down: %s", check.name, check.target, result.reason)

    # ------------------------------------------------------------ from afar

    def apply_settings(self, settings: dict) -> None:
        """interval_s, timeout_s or tries from the operator pages (already within kind.toml's limits)."""
        if "interval_s" in settings:
            self.interval_s = float(settings["interval_s"])
        if "tries" in settings:
            self.tries = int(settings["tries"])
        if "timeout_s" in settings:
            self.timeout_s = float(settings["timeout_s"])
            for check in self.checks:
                if not check.own_timeout:  # a timeout written for one check in device.toml stays
                    check.timeout_s = self.timeout_s

    def commands(self) -> dict:
        return {"check_now": self.check_now}

    def check_now(self, args: dict) -> tuple[bool, str]:
        """Start a round now. It does not wait for the answers: commands arrive on the network thread."""
        self.wake.set()
        return True, f"checking {len(self.checks)} now: the reading follows"

    # ------------------------------------------------------------ the loop

    def make_sure_we_can_ping(self) -> None:
        """At start, not at the first alarm: a box that may not ping would call everything down."""
        if any(isinstance(c, PingCheck) and c.pinger is system_ping for c in self.checks):
            problem = ping_ready()
            if problem:
                raise DeviceConfigError(problem)

    def run(self, stop: threading.Event) -> None:
        self.stop = stop
        self.make_sure_we_can_ping()
        while not stop.is_set():
            started = time.monotonic()
            self.check_all()
            # Wait in short steps, so that a shorter interval_s from afar counts at once.
            while not stop.is_set() and not self.wake.is_set() and time.monotonic() < started + self.interval_s:
                stop.wait(0.2)
            self.wake.clear()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
