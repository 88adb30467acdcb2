"""jisaku's MicroPython firmware, shipped as data for ``jisaku flash``.

Only ``lib/switchboard.py`` is also imported on the Raspberry Pi
(``from jisaku.firmware.lib.switchboard import SwitchBoard``), so a Pi and a board
switch their outputs by the very same rules. The other files in ``lib/`` are for boards.
"""
