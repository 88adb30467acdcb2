"""The real switch box (kinds/switch_box) for the server's tests, on gpiozero's mock pins.

It is the app ``jisaku device run`` runs, on a real DeviceLink and the shared switching rules
(firmware/lib/switchboard.py): it lists its outputs in its status, answers ``switch``
commands on ``cmd/ack`` (done with every output's state, or refused with a ``code`` and a
``reason``), and reports each output's state as a ``<output>_on`` reading. Two things only a
test needs: ``commands``, every command it received, and ``silent``, a box that receives
commands and never answers (a hung board).

Example::

    box = SwitchBox.in_town(town, "heater-1", {"heater": "Road heater", "pump_1": "Pump 1", "pump_2": "Pump 2"},
                            interlocks=[("pump_1", "pump_2")])
    box.start()
    box.states["heater"]      # 0 or 1, as the device itself has it
    box.stop()
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from jisaku.contract import kinds
from jisaku.device.config import DeviceConfig
from jisaku.device.link import DeviceLink
from jisaku.device.remote_settings import RemoteSettings
from jisaku.device.runner import run_command
from jisaku.gateway.registry import DeviceRecord
from jisaku.kinds.switch_box.pi import SwitchBox as SwitchBoxApp


def register(town: Any, device_id: str, kind: str) -> str:
    """Register a device in a tests.town.Town after it started, and let it log in to the broker."""
    town.secrets[device_id] = town.registry.add_device(DeviceRecord(device_id, kind, name=device_id,
                                                                    public=False, interval_s=60))
    if hasattr(town.broker, "accounts"):  # the embedded broker reads its accounts at every connect
        town.broker.accounts[device_id] = town.secrets[device_id]
    else:  # Mosquitto: write its password file again
        town.broker.reload({**town.secrets, "_gateway": town.gateway_secret, "_tester": town.tester_secret})
    return town.secrets[device_id]


class _WatchedLink(DeviceLink):
    """A DeviceLink that notes every command, and can keep quiet (a board that hangs)."""

    box: "SwitchBox"

    def _answer_command(self, command: dict[str, Any]) -> None:
        self.box.commands.append(command)
        if not self.box.silent:
            super()._answer_command(command)


class SwitchBox:
    def __init__(self, config: DeviceConfig, link: _WatchedLink, state_dir: Path):
        link.box = self
        self.link = link
        self.silent = False           # True: receives commands and never answers (a hung board)
        self.commands: list[dict[str, Any]] = []  # every command received, in order
        self.app = SwitchBoxApp(config, link, pin_factory=MockFactory())
        settings = RemoteSettings(self.app, kinds.folder("switch_box").device_settings(), state_dir)
        link.on_config = settings.apply
        link.on_command = lambda do, args: run_command(self.app, do, args)
        link.on_request = self.app.answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.app.run, args=(self._stop,), daemon=True)

    @classmethod
    def in_town(cls, town: Any, device_id: str, outputs: dict[str, str],
                interlocks: list[tuple[str, ...]] = (), new: bool = True) -> "SwitchBox":
        """Register ``device_id`` in a tests.town.Town (kind switch_box) and make its box (not started).

        ``new=False``: the same box powered up again (registered already; same state folder and
        MQTT session)."""
        if new:
            register(town, device_id, "switch_box")
        state_dir = town.directory / "devices" / device_id
        config = DeviceConfig(state_dir, {
            "device": {"id": device_id, "kind": "switch_box", "interval_s": 60},
            "switching": {"interlocks": [list(group) for group in interlocks]},
            "outputs": {name: {"pin": 17 + number, "name": label, "safe": "off"}
                        for number, (name, label) in enumerate(outputs.items())},
        })
        link = _WatchedLink(device_id, town.secrets[device_id], town.broker_url, state_dir,
                            info={"fw": "test-switch-box"}, persistent=True)
        return cls(config, link, state_dir)

    @property
    def states(self) -> dict[str, int]:
        """Every output's state as the device has it: ``{"heater": 1, "pump_1": 0, ...}``."""
        return self.app.outputs.board.states()

    def start(self) -> None:
        self.link.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.app.close()
        self.link.stop()
