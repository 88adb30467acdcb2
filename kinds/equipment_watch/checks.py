"""Three ways to see whether a piece of equipment answers: ping, a TCP port, an HTTP page.

Each check has a name (it gives the readings ``<name>_up`` and ``<name>_ms``), what to
reach and a timeout. ``probe()`` tries once and says what it saw; it never raises for
a dead host, it says why it is down.

Setup: nothing to install; ping uses the system's ``ping`` command (package iputils-ping,
there on Raspberry Pi OS and Debian). See README.md for pinging as an ordinary user.

Example::

    router = TcpCheck("router", "192.168.1.1", 443, timeout_s=3)
    result = router.probe()
    result.up, result.ms, result.reason   # (True, 2.4, "")  or  (False, None, "connection refused")
    checks = read_checks(config, default_timeout_s=3)   # the [[checks]] of device.toml, checked
"""

from __future__ import annotations

import errno
import http.client
import math
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jisaku.device.config import CONFIG_NAME, DeviceConfig, DeviceConfigError

# A check's name becomes part of metric names (<name>_up), which are [a-z0-9_].
NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
KEYS = ("name", "ping", "tcp", "http", "expect_status", "timeout_s", "verify_tls")
WAYS = ("ping", "tcp", "http")


@dataclass(frozen=True)
class Result:
    """What one try saw: up with a response time in ms, or down with the reason."""

    up: bool
    ms: float | None = None
    reason: str = ""


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def why(err: BaseException) -> str:
    """A short reason a person understands, for a failed connection."""
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        err = err.reason
    if isinstance(err, TimeoutError):                       # socket.timeout is TimeoutError
        return "timed out"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    if isinstance(err, socket.gaierror):
        return "name not known"
    if isinstance(err, ssl.SSLCertVerificationError):
        return "certificate not trusted (write verify_tls = false for the equipment's own certificate)"
    if isinstance(err, OSError) and err.errno == errno.EHOSTUNREACH:
        return "host unreachable"
    if isinstance(err, OSError) and err.errno == errno.ENETUNREACH:
        return "network unreachable"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


class Check:
    """One thing to watch. Subclasses say how to try it once in ``probe()``."""

    way = ""

    def __init__(self, name: str, timeout_s: float):
        self.name = name
        self.timeout_s = timeout_s
        self.own_timeout = False  # True when device.toml gave this check its own timeout_s

    @property
    def target(self) -> str:
        """What it reaches, as written in device.toml."""
        raise NotImplementedError

    def probe(self) -> Result:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.target!r})"


# ---------------------------------------------------------------- ping


def system_ping(host: str, timeout_s: float) -> Result:
    """One echo request with the system's ``ping`` command (iputils-ping).

    Why the command and not a Python ICMP library: on Debian and Raspberry Pi OS the
    ``ping`` binary may already ping as an ordinary user (a file capability, or the
    ping_group_range sysctl); a library can only use the sysctl. See README.md.
    """
    # -n: no name look-ups of the answer; -W: whole seconds, the lowest common form.
    command = ["ping", "-n", "-c", "1", "-W", str(max(1, math.ceil(timeout_s))), host]
    # LC_ALL=C: a Japanese locale would print "時間=0.1ミリ秒" instead of "time=0.1 ms".
    environment = {**os.environ, "LC_ALL": "C"}
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout_s + 5)
    except FileNotFoundError:
        return Result(False, None, "the ping command is not installed (sudo apt install iputils-ping)")
    except subprocess.TimeoutExpired:
        return Result(False, None, "timed out")
    if done.returncode == 0:
        found = re.search(r"time[=<]\s*([\d.]+)\s*ms", done.stdout)
        return Result(True, float(found.group(1)) if found else elapsed_ms(started))
    output = done.stdout + done.stderr
    if "nreachable" in output:
        return Result(False, None, "host unreachable")
    if done.returncode == 1:  # sent, but no answer in time
        return Result(False, None, "timed out")
    last = (done.stderr.strip().splitlines() or ["ping failed"])[-1]
    return Result(False, None, last.removeprefix("ping: "))


