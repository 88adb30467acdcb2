"""The switch box's simulation: an operator at a switch now and then, on a repeating cycle.

Named in kind.toml (``simulation = "simulate.py:SwitchRoom"``); ``[simulate]`` in device.toml
says when. The presses go through the same rules as commands from afar (interlocks, longest
on-time), so the demo shows a refused pump too. The relays need nothing from the world: the
mock pins simply follow.
"""

from __future__ import annotations

from gpiozero.pins.mock import MockFactory

from jisaku.device.config import DeviceConfig
from jisaku.device.simulate import Scenario


class SwitchRoom(Scenario):
    def __init__(self, config: DeviceConfig, factory: MockFactory):
        super().__init__()
        simulate = config.section("simulate")
        self.presses = [(float(p["at_s"]), p["output"], bool(p["on"])) for p in simulate.get("presses", [])]
        self.cycle_s = float(simulate.get("cycle_s", 120))
        self.box = None
        self.done: set[int] = set()
        self.cycle = 0

    def attach(self, app) -> None:
        self.box = app

    def tick(self, elapsed_s: float) -> None:
        if self.box is None:
            return
        cycle, t = divmod(elapsed_s, self.cycle_s)
        if cycle != self.cycle:
            self.cycle, self.done = cycle, set()
        for number, (at_s, output, on) in enumerate(self.presses):
            if at_s <= t and number not in self.done:
                self.done.add(number)
                self.box.answer({"id": f"sim-{int(cycle)}-{number}", "do": "switch",
                                 "args": {"output": output, "on": on}})
