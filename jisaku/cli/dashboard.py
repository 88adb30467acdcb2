"""``jisaku dashboard``: the residents' pages, the API, the operator pages and the phones' endpoint."""

from __future__ import annotations

import argparse
import os

from .common import load_settings


def cmd_dashboard(args: argparse.Namespace) -> None:
    import uvicorn

    from jisaku.dashboard.app import create_app
    from jisaku.dashboard.operator import ConfigPublisher
    from jisaku.dashboard.osmand import PhonePublisher

    from jisaku.cli.stores import open_stores

    settings = load_settings()
    host, port = settings.http_host_port
    registry, _, influx = open_stores(settings)
    secret = os.environ.get("JISAKU_DASHBOARD_SECRET") or registry.service_secret("_dashboard", settings.secrets_dir)
    phones = PhonePublisher(settings.broker, "_dashboard", secret)  # positions from phones, via the broker
    phones.start()
    config = ConfigPublisher(settings.broker, "_dashboard", secret)  # operators' settings for devices
    try:
        uvicorn.run(create_app(settings.sqlite_path, phones, readings=influx, config_publisher=config),
                    host=host, port=port, log_level="info",
                    # Off unless asked: residents' addresses stay out of the logs, and a line per
                    # request costs about as much as serving it (jisaku bench web).
                    access_log=args.access_log)
    finally:
        phones.stop()
        config.stop()


def add_parser(commands) -> None:
    dashboard = commands.add_parser("dashboard", help="the web pages and the API")
    dashboard.add_argument("--access-log", action="store_true",
                           help="log every request, with the visitor's address (off by default)")
    dashboard.set_defaults(run=cmd_dashboard)