class PingCheck(Check):
    """An ICMP echo request ("ping"): is the box switched on and on the network?"""

    way = "ping"

    def __init__(self, name: str, host: str, timeout_s: float,
                 pinger: Callable[[str, float], Result] = system_ping):
        super().__init__(name, timeout_s)
        self.host = host
        self.pinger = pinger  # the simulation plays the network here: no ICMP on a laptop

    @property
    def target(self) -> str:
        return self.host

    def probe(self) -> Result:
        return self.pinger(self.host, self.timeout_s)


# ---------------------------------------------------------------- a TCP port


class TcpCheck(Check):
    """A TCP connection to a port: does the service (web admin, SIP, SSH) accept calls?"""

    way = "tcp"

    def __init__(self, name: str, host: str, port: int, timeout_s: float):
        super().__init__(name, timeout_s)
        self.host, self.port = host, port

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def probe(self) -> Result:
        started = time.perf_counter()
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout_s):
                return Result(True, elapsed_ms(started))
        except OSError as err:
            return Result(False, None, why(err))


# ---------------------------------------------------------------- an HTTP status page


class HttpCheck(Check):
    """An HTTP GET of a status page: does it answer with the expected status (200)?"""

    way = "http"

    def __init__(self, name: str, url: str, timeout_s: float, expect_status: int = 200, verify_tls: bool = True):
        super().__init__(name, timeout_s)
        self.url, self.expect_status = url, expect_status
        context = ssl.create_default_context()
        if not verify_tls:
            # Routers and phone exchanges often have a certificate they made themselves.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        # No proxy: the equipment is on the town's own LAN, even where http_proxy is set for the internet.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                  urllib.request.HTTPSHandler(context=context))

    @property
    def target(self) -> str:
        return self.url

    def probe(self) -> Result:
        request = urllib.request.Request(self.url, headers={"User-Agent": "jisaku-equipment-watch"})
        started = time.perf_counter()
        try:
            with self.opener.open(request, timeout=self.timeout_s) as response:
                status = response.status
                response.read(65536)  # the page must come, not only its first line
        except urllib.error.HTTPError as err:  # 4xx and 5xx come as an exception
            status = err.code
            err.close()
        except (OSError, http.client.HTTPException) as err:
            return Result(False, None, why(err) if isinstance(err, OSError) else "not an HTTP answer")
        if status != self.expect_status:
            return Result(False, None, f"HTTP {status}")
        return Result(True, elapsed_ms(started))


# ---------------------------------------------------------------- [[checks]] in device.toml


