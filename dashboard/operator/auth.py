"""Logging operators in: sessions, CSRF tokens and a limit on password guessing.

A session is a random token in a cookie (HttpOnly, SameSite=Strict, and Secure
when the page came over https); the database keeps only its SHA-256, so a copy of
the database cannot be used to log in. Each session has its own CSRF token that
every POST, PUT, PATCH and DELETE must carry, in the ``X-CSRF-Token`` header (the
API) or the ``csrf_token`` form field (the pages).

Five wrong passwords for one name from one address, or thirty from one address
for any names, within 15 minutes, and that address must wait.

Example::

    auth = Auth(db, Accounts(db))
    session = auth.login("tanaka", "a long passphrase", ip="192.0.2.7")
    auth.session(session.token).user.name            # "tanaka"

    @router.post("/things", dependencies=[Depends(require_operator), Depends(check_csrf)])
    def change_things(...): ...
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass

from fastapi import Request

from jisaku.gateway.accounts import Accounts, User
from jisaku.gateway.db import Database

COOKIE = "jisaku_operator"
LOGIN_CSRF_COOKIE = "jisaku_login_csrf"  # before there is a session: the login form's own token
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SESSION_S = 12 * 3600          # a working day and some: then log in again
FAILURE_WINDOW_S = 15 * 60
MAX_FAILURES_PER_NAME = 5      # per name and address
MAX_FAILURES_PER_ADDRESS = 30  # per address, whatever names it tries
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Session:
    token: str          # the cookie's value; only known right after login
    user: User
    csrf: str
    expires: float


class LoginRefused(Exception):
    """A login that did not work: ``status`` 401 (wrong name or password) or 429 (wait ``wait_minutes``)."""

    def __init__(self, status: int, wait_minutes: int = 0):
        super().__init__("too many attempts" if status == 429 else "wrong name or password")
        self.status = status
        self.wait_minutes = wait_minutes


class NotLoggedIn(Exception):
    """No valid session (API: 401; pages: off to the login page)."""


class Forbidden(Exception):
    """Logged in, but not allowed: the wrong role, or a request without its CSRF token (403)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # "admin_only", "switcher_only" or "csrf"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Auth:
    def __init__(self, db: Database, accounts: Accounts):
        self.db = db
        self.accounts = accounts

    def login(self, name: str, password: str, ip: str) -> Session:
        """A new session for ``name``, or :class:`LoginRefused`."""
        wait = self.wait_minutes(name, ip)
        if wait:
            raise LoginRefused(429, wait)  # checked before the password, so guessing gets no answer
        user = self.accounts.verify(name, password)
        if user is None:
            self.db.connection.execute("INSERT INTO login_failures (ip, name, ts) VALUES (?, ?, ?)",
                                       (ip, name[:64], time.time()))
            raise LoginRefused(401)
        connection = self.db.connection
        connection.execute("DELETE FROM login_failures WHERE ip=? AND name=?", (ip, name))
        connection.execute("DELETE FROM operator_sessions WHERE expires < ?", (time.time(),))
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = time.time() + SESSION_S
        connection.execute(
            "INSERT INTO operator_sessions (token_hash, user, csrf, created, expires) VALUES (?, ?, ?, ?, ?)",
            (_hash(token), user.name, csrf, time.time(), expires),
        )
        return Session(token, user, csrf, expires)

    def wait_minutes(self, name: str, ip: str) -> int:
        """How long ``ip`` must wait before trying ``name`` again; 0 if it need not."""
        since = time.time() - FAILURE_WINDOW_S
        connection = self.db.connection
        for sql, params, limit in (
            ("SELECT count(*), min(ts) FROM login_failures WHERE ip=? AND name=? AND ts>=?",
             (ip, name[:64], since), MAX_FAILURES_PER_NAME),
            ("SELECT count(*), min(ts) FROM login_failures WHERE ip=? AND ts>=?", (ip, since),
             MAX_FAILURES_PER_ADDRESS),
        ):
            count, oldest = connection.execute(sql, params).fetchone()
            if count >= limit:
                return max(1, math.ceil((oldest + FAILURE_WINDOW_S - time.time()) / 60))
        return 0

    def session(self, token: str | None) -> Session | None:
        """The live session of this cookie value, with the user as they are now (role, disabled)."""
        if not token or len(token) > 100:
            return None
        row = self.db.connection.execute(
            "SELECT user, csrf, expires FROM operator_sessions WHERE token_hash=?", (_hash(token),)
        ).fetchone()
        if row is None or row["expires"] < time.time():
            return None
        user = self.accounts.get(row["user"])
        if user is None or user.disabled:
            return None
        return Session(token, user, row["csrf"], row["expires"])

    def logout(self, token: str | None) -> None:
        if token:
            self.db.connection.execute("DELETE FROM operator_sessions WHERE token_hash=?", (_hash(token),))


# ---------------------------------------------------------------- cookies


def client_ip(request: Request) -> str:
    # Behind nginx on the same machine uvicorn takes this from X-Forwarded-For (it trusts
    # 127.0.0.1 by default; FORWARDED_ALLOW_IPS for a proxy elsewhere), so it is the visitor.
    return request.client.host if request.client else "unknown"


def set_session_cookie(request: Request, response, session: Session) -> None:
    response.set_cookie(COOKIE, session.token, max_age=SESSION_S, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")


def clear_session_cookie(response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def clear_login_csrf_cookie(response) -> None:
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/operator", httponly=True, samesite="strict")


def login_csrf(request: Request) -> str:
    """The login form's token: the cookie's value if the visitor has one, else a new one."""
    existing = request.cookies.get(LOGIN_CSRF_COOKIE)
    return existing if existing and len(existing) < 100 else secrets.token_urlsafe(32)


def set_login_csrf_cookie(request: Request, response, token: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/operator")


def same_token(given: str | None, expected: str | None) -> bool:
    """Compared in constant time, so the answer's timing gives nothing away."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


# ---------------------------------------------------------------- FastAPI dependencies


def current_session(request: Request) -> Session | None:
    if not hasattr(request.state, "operator_session"):
        request.state.operator_session = request.app.state.operator_auth.session(request.cookies.get(COOKIE))
    return request.state.operator_session


def require_operator(request: Request) -> Session:
    """Any logged-in operator or admin; else :class:`NotLoggedIn`."""
    session = current_session(request)
    if session is None:
        raise NotLoggedIn()
    return session


def require_admin(request: Request) -> Session:
    """An admin; an operator gets :class:`Forbidden`."""
    session = require_operator(request)
    if not session.user.is_admin:
        raise Forbidden("admin_only")
    return session


def require_switcher(request: Request) -> Session:
    """A switcher or an admin: someone who may switch equipment; anyone else gets :class:`Forbidden`."""
    session = require_operator(request)
    if not session.user.may_switch:
        raise Forbidden("switcher_only")
    return session


async def check_csrf(request: Request) -> None:
    """Every state-changing request carries its session's CSRF token (header or form field)."""
    if request.method in SAFE_METHODS:
        return
    session = require_operator(request)
    given = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if not given and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # Starlette keeps it: the endpoint's Form() fields still read it
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not same_token(given, session.csrf):
        raise Forbidden("csrf")
