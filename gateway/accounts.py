"""Operator accounts: who may log in to the operator pages, and with which role.

Three roles: an ``operator`` looks after devices (add them, change their settings,
rotate secrets); a ``switcher`` is an operator who may also switch equipment (a road
heater, a pump) on and off, and save alert rules that do; an ``admin`` may do all of
that and also manages the accounts. Residents have no account: their pages are public
and read-only.

Passwords are kept only as argon2id hashes (the ``argon2-cffi`` package), a slow
hash made for passwords, so a copied database does not give them away.

Example::

    accounts = Accounts(Database(Path("data/jisaku.db")))
    accounts.add("tanaka", "a long passphrase", role="admin")
    accounts.verify("tanaka", "a long passphrase")     # User(name="tanaka", role="admin", ...)
    accounts.verify("tanaka", "wrong")                 # None
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from jisaku.contract.rights import ROLES

from .db import Database
from .towns import Towns

USER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; this keeps a request from being a denial of service

# argon2id at OWASP's recommended minimum (19 MiB, 2 passes): slow for someone guessing, and
# within what a Raspberry Pi can give each login. (The library's default takes 64 MiB a hash.)
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def _nobody() -> str:
    """Checked against when the name is unknown, so that a wrong name takes as long as a wrong password.

    Made on first use, not at import: every ``jisaku`` command imports this module.
    """
    return _hasher.hash("no such user, same time")


class AccountError(ValueError):
    """A request about accounts that cannot be done; the message says what to do instead."""


@dataclass
class User:
    name: str
    role: str
    disabled: bool = False
    created: float = 0.0
    changed: float = 0.0
    # The town whose devices, rules, users and audit entries it sees; None: a joint-body account,
    # which sees every town.
    town: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def may_switch(self) -> bool:
        """Whether this account may switch outputs (a switcher or an admin)."""
        return self.role in ("switcher", "admin")


def check_name(name: str) -> None:
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        raise AccountError(f"user name {name!r} must be 1-64 of a-z 0-9 . _ - starting with a letter or digit")


def check_role(role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"role {role!r} must be one of: {', '.join(ROLES)}")


def check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must be at least {MIN_PASSWORD} characters; a few words make a good one")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password must be at most {MAX_PASSWORD} characters")


class Accounts:
    def __init__(self, db: Database):
        self.db = db

    def add(self, name: str, password: str, role: str = "operator", town: str | None = "") -> User:
        """A new account of ``town``: "" the first town, None every town (a joint-body account)."""
        check_name(name)
        check_role(role)
        check_password(password)
        if self.get(name) is not None:
            raise AccountError(f"user {name!r} already exists; use `jisaku users passwd {name}` to change the password")
        towns = Towns(self.db)
        if town == "":
            town = towns.first()
        elif town is not None and towns.get(town) is None:
            raise AccountError(f"no town {town!r}; `jisaku towns list` shows them")
        now = time.time()
        self.db.connection.execute(
            "INSERT INTO users (name, role, password_hash, created, changed, town) VALUES (?, ?, ?, ?, ?, ?)",
            (name, role, _hasher.hash(password), now, now, town),
        )
        return self.get(name)

    def get(self, name: str) -> User | None:
        row = self.db.connection.execute("SELECT * FROM users WHERE name=?", (name,)).fetchone()
        return _user(row) if row else None

    def users(self) -> list[User]:
        return [_user(row) for row in self.db.connection.execute("SELECT * FROM users ORDER BY name")]

    def verify(self, name: str, password: str) -> User | None:
        """The user, if the name and password are right and the account is not disabled."""
        row = self.db.connection.execute("SELECT * FROM users WHERE name=?", (name,)).fetchone()
        stored = row["password_hash"] if row else _nobody()
        try:
            _hasher.verify(stored, password[:MAX_PASSWORD] if isinstance(password, str) else "")
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row["disabled"]:
            return None
        if _hasher.check_needs_rehash(stored):  # the costs were raised since: upgrade quietly
            self.db.connection.execute("UPDATE users SET password_hash=? WHERE name=?",
                                       (_hasher.hash(password), name))
        return _user(row)

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        self._must_exist(name)
        self.db.connection.execute("UPDATE users SET password_hash=?, changed=? WHERE name=?",
                                   (_hasher.hash(password), time.time(), name))

    def set_role(self, name: str, role: str) -> None:
        check_role(role)
        user = self._must_exist(name)
        if user.is_admin and role != "admin":
            self._keep_one_admin(name)
        self.db.connection.execute("UPDATE users SET role=?, changed=? WHERE name=?", (role, time.time(), name))

    def set_disabled(self, name: str, disabled: bool) -> None:
        user = self._must_exist(name)
        if disabled and user.is_admin:
            self._keep_one_admin(name)
        self.db.connection.execute("UPDATE users SET disabled=?, changed=? WHERE name=?",
                                   (int(disabled), time.time(), name))

    def _must_exist(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            raise AccountError(f"no user {name!r}; `jisaku users list` shows who there is")
        return user

    def _keep_one_admin(self, leaving: str) -> None:
        # Without an enabled admin nobody could manage accounts from the web pages any more.
        others = self.db.connection.execute(
            "SELECT count(*) FROM users WHERE role='admin' AND disabled=0 AND name<>?", (leaving,)
        ).fetchone()[0]
        if not others:
            raise AccountError(f"{leaving!r} is the last admin: make another user admin first")


def _user(row) -> User:
    return User(name=row["name"], role=row["role"], disabled=bool(row["disabled"]),
                created=row["created"], changed=row["changed"], town=row["town"])
