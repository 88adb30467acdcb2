"""A real RabbitMQ cluster for the tests: N nodes on this machine, each its own Erlang VM.

Each node gets its own ports (MQTT, AMQP, Erlang distribution), its own data and log folder,
and the files jisaku writes for a real node (gateway/rabbitmq.py). All of them share one
Erlang cookie (in a HOME of their own) and one epmd, the Erlang port mapper, on a port of its
own, so nothing here meets a RabbitMQ the machine may run as a service. ``stop()`` kills
every node and that epmd.

Example::

    cluster = RabbitCluster(tmp_path / "rabbit", 3, auth_url="http://127.0.0.1:8089")
    # or one auth service per node (a standby box's node asks its own box's registry):
    cluster = RabbitCluster(tmp_path / "rabbit", 3, auth_url=["http://127.0.0.1:8089", "http://127.0.0.1:8090", …])
    cluster.mqtt_urls        # ["mqtt://127.0.0.1:40001", ...]
    cluster.kill(0)          # the first node dies at once, as if its box lost power
    cluster.stop()
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from jisaku.gateway.rabbitmq import write_node_files

from .brokers import HOST, free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
# The first node starts in about 12 s on two cores, the other two together in about 15 s more.
START_TIMEOUT_S = 90.0


def rabbitmq_available() -> bool:
    """Debian's rabbitmq-server; its own scripts, not /usr/sbin's (those switch to the rabbitmq user)."""
    return os.access(SERVER, os.X_OK) and os.access(CTL, os.X_OK)


def _epmd() -> str | None:
    return shutil.which("epmd") or next(iter(sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))), None)


class RabbitCluster:
    def __init__(self, directory: Path, size: int, auth_url: str | list[str]):
        if not rabbitmq_available():
            raise RuntimeError("RabbitMQ is not installed (sudo apt-get install rabbitmq-server)")
        self.directory = Path(directory)
        self.names = [f"jisaku{i}@localhost" for i in range(1, size + 1)]
        self.mqtt_ports = [free_port() for _ in self.names]
        self.amqp_ports = [free_port() for _ in self.names]
        self.epmd_port = free_port()
        home = self.directory / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        self._base_env = {**os.environ, "HOME": str(home), "ERL_EPMD_PORT": str(self.epmd_port)}
        self._procs: list[subprocess.Popen | None] = []
        auth_urls = [auth_url] * size if isinstance(auth_url, str) else list(auth_url)
        try:
            # The first node alone, then the others together, which join it. (Started all at
            # once, RabbitMQ 3.10's nodes sometimes each wait for another to have formed the
            # cluster, until they give up.)
            self._start_node(0, auth_urls[0])
            self._wait_started([0])
            for i in range(1, size):
                self._start_node(i, auth_urls[i])
            self._wait_started(range(size))
            running = self.running_nodes()
            if sorted(running) != sorted(self.names):
                raise RuntimeError(f"the nodes did not form one cluster: {running} of {self.names}")
        except BaseException:
            self.stop()
            raise

    def _start_node(self, i: int, auth_url: str) -> None:
        node_dir = self.directory / f"node{i + 1}"
        conf = write_node_files(node_dir, self.names, ("127.0.0.1", self.mqtt_ports[i]),
                                ("127.0.0.1", self.amqp_ports[i]), auth_url)
        env = {**self._base_env, "RABBITMQ_NODENAME": self.names[i], "RABBITMQ_CONFIG_FILE": str(conf),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(node_dir / "enabled_plugins"),
               "RABBITMQ_MNESIA_BASE": str(node_dir / "mnesia"), "RABBITMQ_LOG_BASE": str(node_dir / "log"),
               "RABBITMQ_DIST_PORT": str(free_port()), "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1"}
        with open(node_dir / "console.log", "ab") as log:
            # A session of its own: kill() ends the node with everything it started.
            self._procs.append(subprocess.Popen([SERVER], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=log, start_new_session=True))

    @property
    def mqtt_urls(self) -> list[str]:
        return [f"mqtt://{HOST}:{port}" for port in self.mqtt_ports]

    @property
    def amqp_urls(self) -> list[str]:
        return [f"amqp://{HOST}:{port}" for port in self.amqp_ports]

    def log(self, index: int) -> str:
        logs = sorted((self.directory / f"node{index + 1}" / "log").glob("*.log"))
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in logs)

    def _accepting(self, port: int) -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            return False

    def _wait_started(self, which) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        # A node opens its MQTT port last, once it has joined the cluster and started its plugins.
        while not all(self._accepting(self.mqtt_ports[i]) for i in which):
            for i in which:
                if self._procs[i].poll() is not None:
                    raise RuntimeError(f"RabbitMQ node {self.names[i]} exited while starting:\n{self.log(i)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the RabbitMQ nodes did not all start within {START_TIMEOUT_S} s:\n"
                                   + "\n".join(self.log(i)[-1500:] for i in which))
            time.sleep(0.2)

    def running_nodes(self, via: int = 0) -> list[str]:
        """What node `via` says are the cluster's running nodes (rabbitmqctl cluster_status)."""
        done = subprocess.run([CTL, "-n", self.names[via], "cluster_status", "--formatter", "json"],
                              env=self._base_env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl cluster_status failed: {done.stderr or done.stdout}")
        return json.loads(done.stdout)["running_nodes"]

    def kill(self, index: int) -> None:
        """Node `index` dies at once (SIGKILL), as if its box lost power."""
        proc = self._procs[index]
        if proc is None:
            return
        self._procs[index] = None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def stop(self) -> None:
        """Kill every node (their data is thrown away with the test's folder), then their epmd."""
        for i in range(len(self._procs)):
            self.kill(i)
        epmd = _epmd()
        deadline = time.monotonic() + 10
        while epmd is not None and time.monotonic() < deadline:
            # epmd -kill refuses while a node is still registered: it notices a dead one within a moment.
            done = subprocess.run([epmd, "-port", str(self.epmd_port), "-kill"], capture_output=True, text=True,
                                  timeout=10)
            if done.stdout.strip() == "Killed" or "cannot connect" in (done.stdout + done.stderr).lower():
                return
            time.sleep(0.2)
