"""The operators' side of the dashboard: log in, devices, settings, switching, quarantine, users, audit log.

``install`` adds it to the dashboard app: the pages under ``/operator`` and the
JSON API under ``/api/v1/operator``. Nothing there answers without a session.

Example::

    app = FastAPI()
    install(app, Database(Path("data/jisaku.db")), config_publisher=ConfigPublisher(...))
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from jisaku.gateway.accounts import Accounts
from jisaku.gateway.alerts import AlertBook
from jisaku.gateway.db import Database
from jisaku.gateway.registry import Registry
from jisaku.gateway.store import SQLiteStore

from . import alerts as alert_pages
from . import practice as practice_pages
from . import api, pages, scope
from . import bundles as bundle_api
from . import shelters as shelter_pages
from . import switching
from . import updates as update_pages
from .auth import Auth, Forbidden, NotLoggedIn
from .operations import Operations
from .publisher import ConfigPublisher

API_PREFIX = "/api/v1/operator"

__all__ = ["install", "include_scoped", "ConfigPublisher"]


def install(app: FastAPI, db: Database, store: SQLiteStore, registry: Registry,
            config_publisher: ConfigPublisher | None = None, alerts=None) -> None:
    """Add the operator pages and API to ``app``.

    ``config_publisher`` sends settings to devices; without it the settings forms say
    so. ``alerts`` is an ``AlertBook`` or ``AlertEngine`` (jisaku.gateway.alert_engine); by default
    an AlertBook on ``db``.
    """
    accounts = Accounts(db)
    app.state.operator_auth = Auth(db, accounts)
    # The engine in the gateway does the judging; rules and alerts are in SQLite for any process.
    app.state.operator_alerts = alerts if alerts is not None else AlertBook(db)
    app.state.operator_ops = Operations(db, store, registry, accounts, config_publisher,
                                        alerts=app.state.operator_alerts)
    app.include_router(api.login_router)  # logging in: no session yet, so no town
    app.include_router(pages.login_router)
    # Every other router sees one town only (scope.py): include new ones here, with the guard.
    for router in (api.router, pages.router, alert_pages.api_router, alert_pages.page_router,
                   shelter_pages.api_router, shelter_pages.page_router, switching.api_router,
                   bundle_api.router,  # publish and list update bundles
                   update_pages.api_router,  # offer them to devices, and follow each device
                   update_pages.page_router, switching.page_router,
                   practice_pages.api_router, practice_pages.page_router):  # the practice space
        include_scoped(app, router)
    app.add_exception_handler(NotLoggedIn, _not_logged_in)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(scope.OutOfTown, scope.out_of_town)


def include_scoped(app: FastAPI, router: APIRouter) -> None:
    """Include an operator router so that a town's account sees its own town's objects only."""
    app.include_router(router, dependencies=[Depends(scope.guard)])


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


async def _not_logged_in(request: Request, exc: NotLoggedIn):
    if _is_api(request):
        return JSONResponse({"detail": f"log in first: POST {API_PREFIX}/login"}, status_code=401)
    back = request.url.path if request.method == "GET" else "/operator/devices"
    return RedirectResponse(f"/operator/login?next={quote(back)}", status_code=303)


async def _forbidden(request: Request, exc: Forbidden):
    if _is_api(request):
        detail = {"admin_only": "this needs an admin account",
                  "switcher_only": "switching equipment needs the role switcher or admin: ask an admin to give"
                                   " your account the role switcher (jisaku users role NAME switcher)",
                  }.get(exc.reason, "the X-CSRF-Token header is missing or wrong: take it from the login answer"
                                    " or GET /me")
        return JSONResponse({"detail": detail}, status_code=403)
    return pages.render(request, "forbidden.html", 403, reason=exc.reason)
