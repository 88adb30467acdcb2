"""The ``jisaku`` command: one entry point for every part.

    jisaku demo                         the whole system with simulated devices
    jisaku broker                       the embedded MQTT broker on its own
    jisaku gateway [--workers N]        subscribe, check and store (N processes on a shared subscription)
    jisaku dashboard                    the web pages and the API
    jisaku device run FOLDER            run a device (add --simulate to run it without hardware)
    jisaku devices add ID --kind KIND   register a device and print its secret once
    jisaku devices list                 the registered devices
    jisaku devices configure ID NAME=VALUE...   change a device's settings from afar
    jisaku devices rotate|revoke ID     a new secret / no secret; a connected device is cut off
    jisaku shelters import FILE         register the shelters of the town's national-format shelter list
    jisaku shelters export              the public shelters as CSV (or --format geojson), with the live state
    jisaku mosquitto sync --dir DIR     keep Mosquitto's passwd/acl in step with the registry
    jisaku rabbitmq files|auth          a RabbitMQ cluster: a node's files; logins and rights from the registry
    jisaku quarantine                   messages the gateway set aside, and why
    jisaku backup [DEST]                everything in one file, made while jisaku runs
    jisaku restore FILE                 put a backup back (onto this or another machine)
    jisaku standby refresh|takeover     a standby box: the first box's settings from its backup; take over
    jisaku bench ingest                 how fast the gateway stores readings through Mosquitto
    jisaku flash KIND --id ID           put a kind's board code on a MicroPython board over USB
    jisaku bundle keygen|build|publish  signed update bundles of a kind's board code or a Pi app
    jisaku updates offer KIND VERSION   offer a bundle to devices, a few first; list, show, stop
    jisaku users add NAME --role admin  an account for the operator pages
    jisaku towns add ID --name NAME     another town on this deployment (its pages at /t/ID/); list, set

One module per command group in this folder (``devices.py`` is ``jisaku devices …``), each
with ``add_parser(commands)``. They import only the standard library and jisaku.contract
at the top, so ``jisaku device run`` works on a Raspberry Pi that has only the device
part installed (``pip install jisaku``); what a command needs it imports when it runs.
The benchmarks are in ``jisaku/bench/``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from jisaku.contract.settings import SettingsError

# The command groups, in the order `jisaku --help` lists them: jisaku.cli.<name>, and the benchmarks.
COMMAND_GROUPS = ("jisaku.cli.demo", "jisaku.cli.broker", "jisaku.cli.gateway", "jisaku.cli.dashboard",
                  "jisaku.cli.device", "jisaku.cli.devices", "jisaku.cli.shelters", "jisaku.cli.users", "jisaku.cli.towns",
                  "jisaku.cli.mosquitto", "jisaku.cli.rabbitmq", "jisaku.cli.quarantine", "jisaku.cli.backup", "jisaku.cli.standby", "jisaku.cli.flash",
                  "jisaku.cli.bundle", "jisaku.cli.updates",
                  "jisaku.bench")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="jisaku", description="Build your own field sensors and show their data.")
    top.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = top.add_subparsers(dest="command", required=True)
    for name in COMMAND_GROUPS:
        importlib.import_module(name).add_parser(commands)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        args.run(args)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # piped into head, say: the reader has all it wanted
        sys.stderr.close()
    except ModuleNotFoundError as err:
        if args.verbose:
            raise
        sys.exit(f"jisaku {args.command}: needs {err.name}, which this installation lacks. A Raspberry Pi"
                 " device needs only `pip install jisaku`; the gateway and the web pages need"
                 " `pip install 'jisaku[all]'` (docs/deploy.md)")
    except (SettingsError, ValueError, LookupError, RuntimeError) as err:
        if args.verbose:
            raise
        sys.exit(f"jisaku: {err} (add -v to see where)")
