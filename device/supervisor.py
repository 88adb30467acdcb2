"""``jisaku device run``: a small supervisor that runs the device's app in a child process.

Why a child process: an update switches the code that runs, and a new version that fails must
not take the device with it. The supervisor is the part that never changes by an update (it
runs the jisaku installed on the Pi; a jisaku wheel from an update runs only in the child), so
it is always there to start the app again, or to go back to the version before:

- The child exits with :data:`RESTART` after an update switched versions: started again at once,
  now running the new version (versions.json says which, device/versions.py).
- A version on **trial** (just switched to) that exits with an error :data:`TRIAL_STARTS` times,
  or is not connected and reporting (``running``) within ``trial_s`` of its first start: the
  supervisor stops it, goes back to the version before (``rolled_back``, reason ``crash`` or
  ``no_report``) and starts that; the restored version tells the server once it works.
- Any other exit: started again after a pause (1 s, doubling up to a minute), so a device
  that lost its sensor for a while is not restarted a thousand times an hour.

A power cut at any moment leaves a device that starts: versions.json is replaced whole, and a
trial cut short by a power cut starts over (with the starts counted, so a version that makes the
Pi reset is still given up). The clock used for trial_s is the monotonic one: a Pi has no
battery clock, so the wall clock may jump when it syncs after a boot.

systemd (deploy/systemd/jisaku-device.service) is the last line of defence: it restarts the
supervisor itself if that ever ends.

Example::

    supervisor = Supervisor(["-m", "jisaku.cli", "device", "run", "kinds/printer_tray", "--child"],
                            Path("data/devices/tray-1"))
    supervisor.run(stop)          # until stop is set (SIGTERM)
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from .versions import Versions

log = logging.getLogger(__name__)

RESTART = 75                 # the child's exit code for "start me again: versions changed" (EX_TEMPFAIL)
TRIAL_STARTS = 3             # starts a version on trial gets before it is given up as crashing
POLL_S = 0.2
STOP_WAIT_S = 15.0           # a child asked to stop gets this long to say goodbye to the broker
LONGEST_PAUSE_S = 60.0


class Supervisor:
    def __init__(self, child_args: list[str], state_dir: Path, pause_s: float = 1.0):
        self.child_args = child_args          # after the Python executable
        self.versions = Versions(state_dir)
        self.state_dir = Path(state_dir)
        self.pause_s = pause_s
        self.last_lines: collections.deque[str] = collections.deque(maxlen=20)
        self._child: subprocess.Popen | None = None

    # ------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        pause = self.pause_s
        trial_offer = trial_deadline = None
        while not stop.is_set():
            state = self.versions.load()
            if state.trial:
                if state.trial.get("starts", 0) >= TRIAL_STARTS:
                    self._roll_back("crash", f"{state.trial['version']} failed to start {TRIAL_STARTS} times: "
                                    + self._last_error())
                    continue
                if state.trial["offer"] != trial_offer:  # a new trial: its time runs from its first start here
                    trial_offer = state.trial["offer"]
                    trial_deadline = time.monotonic() + float(state.trial.get("trial_s", 300))
                try:
                    state = self.versions.count_start()
                except OSError as err:  # a full or failing SD card: start it all the same, uncounted
                    log.error("cannot write %s (%s): this start of the trial is not counted", self.versions.path, err)
            else:
                trial_offer = trial_deadline = None
            self._start(state)
            code = self._watch(stop, trial_offer, trial_deadline)
            if code is None or stop.is_set():
                continue  # stopped, or rolled back: the loop starts what versions.json says now
            if code == RESTART:
                pause = self.pause_s
                continue
            log.warning("the device's app ended (exit code %s): starting it again in %g s", code, pause)
            if stop.wait(pause):
                break
            if not self.versions.load().trial:  # on trial, the starts count; else wait longer each time
                pause = min(pause * 2, LONGEST_PAUSE_S)

    def _watch(self, stop: threading.Event, trial_offer: int | None, deadline: float | None) -> int | None:
        """Wait for the child to end; its exit code, or None if it was stopped (by stop, or a rollback)."""
        while True:
            code = self._child.poll()
            if code is not None:
                return code
            if stop.wait(POLL_S):
                self._stop_child()
                return None
            if deadline is not None and time.monotonic() > deadline and self._on_trial(trial_offer):
                self._stop_child()
                if self._on_trial(trial_offer):  # it may have made it while stopping
                    version = self.versions.load().trial["version"]
                    self._roll_back("no_report", f"{version} was not connected and reporting within its trial")
                return None

    def _on_trial(self, offer: int | None) -> bool:
        trial = self.versions.load().trial
        return bool(trial) and trial.get("offer") == offer

    def _roll_back(self, reason: str, detail: str) -> None:
        try:
            state = self.versions.roll_back(reason, detail)
        except OSError as err:
            # Nothing else can be done without writing versions.json: say so, and try again shortly.
            log.error("cannot write %s to go back (%s): is the SD card full? Trying again in a minute",
                      self.versions.path, err)
            time.sleep(LONGEST_PAUSE_S)
            return
        log.error("update %s given up (%s): %s; back to %s", state.report["version"], reason, detail,
                  state.app or "the installed app")

    # ------------------------------------------------------------ the child

    def child_command(self, state) -> tuple[list[str], dict[str, str]]:
        """The child's command line and environment: a jisaku wheel from an update goes first on PYTHONPATH."""
        environment = dict(os.environ)
        site = self.state_dir / "jisaku" / state.jisaku / "site" if state.jisaku else None
        if site is not None and site.is_dir():
            environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        elif site is not None:
            log.error("versions.json names jisaku %s, but %s is missing: running the installed jisaku",
                      state.jisaku, site)
        return [sys.executable, *self.child_args], environment

    def _start(self, state) -> None:
        command, environment = self.child_command(state)
        self.last_lines.clear()
        self._child = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True, errors="replace")
        threading.Thread(target=self._pass_on, args=(self._child,), daemon=True).start()

    def _pass_on(self, child: subprocess.Popen) -> None:
        """The child's log lines go on to ours (the journal), and the last ones are kept to say why it failed."""
        for line in child.stderr:
            sys.stderr.write(line)
            self.last_lines.append(line.rstrip())
        sys.stderr.flush()

    def _last_error(self) -> str:
        lines = [line for line in self.last_lines if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line]
        return (errors or lines or ["no output"])[-1].strip()[:200]

    def _stop_child(self) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        child.terminate()  # SIGTERM: the app stops and says "offline"
        try:
            child.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
