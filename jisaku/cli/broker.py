"""``jisaku broker``: the embedded MQTT broker (amqtt) on its own, checking the registry's devices."""

from __future__ import annotations

import argparse
import asyncio

from .common import load_settings, open_registry


def cmd_broker(args: argparse.Namespace) -> None:
    from jisaku.contract.mqtt import BrokerAddress
    from jisaku.gateway.broker import EmbeddedBroker

    settings = load_settings()
    registry = open_registry(settings)
    address = BrokerAddress.parse(settings.broker)

    async def serve() -> None:
        broker = EmbeddedBroker(address.host, address.port, authenticate=registry.check_credentials,
                                version=registry.version)  # cuts off rotated/revoked devices
        await broker.start()
        print(f"embedded broker listening on {address}; Ctrl-C stops it", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await broker.stop()

    asyncio.run(serve())


def add_parser(commands) -> None:
    commands.add_parser("broker", help="the embedded MQTT broker").set_defaults(run=cmd_broker)
