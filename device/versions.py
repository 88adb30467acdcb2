"""Which version of its app (and of jisaku) a Pi runs: one small JSON file, replaced whole.

In the device's state folder, ``versions.json``::

    {"app": "1.4.0", "app_before": "1.3.0",          the app version it runs, and the one to go back to
     "jisaku": null, "jisaku_before": null,          a jisaku wheel it runs (null: the jisaku installed)
     "trial": {"offer": 12, "part": "app", "version": "1.4.0", "from": "1.3.0", "trial_s": 300, "starts": 1},
     "report": {"offer": 12, "version": "1.4.0", "reason": "crash", "detail": "..."},
     "done": [10, 11, 12]}

- ``null`` for ``app`` means the app that came with the device (its kind's ``pi.py``, or the
  ``app = "file.py:Class"`` in its own folder); a version means ``app/<version>/``.
- ``trial`` is set at the switch and cleared when the new version is connected and a reading
  it sent was acknowledged; until then the supervisor (device/supervisor.py) may go back.
- ``report``: a going-back the restored version still has to tell the server about.
- ``done``: offers finished (running, rolled back or refused), so a retained offer that comes
  again at every reconnect is not done twice.

Why one file written with ``os.replace``: the file is always either the old one or the new one,
whole, even when the power goes in the middle of writing it. A file that cannot be read (a
damaged SD card) counts as empty, so the device runs what it was installed with: never nothing.

Example::

    versions = Versions(Path("data/devices/tray-1"))
    versions.load().app                                  # None, or "1.4.0"
    versions.switch("app", "1.4.0", offer=12, trial_s=300)
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FILE = "versions.json"
KEEP_DONE = 100           # finished offers remembered (offer ids only grow; the last 100 are plenty)
PARTS = ("app", "jisaku")


@dataclass
class State:
    app: str | None = None
    app_before: str | None = None
    jisaku: str | None = None
    jisaku_before: str | None = None
    trial: dict | None = None
    report: dict | None = None
    done: list[int] = field(default_factory=list)

    def running(self, part: str) -> str | None:
        return self.app if part == "app" else self.jisaku


class Versions:
    """Reads and replaces ``versions.json``; every change is one whole-file replace."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / FILE
        self._lock = threading.Lock()  # the updater and the trial check change it from two threads

    def load(self) -> State:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            known = {key: raw[key] for key in State.__dataclass_fields__ if key in raw}
            return State(**known)
        except FileNotFoundError:
            return State()
        except (ValueError, TypeError, OSError) as err:
            log.error("%s cannot be read (%s): running the app this device was installed with", self.path, err)
            return State()

    def save(self, state: State) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state.done = state.done[-KEEP_DONE:]
        temporary = self.path.with_name(FILE + ".tmp")
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump(asdict(state), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        # The rename itself reaches the SD card only when the folder is synced too.
        folder = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def change(self, how) -> State:
        """Load, let ``how(state)`` change it, save; the new state."""
        with self._lock:
            state = self.load()
            how(state)
            self.save(state)
            return state

    # ------------------------------------------------------------ the steps of an update

    def switch(self, part: str, version: str, offer: int, trial_s: float) -> State:
        """Run ``version`` of ``part`` from the next start on, on trial; the running one is kept to go back to."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, not {part!r}")

        def how(state: State) -> None:
            before = state.running(part)
            setattr(state, part, version)
            setattr(state, f"{part}_before", before)
            state.trial = {"offer": offer, "part": part, "version": version, "from": before,
                           "trial_s": trial_s, "starts": 0}
        return self.change(how)

    def count_start(self) -> State:
        """One more start of the version on trial (the supervisor, before each start)."""
        def how(state: State) -> None:
            if state.trial:
                state.trial["starts"] = state.trial.get("starts", 0) + 1
        return self.change(how)

    def trial_passed(self, offer: int) -> bool:
        """The version on trial is connected and reporting: keep it. False if that trial is over already."""
        passed = []

        def how(state: State) -> None:
            if state.trial and state.trial.get("offer") == offer:
                state.trial = None
                state.done.append(offer)
                passed.append(offer)
        self.change(how)
        return bool(passed)

    def roll_back(self, reason: str, detail: str) -> State:
        """Go back to the version before the trial, and keep a report for the restored version to send."""
        def how(state: State) -> None:
            trial = state.trial
            if not trial:
                return
            part = trial["part"]
            setattr(state, part, getattr(state, f"{part}_before"))
            setattr(state, f"{part}_before", None)
            state.trial = None
            state.report = {"offer": trial["offer"], "version": trial["version"], "reason": reason,
                            "detail": detail[:256]}
            # Finished now, not when the report is sent: the offer is retained and comes again at
            # the next connect, and must not switch the device to the failed version a second time.
            state.done.append(trial["offer"])
        return self.change(how)

    def reported(self) -> None:
        self.change(lambda state: setattr(state, "report", None))

    def finish(self, offer: int) -> None:
        """An offer refused: it is not tried again."""
        self.change(lambda state: state.done.append(offer))
