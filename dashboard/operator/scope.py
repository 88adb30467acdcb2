"""Which town an operator sees: one guard on every operator page and API router.

An account belongs to one town (``users.town``), or to none: a joint body's account, which
sees every town. A town's account that names another town's object in the path (a device,
a user, a rule, an alert, a rollout, a command) gets 404 with the very words it would get
for an object that does not exist, so it cannot even learn the object is there. 403 stays
for what the account may not do whatever the town (its role, a missing CSRF token), and is
checked first, so the answer for another town's object and for a missing one is the same.

``install`` adds :func:`guard` to every operator router it includes, so a route added later
to any of them, or a new router included the same way, is covered without a line of its
own. A path parameter the guard does not know is refused for town accounts (fail closed):
say here which town its object belongs to.

Lists (devices, users, rules, alerts, audit entries, rollouts, shelters, quarantined
messages) are filtered by the handlers with :func:`within`; bodies naming objects are
checked by :class:`jisaku.gateway.changes.Changes` (``within=``), with the same words as
for objects that do not exist.

Example::

    within(request)          # "kita" for a town's operator; None for a joint body's account
    app.include_router(router, dependencies=[Depends(guard)])
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from jisaku.gateway.towns import TOWN_OF_OBJECT

from .auth import check_csrf, require_admin, require_operator, require_switcher

# The kind of object each path parameter names (its town: gateway/towns.TOWN_OF_OBJECT). An alert
# or a command is its device's; a NULL town (a removed device, a joint account) is no town's, so
# only joint-body accounts see it.
OBJECTS: dict[str, str] = {"device_id": "device", "name": "user", "rule_id": "rule", "alert_id": "alert",
                           "rollout_id": "rollout", "command_id": "command"}
# Path parameters that are a part of an object named beside them, not an object of their own.
PARTS = frozenset({"output"})

# What the API answers for an object that does not exist, by parameter; and where a route
# words it its own way, by the route's path.
API_WORDS: dict[str, str] = {
    "device_id": "no device {value!r}",
    "name": "no user {value!r}",
    "rule_id": "there is no rule {value}",
    "alert_id": "there is no alert {value}",
    "rollout_id": "no rollout {value}",
    "command_id": "no command {value!r}",
}
API_ROUTE_WORDS: dict[str, str] = {
    "/api/v1/operator/devices/{device_id}/pictures/newest": "no picture from {value!r} yet",
    "/api/v1/operator/shelters/{device_id}/open": "no shelter {value!r}",
}
# Pages: "not found" naming the object, as the pages say it; acknowledging an alert that is
# not there just goes back to the list (someone else may have cleared it).
PAGE_WHAT: dict[str, str] = {"rollout_id": "rollout {value}"}
PAGE_ROUTE_REDIRECTS: dict[str, str] = {"/operator/alerts/{alert_id}/acknowledge": "/operator/alerts?done=acknowledged"}

ROLE_CHECKS = (require_admin, require_switcher)


class OutOfTown(LookupError):
    """A path names an object of another town (or one the guard cannot place)."""

    def __init__(self, param: str, value: str):
        super().__init__(f"{param}={value!r} is not this account's town's")
        self.param = param
        self.value = value


def within(request: Request) -> str | None:
    """The town the logged-in account sees; None: every town (a joint body's account)."""
    return require_operator(request).user.town


def town_of(db_connection, param: str, value: Any) -> tuple[bool, str | None]:
    """(whether the object exists, its town) for a path parameter's value."""
    row = db_connection.execute(TOWN_OF_OBJECT[OBJECTS[param]], (value,)).fetchone()
    return (row is not None, row[0] if row is not None else None)


async def guard(request: Request) -> None:
    """The router-level dependency: 404 (:class:`OutOfTown`) for another town's object, and
    for a town account, for a missing one alike.

    The session, its CSRF token and the route's role are checked first, so that those
    refusals come out the same whichever town the object is in.
    """
    session = require_operator(request)
    await check_csrf(request)
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    for dependency in getattr(dependant, "dependencies", ()):
        if dependency.call in ROLE_CHECKS:
            dependency.call(request)
    town = session.user.town
    if town is None:
        return
    connection = request.app.state.operator_ops.db.connection
    for param, value in request.path_params.items():
        if param in PARTS:
            continue
        if param not in OBJECTS:
            raise OutOfTown(param, value)  # fail closed: a new kind of object must be placed above
        exists, its_town = town_of(connection, param, value)
        # A missing object is answered here too, before the body is read: were it left to the
        # handler, a wrong body would get 422 for a missing object and 404 for another town's.
        if not exists or its_town != town:
            raise OutOfTown(param, value)


async def out_of_town(request: Request, exc: OutOfTown) -> Response:
    """The answer for another town's object: what a missing one gets."""
    from .pages import render  # the pages import this module's users; render only when needed

    route = request.scope.get("route")
    path = getattr(route, "path", "")
    if request.url.path.startswith("/api/"):
        words = API_ROUTE_WORDS.get(path) or API_WORDS.get(exc.param, "not found: {value!r}")
        return JSONResponse({"detail": words.format(value=exc.value)}, status_code=404)
    if path in PAGE_ROUTE_REDIRECTS:
        return RedirectResponse(PAGE_ROUTE_REDIRECTS[path], status_code=303)
    what = PAGE_WHAT.get(exc.param, "{value}").format(value=exc.value)
    return render(request, "not_found.html", 404, what=what)


__all__ = ["guard", "within", "OutOfTown", "out_of_town", "OBJECTS", "PARTS"]
