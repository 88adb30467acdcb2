"""``jisaku rabbitmq files`` and ``jisaku rabbitmq auth``: a RabbitMQ cluster on the registry's accounts.

    jisaku rabbitmq files --dir /etc/rabbitmq --nodes rabbit@box-a,rabbit@box-b,rabbit@box-c \\
        --mqtt 0.0.0.0:1883 --amqp 10.0.0.5:5672 --auth http://10.0.0.5:8089
    jisaku rabbitmq auth --listen 10.0.0.5:8089

``files`` writes one node's rabbitmq.conf, enabled_plugins and definitions.json (run it on
each node with that node's addresses). ``auth`` answers the nodes' questions about logins
and rights from the registry (gateway/broker_auth.py): run it on the box that has the
registry, beside the gateway. docs/deploy.md, "A broker cluster", explains the whole set-up.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from jisaku.contract import settings as settings_module

log = logging.getLogger(__name__)


def _host_port(text: str, flag: str, example: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"jisaku: {flag} {text!r} should be HOST:PORT, e.g. {example}")
    return host.strip("[]"), int(port)


def cmd_files(args: argparse.Namespace) -> None:
    from jisaku.gateway.rabbitmq import write_node_files

    nodes = [node.strip() for node in args.nodes.split(",") if node.strip()]
    try:
        conf = write_node_files(Path(args.dir), nodes, _host_port(args.mqtt, "--mqtt", "0.0.0.0:1883"),
                                _host_port(args.amqp, "--amqp", "10.0.0.5:5672"), args.auth)
    except ValueError as err:
        raise SystemExit(f"jisaku: {err}") from None
    print(f"wrote {conf} (and enabled_plugins, definitions.json next to it). On each node:\n\n"
          f"  sudo systemctl restart rabbitmq-server\n\nand beside the registry: jisaku rabbitmq auth"
          f" --listen {args.auth.split('://', 1)[-1].rstrip('/')}")


def cmd_auth(args: argparse.Namespace) -> None:
    from jisaku.cli.gateway import wait_for_stop
    from jisaku.gateway.broker_auth import BrokerAuth
    from jisaku.gateway.db import Database
    from jisaku.gateway.registry import Registry

    host, port = _host_port(args.listen, "--listen", "10.0.0.5:8089")
    registry = Registry(Database(settings_module.load().sqlite_path))
    server = BrokerAuth(registry).serve(host, port)
    print(f"answering RabbitMQ's login and rights questions on http://{args.listen} from the registry;"
          " Ctrl-C stops it", flush=True)
    wait_for_stop()
    server.shutdown()


def add_parser(commands) -> None:
    rabbitmq = commands.add_parser("rabbitmq", help="run a RabbitMQ cluster on the registry's accounts")
    actions = rabbitmq.add_subparsers(dest="action", required=True)

    files = actions.add_parser("files", help="write one node's rabbitmq.conf, enabled_plugins, definitions.json")
    files.add_argument("--dir", default="/etc/rabbitmq", help="where the files go (default: /etc/rabbitmq)")
    files.add_argument("--nodes", required=True, help="every node of the cluster: rabbit@box-a,rabbit@box-b,...")
    files.add_argument("--mqtt", default="0.0.0.0:1883", help="HOST:PORT where devices connect (MQTT)")
    files.add_argument("--amqp", required=True,
                       help="HOST:PORT where the gateways read their queue (AMQP): not on the devices' network")
    files.add_argument("--auth", required=True, help="where jisaku rabbitmq auth answers, http://HOST:PORT")
    files.set_defaults(run=cmd_files)

    auth = actions.add_parser("auth", help="answer the nodes' login and rights questions from the registry")
    auth.add_argument("--listen", default="127.0.0.1:8089", help="HOST:PORT to answer on (default 127.0.0.1:8089)")
    auth.set_defaults(run=cmd_auth)
