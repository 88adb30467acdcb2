"""Settings: config.json at boot, and the operators' changes from the ``config`` topic.

``config.json`` at the board's root holds what the board needs to start::

    {"device_id": "snow-3", "secret": "...",
     "wifi": {"ssid": "office", "password": "..."},
     "broker": {"host": "192.168.1.10", "port": 1883},
     "settings": {"interval_s": 600},       # optional: the example's settings
     "pins": {"trigger": 5}}                # optional: other pins than the example's

``broker`` may name several brokers instead, the first preferred; the board moves to
the next when its broker is gone (see link.py)::

     "broker": "mqtt://192.168.1.10:1883 mqtt://192.168.1.11:1883"
     "broker": ["192.168.1.10", "192.168.1.11:1884"]

Operators change settings from afar: the gateway sends ``{"rev": 7, "interval_s": 300}``
(retained) on ``jisaku/<id>/config``. :class:`Settings` checks every value
against the example's limits; if one is wrong nothing changes and the answer
says why. Accepted settings are saved to ``/settings.json``, so a board that
restarts with no network still uses the operators' last word.

Example::

    boot = config.load()                                  # or ConfigError saying what to fix
    settings = Settings({"interval_s": (1, 86400)}, {"interval_s": 600})
    settings.apply({"rev": 7, "interval_s": 0})   # {"rev": 7, "ok": False, "reason": "interval_s must be ..."}
"""

import json
import os

CONFIG_FILE = "/config.json"
SAVED_FILE = "/settings.json"


class ConfigError(Exception):
    pass


def load(path=CONFIG_FILE):
    """config.json as a dict, checked; ConfigError with what to fix."""
    try:
        with open(path) as f:
            boot = json.load(f)
    except OSError:
        raise ConfigError("no %s on the board: copy config.example.json there and fill it in" % path)
    except ValueError:
        raise ConfigError("%s is not valid JSON: check commas and quotes" % path)
    if not isinstance(boot, dict):
        raise ConfigError("%s must be a JSON object" % path)
    for key, inner in (("device_id", None), ("secret", None), ("wifi", "ssid")):
        value = boot.get(key)
        if inner:
            value = value.get(inner) if isinstance(value, dict) else None
            key = key + "." + inner
        if not isinstance(value, str) or not value:
            raise ConfigError("%s needs %s (see config.example.json)" % (path, key))
    boot["wifi"].setdefault("password", "")
    brokers(boot.get("broker"))  # a mistake shows now; the link reads it again
    boot.setdefault("settings", {})
    boot.setdefault("pins", {})
    return boot


# config.json's "broker" as [(host, port), ...], the first preferred. It is {"host": ...,
# "port": ...}, or text: "host", "host:port", "mqtt://host:port", several of them (spaces or
# commas between), or a list of such texts. Comments, not a docstring, and short code: this
# stays in the board's memory.
def brokers(value):
    try:
        if isinstance(value, dict):
            value = "%s:%s" % (value["host"], value.get("port", 1883))
        if isinstance(value, list):
            value = " ".join(value)
        found = []
        for item in value.replace(",", " ").split():
            host, port = (item.replace("mqtt://", "") + ":1883").split(":")[:2]
            if not host or "/" in host:
                raise ValueError(item)
            found.append((host, int(port)))
    except (KeyError, TypeError, AttributeError, ValueError):
        found = []
    if not found:
        raise ConfigError('config.json: broker %r should be {"host": "192.168.1.10", "port": 1883},'
                          ' or several: "mqtt://192.168.1.10:1883 mqtt://192.168.1.11:1883"' % (value,))
    return found


def _write_atomic(path, text):
    # A power cut mid-write leaves the old file: rename replaces it all at once.
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


class Settings:
    """The example's settings: defaults, then config.json, then saved remote changes.

    ``limits`` are the settings operators may change, e.g. ``{"interval_s": (1, 86400)}``.
    ``values`` holds every current setting; read them as ``settings.values["interval_s"]``.
    ``check`` (optional) looks across settings once each is within its limits: given
    every value as it would be, it returns what is wrong, e.g. ``["alert_cm must be above warn_cm"]``.
    """

    def __init__(self, limits, values, path=SAVED_FILE, check=None):
        self.limits = limits
        self.values = dict(values)
        self.path = path
        self.rev = None
        self.check = check

    def problems(self, changes):
        found = []
        for name, value in changes.items():
            if name not in self.limits:
                found.append("unknown setting %r (this device takes %s)" % (name, ", ".join(sorted(self.limits))))
                continue
            if not isinstance(self.limits[name], tuple):
                continue  # not a number (a schedule): the app's check below looks at it
            low, high = self.limits[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                found.append("%s must be a number from %s to %s, not %r" % (name, low, high, value))
        if not found and self.check is not None:
            after = dict(self.values)
            after.update(changes)
            found.extend(self.check(after))
        return found

    def restore(self):
        """At start: the last accepted settings from flash, if any."""
        try:
            with open(self.path) as f:
                saved = json.load(f)
            changes = saved["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if isinstance(changes, dict) and not self.problems(changes):
            self.values.update(changes)
            self.rev = saved.get("rev")

    def apply(self, message):
        """A ``config`` message in, the ``config/ack`` answer out (a dict)."""
        rev = message.get("rev")
        changes = {}
        for name in message:
            if name != "rev":
                changes[name] = message[name]
        if isinstance(rev, bool) or not isinstance(rev, int):
            return {"rev": rev, "ok": False, "reason": "config needs a whole-number rev"}
        found = self.problems(changes)
        if found:
            return {"rev": rev, "ok": False, "reason": "; ".join(found)}
        self.values.update(changes)
        if rev != self.rev:
            # The retained config comes again at every reconnect: write flash only when it is new.
            self.rev = rev
            _write_atomic(self.path, json.dumps({"rev": rev, "settings": changes}))
        return {"rev": rev, "ok": True}
