"""Settings operators change from afar, checked before they are used.

Each kind lists what may be changed and within which limits, in its kind.toml::

    [settings]
    left_after_s = [1, 3600]
    report_every_s = [5, 86400]

A new config is applied only if every value is known and within its limits
(and, if the app has ``settings_problems(changes)`` for checks across settings,
such as "alert_cm above warn_cm", that it returns no problems); otherwise the
device answers ``ok: false`` with the reason and keeps what it had. Accepted
settings are saved, so a device that starts with no network still uses the
operators' last word.

Example::

    remote = RemoteSettings(app, {"left_after_s": (1, 3600)}, Path("data/devices/tray-1"))
    remote.restore()                           # at start: the last accepted settings
    ok, reason = remote.apply({"left_after_s": 45})
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RemoteSettings:
    def __init__(self, app: Any, limits: dict[str, tuple[float, float] | str], state_dir: Path):
        self.app = app
        self.limits = limits
        self.path = Path(state_dir) / "settings.json"

    def problems(self, settings: dict[str, Any]) -> list[str]:
        found = []
        for name, value in settings.items():
            if name not in self.limits:
                known = ", ".join(sorted(self.limits)) or "nothing"
                found.append(f"unknown setting {name!r} (this device takes {known})")
                continue
            if not isinstance(self.limits[name], tuple):
                continue  # not a number (a schedule): the app's settings_problems checks it below
            low, high = self.limits[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                found.append(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")
        across = getattr(self.app, "settings_problems", None)
        if not found and across is not None:
            found.extend(across(settings))  # only once each value is known to be a number in range
        return found

    def apply(self, settings: dict[str, Any]) -> tuple[bool, str | None]:
        problems = self.problems(settings)
        if problems:
            return False, "; ".join(problems)
        self.app.apply_settings(settings)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(settings))
        temporary.replace(self.path)  # all or nothing, even if the power goes mid-write
        return True, None

    def restore(self) -> None:
        if not self.path.exists():
            return
        try:
            settings = json.loads(self.path.read_text())
        except ValueError:
            log.warning("ignored unreadable saved settings in %s", self.path)
            return
        if not self.problems(settings):
            self.app.apply_settings(settings)
