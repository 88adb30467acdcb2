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


# How often a standby gateway looks whether its box has taken over.
STANDBY_CHECK_S = 2.0
_stop = threading.Event()


def wait_for_stop(timeout: float | None = None) -> bool:
    """Until Ctrl-C or SIGTERM (True), or until `timeout` seconds have passed (False)."""
    signal.signal(signal.SIGTERM, lambda *_: _stop.set())
    try:
        return _stop.wait(timeout)
    except KeyboardInterrupt:
        return True


def run_gateway(client_id: str = "jisaku-gateway", shared: bool = False, rabbitmq: str | None = None,
                standby: bool = False, queue: str | None = None) -> None:
    from jisaku.cli.stores import open_stores
    from jisaku.gateway.alert_engine import start_alerts
    from jisaku.gateway.retention import RetentionPolicy
    from jisaku.gateway.service import Gateway
    from jisaku.gateway.standby import STANDBY_QUEUE, took_over

    settings = load()
    registry, store, influx = open_stores(settings)
    secret = os.environ.get("JISAKU_GATEWAY_SECRET") or registry.service_secret("_gateway", settings.secrets_dir)
    if (standby or queue) and not rabbitmq:
        raise SettingsError("--standby and --queue are for a RabbitMQ cluster: give --rabbitmq too"
                            ' (docs/deploy.md, "A standby box")')
    if queue:
        from jisaku.gateway.amqp_source import check_queue_name

        try:
            check_queue_name(queue)
        except ValueError as err:
            raise SettingsError(f"--queue: {err}") from None
    gateway = Gateway(store, registry, settings.broker, "_gateway", secret, readings=influx,
                      client_id=client_id, shared=shared, retention=RetentionPolicy(*settings.retention_days),
                      rabbitmq=rabbitmq, queue_name=queue or (STANDBY_QUEUE if standby else None))
    alerts = None
    if standby:
        # Only stores until this box takes over (jisaku standby takeover): then it acts.
        gateway.acting = took_over(settings.data_dir)
    if gateway.acting:
        alerts = start_alerts(gateway, settings.notify)  # alert rules, and notifications from [notify]
    gateway.start()
    where = influx or settings.sqlite_path
    source = f"RabbitMQ's queue {gateway.queue.queue} at {rabbitmq}" if rabbitmq else settings.broker
    role = "" if gateway.acting else " (standby: it only stores until jisaku standby takeover)"
    print(f"gateway {client_id} storing from {source} into {where}{role}; Ctrl-C stops it", flush=True)
    while not wait_for_stop(STANDBY_CHECK_S if alerts is None else None):
        if took_over(settings.data_dir):
            print("this box has taken over: the gateway now sends notifications, settings, commands and updates",
                  flush=True)
            gateway.acting = True
            alerts = start_alerts(gateway, settings.notify)
    gateway.stop()
    if alerts is not None:
        alerts.stop()


def cmd_gateway(args: argparse.Namespace) -> None:
    if args.workers > 1:
        # The supervisor needs none of what this process has imported: start it afresh, small.
        os.execv(sys.executable, [sys.executable, "-m", "jisaku.cli.workers", str(args.workers),
                                  *worker_options(args)])
    run_gateway(args.client_id, args.shared, args.rabbitmq, args.standby, args.queue)


def worker_options(args: argparse.Namespace) -> list[str]:
    """What each worker of --workers N is given of this command's options."""
    return [*(["--rabbitmq", args.rabbitmq] if args.rabbitmq else ["--shared"]),
            *(["--standby"] if args.standby else []), *(["--queue", args.queue] if args.queue else [])]


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
    gateway.add_argument("--standby", action="store_true",
                         help="on a standby box: read its own queue (jisaku-standby) and only store, until"
                              ' jisaku standby takeover (docs/deploy.md, "A standby box")')
    gateway.add_argument("--queue", metavar="NAME",
                         help="the RabbitMQ queue this box's gateways read (default jisaku-gateway; with"
                              " --standby jisaku-standby): each box keeps its own")
    gateway.set_defaults(run=cmd_gateway)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m jisaku.cli.gateway", description="one gateway process")
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--client-id", default="jisaku-gateway")
    parser.add_argument("--rabbitmq")
    parser.add_argument("--standby", action="store_true")
    parser.add_argument("--queue")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        run_gateway(args.client_id, args.shared, args.rabbitmq, args.standby, args.queue)
    except SettingsError as err:
        sys.exit(f"jisaku: {err}")
