"""Talking to a MicroPython board on USB: find its port, drive mpremote, see it come online.

``jisaku flash`` builds its plan from these and runs it; each function here does one thing
and says what to do when it cannot.

Example::

    port, how = find_port()                       # "/dev/ttyUSB0", "Silicon Labs CP210x"
    run_mpremote(port, ["exec", "print(1)"])      # python -m mpremote connect PORT exec ...
    StatusWatch("snow-3", "mqtt://127.0.0.1:1883", "_gateway", secret)  # see its docstring
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from serial.tools import list_ports

from jisaku.contract import protocol

# docs/flashing.md tells how to put MicroPython itself on a board.
FLASHING_DOC = "docs/flashing.md"

# USB vendor ids of the serial chips found on the usual boards, and what to call them.
USB_SERIAL_CHIPS = {
    0x10C4: "Silicon Labs CP210x (ESP32 DevKit)",
    0x1A86: "WCH CH340/CH9102 (ESP32 DevKit)",
    0x0403: "FTDI",
    0x2E8A: "Raspberry Pi Pico (MicroPython)",
    0x303A: "Espressif native USB (ESP32-S3/C3)",
}

NO_BOARD_HELP = (
    "Plug the board in with a data USB cable (charge-only cables have no data wires), then\n"
    "  check that it appears:  ls /dev/ttyUSB* /dev/ttyACM*\n"
    "  and that you may use it: sudo usermod -aG dialout $USER  (then log out and in again).\n"
    "Or name the port: --port /dev/ttyUSB0"
)

NOT_MICROPYTHON_HELP = (
    "The board on {port} did not give a MicroPython prompt: MicroPython is probably not\n"
    "installed on it yet (a new board comes with other firmware). Put MicroPython on it first,\n"
    "as " + FLASHING_DOC + " shows (esptool for an ESP32, the UF2 file for a Pico W), then run\n"
    "jisaku flash again. If it already has MicroPython, close any other program using the port\n"
    "(Thonny, a serial monitor) and press the board's reset (EN) button."
)

NEVER_ONLINE_HELP = (
    "{device_id} did not say it is online within {wait:g} s. The board is flashed; what usually\n"
    "stops it from connecting:\n"
    "  - the Wi-Fi name or password in config.json is wrong (they are case-sensitive);\n"
    "  - the network is 5 GHz only: ESP32 and Pico W boards use 2.4 GHz Wi-Fi;\n"
    "  - the broker address {host}:{port} is not reachable from the board's network\n"
    "    (use this computer's LAN address, and the same network as the board);\n"
    "  - a firewall blocks port {port} (e.g. sudo ufw allow {port}/tcp);\n"
    "  - the broker or the gateway is not running (jisaku broker / jisaku gateway);\n"
    "  - with Mosquitto: it learns a new secret only through jisaku mosquitto sync (keep it\n"
    "    running, or run jisaku mosquitto sync --once).\n"
    "To see what the board says: python -m mpremote connect {port_name} repl, then press the\n"
    "board's reset button. Run jisaku flash again after fixing it."
)


class BoardError(RuntimeError):
    """Something about the board or its port, with what to do about it."""


def describe_chip(port: list_ports.ListPortInfo) -> str | None:
    """What a port is, if it is one of the usual USB-serial chips; None otherwise."""
    return USB_SERIAL_CHIPS.get(port.vid) if port.vid is not None else None


def find_port(ports: list[list_ports.ListPortInfo] | None = None) -> tuple[str, str]:
    """The one board plugged in: ``(device path, what chip)``; BoardError for none or several.

    ``ports`` defaults to what the operating system lists now.
    """
    ports = list_ports.comports() if ports is None else ports
    boards = [(p.device, describe_chip(p)) for p in sorted(ports, key=lambda p: p.device)]
    known = [(device, chip) for device, chip in boards if chip]
    if len(known) == 1:
        return known[0]
    if len(known) > 1:
        listing = "\n".join(f"  {device}  {chip}" for device, chip in known)
        raise BoardError(f"several boards are plugged in:\n{listing}\nSay which one with --port, "
                         f"e.g. --port {known[0][0]}")
    other_usb = [p for p in ports if p.vid is not None]
    if other_usb:
        listing = "\n".join(f"  {p.device}  {p.description} ({p.vid:04x}:{p.pid or 0:04x})" for p in other_usb)
        raise BoardError(f"no usual board chip found, but these USB serial ports exist:\n{listing}\n"
                         f"If one is your board, name it with --port.")
    raise BoardError("no board found on USB.\n" + NO_BOARD_HELP)


def check_port(port: str) -> None:
    """BoardError if ``port`` does not exist or this user may not open it."""
    if not os.path.exists(port):
        raise BoardError(f"there is no {port}.\n" + NO_BOARD_HELP)
    if not os.access(port, os.R_OK | os.W_OK):
        raise BoardError(f"you may not open {port}: add yourself to the dialout group\n"
                         f"  sudo usermod -aG dialout $USER   (then log out and in again)")


def mpremote_command(port: str, args: list[str]) -> list[str]:
    """The command line that runs mpremote ``args`` on the board at ``port``."""
    return [sys.executable, "-m", "mpremote", "connect", port, *args]


def run_mpremote(port: str, args: list[str], timeout_s: float = 300) -> str:
    """Run mpremote on the board and return what it printed; BoardError with advice if it fails."""
    check_port(port)
    try:
        done = subprocess.run(mpremote_command(port, args), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BoardError(f"the board on {port} did not answer within {timeout_s:g} s.\n"
                         + NOT_MICROPYTHON_HELP.format(port=port)) from None
    if done.returncode == 0:
        return done.stdout
    said = (done.stderr or done.stdout).strip()
    if "could not enter raw repl" in said or "could not exec command" in said:
        raise BoardError(NOT_MICROPYTHON_HELP.format(port=port))
    if "failed to access" in said:
        raise BoardError(f"could not open {port}: another program (Thonny, a serial monitor, another\n"
                         f"mpremote) may be using it; close it and try again. mpremote said: {said}")
    raise BoardError(f"mpremote {' '.join(args[:2])} failed on {port}: {said}")


def check_micropython(port: str, timeout_s: float = 20) -> str:
    """What the board says it is (e.g. "ESP32 module with ESP32"); BoardError if not MicroPython.

    A board without MicroPython gives mpremote no prompt, and mpremote then waits for ever:
    ``timeout_s`` ends that.
    """
    said = run_mpremote(port, ["exec", CHECK_CODE], timeout_s=timeout_s).strip()
    if not said.startswith("micropython"):
        raise BoardError(NOT_MICROPYTHON_HELP.format(port=port))
    return said.partition(" ")[2]


# Printed by the board: "micropython <what board this is>".
CHECK_CODE = "import sys,os;print(sys.implementation.name,os.uname().machine)"


class StatusWatch:
    """Watches ``jisaku/<id>/status`` for the device saying it is online.

    Start it before resetting the board, so that a quick board is not missed. Only a status
    sent after the watch started counts: the retained one the broker hands out on
    subscribing may be left from before the reset.

    Example::

        watch = StatusWatch("snow-3", "mqtt://127.0.0.1:1883", "_gateway", secret)
        watch.start()
        ...                                      # reset the board
        watch.wait(60)                           # True once it said "online"
        watch.stop()
    """

    def __init__(self, device_id: str, broker_url: str, username: str, secret: str):
        from jisaku.contract.mqtt import BrokerAddress, new_client

        self.device_id = device_id
        self.broker = BrokerAddress.parse(broker_url)
        self.topic = f"jisaku/{device_id}/status"
        self._online = threading.Event()
        self._subscribed = threading.Event()
        self._started = False
        self._client = new_client(f"jisaku-flash-{os.getpid()}", username, secret, self.broker)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, message):
        if message.retain:  # left from before: not news
            return
        try:
            status = protocol.decode_status(message.payload)
        except protocol.ProtocolError:
            return
        if status.state == protocol.STATUS_ONLINE:
            self._online.set()

    def start(self, timeout_s: float = 10) -> None:
        """Connect and subscribe; BoardError if the broker cannot be reached from here."""
        try:
            self._client.connect(self.broker.host, self.broker.port)
        except OSError as err:
            raise BoardError(f"cannot reach the broker at {self.broker} to watch for {self.device_id}"
                             f" ({err}); is jisaku broker or mosquitto running?") from None
        self._client.loop_start()
        self._started = True
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise BoardError(f"the broker at {self.broker} did not let jisaku watch {self.topic}:"
                             " is the gateway's secret (data/secrets/gateway.secret) the broker's?")

    def wait(self, wait_s: float) -> bool:
        """True as soon as the device says it is online; False after ``wait_s`` seconds."""
        return self._online.wait(wait_s)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._client.disconnect()
            self._client.loop_stop()


def repo_path(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it, for shorter messages."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
