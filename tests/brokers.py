"""Real MQTT brokers for the test suite: a Mosquitto subprocess and the embedded amqtt broker.

Plain functions and classes, no fixtures, so that conftest.py decides scopes and skipping.
Both brokers take `accounts` (username -> secret) and enforce jisaku's ACL.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from jisaku.gateway.broker import EmbeddedBroker
from jisaku.gateway.mosquitto import write_mosquitto_files

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port that was free a moment ago (good enough for tests; the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def mosquitto_path() -> str | None:
    """Debian installs the broker in /usr/sbin, which is not on a normal user's PATH."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def mosquitto_available() -> bool:
    return mosquitto_path() is not None


def _wait_accepting(port: int, alive: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
    """Block until something accepts TCP on `port`; fail early if `alive()` turns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("broker exited during start-up")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing accepted connections on {HOST}:{port} within {timeout} s")


def _mqtt_round_trip(port: int) -> None:
    """Send an anonymous CONNECT and read the (refusing) CONNACK.

    Mosquitto handles a reload completely before it serves the next network event, so an
    answer here means the reload it had already started is finished.
    """
    connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 60, 0, 0])
    with socket.create_connection((HOST, port), timeout=STOP_TIMEOUT_S) as s:
        s.sendall(connect)
        s.recv(4)


class ServerProcess:
    """A server the tests run as a child process: ``start()`` is the subclass's; stopping is shared."""

    _proc: subprocess.Popen | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()  # SIGTERM: the server saves its state on the way out
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop and start again: same port, same files, same persistence."""
        self.stop()
        self.start()

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class MosquittoServer(ServerProcess):
    """A real `mosquitto -c <dir>/mosquitto.conf` on a free port, configured by jisaku's files.

    Its log (stderr) goes to `<dir>/mosquitto.log`; persistence stays in `directory`, so
    `restart()` keeps retained messages and persistent sessions.
    """

    def __init__(self, directory: Path, accounts: dict[str, str]) -> None:
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (sudo apt-get install mosquitto)")
        self._exe = exe
        self.directory = Path(directory)
        self.port = free_port()
        self.log_path = self.directory / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._conf = self._write(accounts)
        self.start()

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def _write(self, accounts: dict[str, str]) -> Path:
        # Started as root, Mosquitto would switch to the "mosquitto" user, which cannot read
        # the 0600 files in a 0700 pytest directory.
        user = "root" if os.geteuid() == 0 else None
        return write_mosquitto_files(self.directory, accounts, self.port, HOST, persistence=True, user=user)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("mosquitto already running")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self._exe, "-c", str(self._conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        proc = self._proc
        try:
            _wait_accepting(self.port, lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {exc}\n{self.log()}") from exc

    def reload(self, accounts: dict[str, str]) -> None:
        """Rewrite passwd/acl for `accounts` and make the running broker apply them (SIGHUP)."""
        if self._proc is None:
            raise RuntimeError("mosquitto is not running")
        self._conf = self._write(accounts)
        before = self.log().count("Reloading config")
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.log().count("Reloading config") <= before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"mosquitto did not reload\n{self.log()}")
            time.sleep(0.02)
        _mqtt_round_trip(self.port)


class EmbeddedBrokerThread:
    """`EmbeddedBroker` on its own asyncio loop in a daemon thread, for synchronous tests."""

    def __init__(self, accounts: dict[str, str]) -> None:
        self.accounts = accounts  # read on every CONNECT, so tests may change it in place
        self.port = free_port()
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        """Start (again, after stop(): same port, same accounts; retained messages are gone)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the embedded broker is already running")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-broker", daemon=True)
        self._thread.start()
        self._broker = EmbeddedBroker(HOST, self.port, authenticate=self._authenticate)
        try:
            asyncio.run_coroutine_threadsafe(self._broker.start(), self._loop).result(START_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise

    def _authenticate(self, username: str, password: str) -> bool:
        secret = self.accounts.get(username)
        return secret is not None and hmac.compare_digest(secret.encode(), password.encode())

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def stop(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._broker.stop(), self._loop).result(STOP_TIMEOUT_S)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> EmbeddedBrokerThread:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
