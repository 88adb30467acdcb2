"""``jisaku gateway --workers N``: N gateway processes sharing the load through the broker.

Python runs one thread at a time per process, so one gateway process keeps one core
busy. With ``--workers N`` this process starts N gateways, each with its own client id
and persistent session on the shared subscription ``$share/jisaku/jisaku/#``: the broker
gives each message to one of them, and all of them write to the same store. A worker
that dies is started again (the broker keeps its session, and what it had not
acknowledged, until it is back).

Shared subscriptions need Mosquitto (or EMQX, VerneMQ, HiveMQ); the embedded broker
refuses them. On a RabbitMQ cluster (``--rabbitmq URLS``) the workers read one replicated
queue instead, each message going to one of them, the same way (docs/deploy.md, "A broker cluster"). Two gateways on two machines work the same way: run
``jisaku gateway --shared --client-id jisaku-gateway-a`` on one and ``…-b`` on the other.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0


def worker_command(index: int, options: list[str]) -> list[str]:
    """One worker: ``options`` are what jisaku gateway passes on (--shared, or --rabbitmq URLS [--standby] …)."""
    return [sys.executable, "-m", "jisaku.cli.gateway", *options, "--client-id", f"jisaku-gateway-{index}"]


def run_workers(count: int, options: list[str] | None = None) -> None:
    """Run ``count`` gateway processes until SIGTERM or Ctrl-C, restarting any that dies."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    options = options or ["--shared"]
    workers = [subprocess.Popen(worker_command(i, options)) for i in range(1, count + 1)]
    sharing = "RabbitMQ's gateway queue" if "--rabbitmq" in options else "the shared subscription"
    print(f"gateway: {count} worker processes on {sharing}; Ctrl-C stops them", flush=True)
    try:
        while not stop.wait(0.5):
            for i, worker in enumerate(workers):
                if worker.poll() is not None:
                    log.error("gateway worker %d exited with %s; starting it again", i + 1, worker.returncode)
                    time.sleep(RESTART_DELAY_S)
                    workers[i] = subprocess.Popen(worker_command(i + 1, options))
    except KeyboardInterrupt:
        pass
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()


if __name__ == "__main__":
    # `jisaku gateway --workers N` becomes this small process (stdlib only) to watch the workers.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    run_workers(int(sys.argv[1]), sys.argv[2:])
