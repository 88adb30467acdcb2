"""``jisaku gateway``: one gateway process, or (``--workers N``) a supervisor of N.

Each worker of ``jisaku gateway --workers N`` is started as ``python -m jisaku.cli.gateway``,
which imports only what a gateway needs, and stays small on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from jisaku.contract.settings import SettingsError, load


def wait_for_stop() -> None:
    """Until Ctrl-C or SIGTERM."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass


def run_gateway(client_id: str = "jisaku-gateway", shared: bool = False, rabbitmq: str | None = None) -> None:
    from jisaku.cli.stores import open_stores
    from jisaku.gateway.alert_engine import start_alerts
    from jisaku.gateway.retention import RetentionPolicy
    from jisaku.gateway.service import Gateway

    settings = load()
    registry, store, influx = open_stores(settings)
    secret = os.environ.get("JISAKU_GATEWAY_SECRET") or registry.service_secret("_gateway", settings.secrets_dir)
    gateway = Gateway(store, registry, settings.broker, "_gateway", secret, readings=influx,
                      client_id=client_id, shared=shared, retention=RetentionPolicy(*settings.retention_days),
                      rabbitmq=rabbitmq)
    alerts = start_alerts(gateway, settings.notify)  # alert rules, and notifications from [notify]
    gateway.start()
    where = influx or settings.sqlite_path
    source = f"RabbitMQ's queue at {rabbitmq}" if rabbitmq else settings.broker
    print(f"gateway {client_id} storing from {source} into {where}; Ctrl-C stops it", flush=True)
    wait_for_stop()
    gateway.stop()
    alerts.stop()


def cmd_gateway(args: argparse.Namespace) -> None:
    if args.workers > 1:
        # The supervisor needs none of what this process has imported: start it afresh, small.
        os.execv(sys.executable, [sys.executable, "-m", "jisaku.cli.workers", str(args.workers),
                                  *([args.rabbitmq] if args.rabbitmq else [])])
    run_gateway(args.client_id, args.shared, args.rabbitmq)


def add_parser(commands) -> None:
    gateway = commands.add_parser("gateway", help="subscribe, check and store")
    gateway.add_argument("--workers", type=int, default=1, metavar="N",
                         help="run N gateway processes sharing the load (needs Mosquitto's shared subscriptions)")
    gateway.add_argument("--shared", action="store_true",
                         help="take a share of the messages ($share/jisaku/jisaku/#) beside other gateways")
    gateway.add_argument("--client-id", default="jisaku-gateway",
                         help="MQTT client id; each gateway on a shared subscription needs its own")
    gateway.add_argument("--rabbitmq", metavar="URLS",
                         help='on a RabbitMQ cluster: read the gateways\' queue from these nodes,'
                              ' "amqp://10.0.0.5:5672 amqp://10.0.0.6:5672" (docs/deploy.md, "A broker cluster")')
    gateway.set_defaults(run=cmd_gateway)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m jisaku.cli.gateway", description="one gateway process")
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--client-id", default="jisaku-gateway")
    parser.add_argument("--rabbitmq")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        run_gateway(args.client_id, args.shared, args.rabbitmq)
    except SettingsError as err:
        sys.exit(f"jisaku: {err}")
