"""``jisaku users …``: operator accounts from the command line.

The first admin is made here; after that an admin can also add people on the
operator pages (``/operator/users``)::

    jisaku users add tanaka --role admin      # asks for the password twice
    echo "$PASSWORD" | jisaku users add bot   # a script gives it on stdin
    jisaku users list
    jisaku users add yamada --town shirakawa  # an account of one town: it sees that town only
    jisaku users add kanri --role admin --all-towns   # a joint body's: every town
    jisaku users passwd tanaka
    jisaku users role suzuki admin
    jisaku users role sato switcher           # an operator who may also switch equipment
    jisaku users disable suzuki

The password is never shown and never passed on the command line (where other
users of the machine could see it in the process list).
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import sys

from jisaku.contract.rights import ROLES

from .common import load_settings


def _changes():
    """Where account changes go, as the operator pages' do: each with its audit entry."""
    from jisaku.gateway.changes import Changes
    from jisaku.gateway.db import Database

    return Changes(Database(load_settings().sqlite_path))


def cli_actor() -> str:
    from jisaku.gateway.audit import cli_actor as actor

    return actor()


def read_password(prompt: str = "Password: ") -> str:
    """Asked twice on a terminal (not echoed); the first line of stdin otherwise."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(prompt)
    if getpass.getpass("Again: ") != first:
        raise ValueError("the two passwords differ; nothing was changed")
    return first


def cmd_add(args: argparse.Namespace) -> None:
    if args.all_towns and args.town:
        raise ValueError("give --town or --all-towns, not both")
    town = None if args.all_towns else (args.town or "")
    changes = _changes()
    if town:
        changes.town_for(None, town)  # an unknown town is said before the password is asked for
    changes.add_user(cli_actor(), args.name, read_password(f"Password for {args.name}: "), args.role, town=town)
    where = "every town" if town is None else f"town {changes.accounts.get(args.name).town}"
    print(f"added {args.role} {args.name} of {where}; they can log in at /operator/login")


def cmd_list(args: argparse.Namespace) -> None:
    accounts = _changes().accounts
    print(f"{'name':20} {'role':9} {'town':12} {'state':9} changed")
    for user in accounts.users():
        changed = datetime.datetime.fromtimestamp(user.changed).strftime("%Y-%m-%d %H:%M")
        town = user.town if user.town is not None else "(every)"  # a joint body's account
        print(f"{user.name:20} {user.role:9} {town:12} {'disabled' if user.disabled else 'active':9} {changed}")


def cmd_passwd(args: argparse.Namespace) -> None:
    _changes().set_password(cli_actor(), args.name, read_password(f"New password for {args.name}: "))
    print(f"changed the password of {args.name}")


def cmd_role(args: argparse.Namespace) -> None:
    _changes().update_user(cli_actor(), args.name, role=args.role)
    print(f"{args.name} is now {args.role}")


def _set_disabled(name: str, disabled: bool) -> None:
    _changes().update_user(cli_actor(), name, disabled=disabled)
    print(f"{name} is now {'disabled' if disabled else 'enabled'}")


def add_parser(commands) -> None:
    """Add ``jisaku users add|list|passwd|role|disable|enable`` to the ``jisaku`` subcommands."""
    users = commands.add_parser("users", help="operator accounts").add_subparsers(dest="action", required=True)
    add = users.add_parser("add", help="add an operator account (the password is asked for)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="operator",
                     help="operator: devices and settings; switcher: also switch equipment on and off;"
                          " admin: all that, and the accounts")
    add.add_argument("--town", help="the town whose devices and accounts it sees (`jisaku towns list`;"
                     " default: the first town)")
    add.add_argument("--all-towns", action="store_true", help="an account of every town, a joint body's:"
                     " it sees and manages every town")
    add.set_defaults(run=cmd_add)
    users.add_parser("list", help="the operator accounts").set_defaults(run=cmd_list)
    passwd = users.add_parser("passwd", help="change an account's password")
    passwd.add_argument("name")
    passwd.set_defaults(run=cmd_passwd)
    role = users.add_parser("role", help="make an account operator, switcher or admin")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    role.set_defaults(run=cmd_role)
    disable = users.add_parser("disable", help="stop an account from logging in")
    disable.add_argument("name")
    disable.set_defaults(run=lambda args: _set_disabled(args.name, True))
    enable = users.add_parser("enable", help="let a disabled account log in again")
    enable.add_argument("name")
    enable.set_defaults(run=lambda args: _set_disabled(args.name, False))
