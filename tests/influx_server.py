"""A real InfluxDB 1.x server (Debian's ``influxdb`` package, ``/usr/bin/influxd``) for the tests.

Plain class, no fixtures, so that the test module decides scopes and skipping::

    with InfluxServer(tmp_path / "influx") as server:
        store = InfluxStore(server.url, tmp_path / "spool")

The server gets its own config file, meta/data/wal directories in ``directory``, an HTTP
port and an RPC (backup/restore) port, both on 127.0.0.1 and both free when it started.
Every other listener (graphite, collectd, opentsdb, udp) is off, as is usage reporting.
``stop()`` and ``start()`` keep the port and the data, so a test can take the server away
for a while and bring it back.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .brokers import HOST, ServerProcess, free_port

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
DATABASE = "jisaku"


def influxd_path() -> str | None:
    return shutil.which("influxd") or shutil.which("influxd", path="/usr/bin:/usr/sbin:/usr/local/bin")


def influxd_available() -> bool:
    return influxd_path() is not None


CONFIG = """\
# Written by jisaku's tests/influx_server.py; nothing here listens beyond 127.0.0.1.
reporting-disabled = true
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{dir}/meta"
  logging-enabled = false

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "{host}:{http_port}"
  auth-enabled = {auth}
  log-enabled = false
  pprof-enabled = false
  flux-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""


class InfluxServer(ServerProcess):
    """``influxd -config <dir>/influxdb.conf`` on free ports; its output goes to ``<dir>/influxd.log``.

    ``auth=True`` turns on HTTP authentication; the tests then create the first (admin)
    user themselves, which InfluxDB 1.x allows without credentials while no user exists.
    """

    def __init__(self, directory: Path, auth: bool = False) -> None:
        exe = influxd_path()
        if exe is None:
            raise RuntimeError("influxd is not installed (sudo apt-get install influxdb)")
        self._exe = exe
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.rpc_port = free_port()
        while self.rpc_port == self.port:
            self.rpc_port = free_port()
        self.log_path = self.directory / "influxd.log"
        self.config_path = self.directory / "influxdb.conf"
        self.config_path.write_text(CONFIG.format(
            host=HOST, rpc_port=self.rpc_port, http_port=self.port, dir=self.directory,
            auth="true" if auth else "false"))
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The store URL jisaku takes (``JISAKU_STORE``), for the ``jisaku`` database."""
        return f"influxdb://{HOST}:{self.port}/{DATABASE}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/ping", timeout=1.0) as response:
                return response.status == 204
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("influxd already running")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self._exe, "-config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ping():
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"influxd exited during start-up\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"influxd did not answer /ping within {START_TIMEOUT_S} s\n{self.log()}")
            time.sleep(0.05)