def check_lines(path: Path) -> list[int]:
    """The line number of each ``[[checks]]`` in the file, so that errors can point at it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    return [n for n, line in enumerate(text.splitlines(), 1) if re.match(r"\s*\[\[\s*checks\s*\]\]", line)]


def metric_name(written: str) -> str:
    """What a staffer probably meant: "Phone exchange" -> "phone_exchange"."""
    name = re.sub(r"[^a-z0-9]+", "_", written.lower()).strip("_")
    return name if name[:1].isalpha() else f"check_{name}"


def read_checks(config: DeviceConfig, default_timeout_s: float) -> list[Check]:
    """The ``[[checks]]`` of device.toml as Check objects; a DeviceConfigError names the line and the fix."""
    path = config.folder / CONFIG_NAME
    entries = config.tables.get("checks")
    if not isinstance(entries, list) or not entries:
        raise DeviceConfigError(
            f"{path}: nothing to watch. Add a [[checks]] table for each piece of equipment, e.g.\n"
            '  [[checks]]\n  name = "router"\n  tcp = "192.168.1.1:443"')
    lines = check_lines(path)
    checks: list[Check] = []
    for number, entry in enumerate(entries):
        where = f"{path} line {lines[number]}" if number < len(lines) else f"{path}: [[checks]] number {number + 1}"
        check = read_check(entry, where, default_timeout_s)
        if any(c.name == check.name for c in checks):
            raise DeviceConfigError(f"{where}: a second check called {check.name!r}: each needs its own name,"
                                    " as it names the readings")
        checks.append(check)
    return checks


def read_check(entry: Any, where: str, default_timeout_s: float) -> Check:
    """One ``[[checks]]`` table."""
    if not isinstance(entry, dict):
        raise DeviceConfigError(f"{where}: write each check as a [[checks]] table")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise DeviceConfigError(f"{where}: unknown {', '.join(unknown)}; a check may have {', '.join(KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        hint = f'name = "{metric_name(name)}"' if isinstance(name, str) and name.strip() else 'name = "router"'
        raise DeviceConfigError(
            f"{where}: name {name!r} cannot name readings: use a-z, 0-9 and _ (starting with a letter, at most 40),"
            f" e.g. {hint}")
    ways = [w for w in WAYS if w in entry]
    if len(ways) != 1:
        raise DeviceConfigError(
            f"{where} ({name}): give exactly one of ping = \"192.168.1.20\", tcp = \"192.168.1.1:443\""
            f" or http = \"http://192.168.1.30/status\"" + (f", not {' and '.join(ways)}" if ways else ""))
    way, value = ways[0], entry[ways[0]]
    timeout_s = entry.get("timeout_s", default_timeout_s)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 60:
        raise DeviceConfigError(f"{where} ({name}): timeout_s must be seconds, more than 0 and at most 60,"
                                f" e.g. timeout_s = 3, not {timeout_s!r}")
    if not isinstance(value, str) or not value.strip():
        raise DeviceConfigError(f"{where} ({name}): {way} must be text in quotes, e.g. {way} = \"192.168.1.1\"")
    if way != "http" and ("expect_status" in entry or "verify_tls" in entry):
        raise DeviceConfigError(f"{where} ({name}): expect_status and verify_tls are for http checks only")
    if way == "ping":
        check: Check = PingCheck(name, value.strip(), float(timeout_s))
    elif way == "tcp":
        host, port = host_and_port(value.strip(), f"{where} ({name})")
        check = TcpCheck(name, host, port, float(timeout_s))
    else:
        check = http_check(name, value.strip(), entry, float(timeout_s), f"{where} ({name})")
    check.own_timeout = "timeout_s" in entry
    return check


def host_and_port(value: str, where: str) -> tuple[str, int]:
    """ "192.168.1.1:443" or "[fd00::1]:443" -> (host, port)."""
    found = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", value)
    port = int(found.group(2) or found.group(4)) if found else 0
    if not found or not 1 <= port <= 65535:
        raise DeviceConfigError(f"{where}: tcp must be \"host:port\" with a port 1-65535,"
                                f" e.g. tcp = \"192.168.1.1:443\", not {value!r}")
    return found.group(1) or found.group(3), port


def http_check(name: str, url: str, entry: dict[str, Any], timeout_s: float, where: str) -> HttpCheck:
    if not re.match(r"https?://[^/\s]+", url):
        raise DeviceConfigError(f"{where}: http must be an address starting with http:// or https://,"
                                f" e.g. http = \"http://192.168.1.30/status\", not {url!r}")
    expect = entry.get("expect_status", 200)
    if isinstance(expect, bool) or not isinstance(expect, int) or not 100 <= expect <= 599:
        raise DeviceConfigError(f"{where}: expect_status must be an HTTP status such as 200, not {expect!r}")
    verify = entry.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise DeviceConfigError(f"{where}: verify_tls must be true or false, not {verify!r}")
    return HttpCheck(name, url, timeout_s, expect_status=expect, verify_tls=verify)


def ping_ready() -> str:
    """"" when this box can ping as the user it runs as; else what to do about it."""
    if shutil.which("ping") is None:
        return "the ping command is not installed: sudo apt install iputils-ping"
    result = system_ping("127.0.0.1", 1)
    if not result.up and ("permitted" in result.reason or "capabilit" in result.reason):
        return (f"this user may not ping ({result.reason}). Allow it, e.g. "
                "echo 'net.ipv4.ping_group_range = 0 2147483647' | sudo tee /etc/sysctl.d/60-ping.conf"
                " && sudo sysctl --system (see README.md)")
    return ""
