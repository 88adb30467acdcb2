"""A stand-in switch box for the server's tests: a real DeviceLink that obeys the switching spec.

It lists its outputs in its status, answers ``switch`` commands on ``cmd/ack`` as
/work/switching-spec.md §2 says (``done`` with every output's state, or refused with a
``code`` and a ``reason``: expired, unknown_output, interlock, bad_request), and reports
each output's state as a ``<output>_on`` reading. The real switch box (kinds/switch_box,
built by the device side) replaces it at merge: tests only use ``start``, ``stop``,
``states``, ``silent`` and ``commands``.

Example::

    box = SwitchBox.in_town(town, "heater-1", {"heater": "Road heater", "pump_1": "Pump 1", "pump_2": "Pump 2"},
                            interlocks=[("pump_1", "pump_2")])
    box.start()
    ...
    box.stop()
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from jisaku.contract import protocol
from jisaku.device.link import DeviceLink
from jisaku.gateway.registry import DeviceRecord


def register(town: Any, device_id: str, kind: str) -> str:
    """Register a device in a tests.town.Town after it started, and let it log in to the broker."""
    town.secrets[device_id] = town.registry.add_device(DeviceRecord(device_id, kind, name=device_id,
                                                                    public=False, interval_s=60))
    if hasattr(town.broker, "accounts"):  # the embedded broker reads its accounts at every connect
        town.broker.accounts[device_id] = town.secrets[device_id]
    else:  # Mosquitto: write its password file again
        town.broker.reload({**town.secrets, "_gateway": town.gateway_secret, "_tester": town.tester_secret})
    return town.secrets[device_id]


class _SpecLink(DeviceLink):
    """DeviceLink answers a refusal with ``reason`` only; the spec adds ``code``, and a device
    that never answers must be possible. The box decides the whole answer here."""

    box: "SwitchBox"

    def _answer_command(self, command: dict[str, Any]) -> None:
        answer = self.box.answer(command)
        if answer is not None:
            self._client.publish(protocol.topic(self.device_id, "cmd/ack"), json.dumps(answer), qos=1)


class SwitchBox:
    def __init__(self, link: _SpecLink, outputs: dict[str, str], interlocks: list[tuple[str, ...]] = ()):
        link.box = self
        self.link = link
        self.outputs = dict(outputs)
        self.interlocks = [tuple(group) for group in interlocks]
        self.states = {name: 0 for name in outputs}
        self.silent = False           # True: receives commands and never answers (a hung board)
        self.commands: list[dict[str, Any]] = []  # every command received, in order
        self._lock = threading.Lock()
        link.info = {**link.info, "fw": "test-switch-box",
                     "outputs": {name: {"name": label, "safe": "off", "max_on_min": 0}
                                 for name, label in outputs.items()}}

    @classmethod
    def in_town(cls, town: Any, device_id: str, outputs: dict[str, str],
                interlocks: list[tuple[str, ...]] = ()) -> "SwitchBox":
        """Register ``device_id`` in a tests.town.Town (kind switch_box) and make its box (not started)."""
        register(town, device_id, "switch_box")
        link = _SpecLink(device_id, town.secrets[device_id], town.broker_url, town.directory / "devices" / device_id)
        return cls(link, outputs, interlocks)

    def start(self) -> None:
        self.link.start()
        self.link.publish_reading({f"{name}_on": state for name, state in self.states.items()})

    def stop(self) -> None:
        self.link.stop()

    def answer(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """The answer the spec asks for, or None when the box is silent."""
        with self._lock:
            self.commands.append(command)
            if self.silent:
                return None
            refused = self._refusal(command)
            if refused:
                code, reason = refused
                return {"id": command.get("id"), "ok": False, "code": code, "reason": reason}
            output, on = command["args"]["output"], int(bool(command["args"]["on"]))
            self.states[output] = on
            states = dict(self.states)
        self.link.publish_reading({f"{name}_on": state for name, state in states.items()})
        self.link.publish_event("switched", {"output": output, "on": on, "by": "command", "cmd": command.get("id")})
        return {"id": command.get("id"), "ok": True, "result": states}

    def _refusal(self, command: dict[str, Any]) -> tuple[str, str] | None:
        args = command.get("args") or {}
        if command.get("do") != "switch" or not isinstance(args.get("on"), bool):
            return "bad_request", 'a switch is {"do": "switch", "args": {"output": "…", "on": true|false}}'
        expires = command.get("expires")
        if isinstance(expires, (int, float)) and time.time() > expires:
            return "expired", "the command arrived after it expired; nothing was switched"
        output = args.get("output")
        if output not in self.outputs:
            return "unknown_output", f"there is no output {output!r}; there are {', '.join(self.outputs)}"
        if args["on"]:
            for group in self.interlocks:
                if output in group:
                    for other in group:
                        if other != output and self.states[other]:
                            return "interlock", (f"{other} is on: {' and '.join(group)} may never be on together")
        return None
