"""The read-only pages: routes, templates and the page protection around the whole app.

Every page is a GET that reads; none offers an action. Answers carry a Server-Timing header
(database and template time), which bench/ui.py reads.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import readmodel
from . import pages
from .charts import sparkline
from .security import PageAuth, PageProtection
from .timefmt import absolute_tag, age, duration, relative, time_tag
from .units import size


@pass_context
def _ago(context: Context, moment: datetime | None) -> Markup:
    return time_tag(moment, context["now"])


@pass_context
def _rel(context: Context, moment: datetime | None) -> str:
    return relative(moment, context["now"])


@pass_context
def _since(context: Context, moment: datetime | None) -> str:
    """How long ago, without "ago": for "no success for 5 d 2 h"."""
    return "" if moment is None else age(context["now"] - moment)


def _spark(values: list[float] | None, title: str) -> Markup:
    return sparkline([v for v in values or [] if v is not None], title=title)


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("bk_reporter.web", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        ago=_ago, rel=_rel, since=_since, when=absolute_tag, size=size, duration=duration, spark=_spark
    )
    environment.globals.update(states=readmodel.STATES, meanings=readmodel.STATE_MEANINGS)
    return environment


TEMPLATES = _environment()


class _Timer:
    """Milliseconds spent reading the database and rendering, for the Server-Timing header."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.db_ms = 0.0

    def database_done(self) -> None:
        self.db_ms = (time.perf_counter() - self.started) * 1000

    def header(self) -> str:
        total = (time.perf_counter() - self.started) * 1000
        return f"db;dur={self.db_ms:.1f}, render;dur={total - self.db_ms:.1f}, total;dur={total:.1f}"


def _render(template: str, context: Mapping[str, Any], timer: _Timer, status: int = 200) -> Response:
    html = TEMPLATES.get_template(template).render(**context, now=datetime.now(UTC))
    headers = {"Server-Timing": timer.header(), "Cache-Control": "no-store"}
    return HTMLResponse(html, status_code=status, headers=headers)


def _problem(status: int, title: str, message: str, timer: _Timer) -> Response:
    return _render("problem.html", {"title": title, "message": message}, timer, status)


Loader = Callable[[Any], Awaitable[Any]]


# A page reads in one read-only snapshot (its counts and rows agree), without JIT compilation,
# which costs more than these short queries save (it starts above a cost estimate, whatever the rows).
PAGE_TRANSACTION = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
NO_JIT = "SET LOCAL jit = off"


async def _load(request: Request, load: Loader) -> Any:
    async with request.app.state.reporter.pool.connection() as conn, conn.transaction():
        await conn.execute(PAGE_TRANSACTION)
        await conn.execute(NO_JIT)
        return await load(conn)


# (title, message) of the 404 a page answers when its loader finds nothing.
NotFound = tuple[str, str]


async def _page(
    request: Request,
    template: str,
    parse: Callable[[], Any],
    load: Callable[[Any, Any], Awaitable[Any]],
    not_found: NotFound | None = None,
) -> Response:
    """Parse the request (400 when unusable), load in one snapshot, render (404 when nothing)."""
    timer = _Timer()
    try:
        arguments = parse()
    except pages.BadRequest as exc:
        return _problem(400, "Bad request", str(exc), timer)
    context = await _load(request, lambda conn: load(conn, arguments))
    timer.database_done()
    if context is None and not_found is not None:
        return _problem(404, *not_found, timer)
    return _render(template, context, timer)


async def overview(request: Request) -> Response:
    return await _page(request, "overview.html", lambda: pages.Filters.from_query(request.query_params), pages.overview)


async def host(request: Request) -> Response:
    name = request.path_params["host"]
    missing = ("No such host", f"{name!r} is neither enrolled nor reporting.")
    if "\x00" in name or len(name) > pages.MAX_TEXT:
        return _problem(404, *missing, _Timer())
    return await _page(
        request,
        "host.html",
        lambda: pages.Cursor.parse(request.query_params.get("before")),
        lambda conn, before: pages.host_page(conn, name, before),
        missing,
    )


async def overdue(request: Request) -> Response:
    return await _page(request, "overdue.html", lambda: pages.page_number(request.query_params), pages.overdue_page)


async def event(request: Request) -> Response:
    try:
        event_id = uuid.UUID(request.path_params["id"])
    except ValueError:
        return _problem(404, "No such event", "That is not an event id.", _Timer())
    return await _page(
        request,
        "event.html",
        lambda: event_id,
        pages.event_page,
        ("No such event", "No event with this id is stored."),
    )


def page_routes() -> list[BaseRoute]:
    return [
        Route("/", overview, methods=["GET"]),
        Route("/overdue", overdue, methods=["GET"]),
        Route("/hosts/{host}", host, methods=["GET"]),
        Route("/events/{id}", event, methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("bk_reporter.web", "static")]), name="static"),
    ]


def install_pages(app: Starlette, auth: PageAuth) -> None:
    """Add the pages and static files to the reporter's app, and protect every answer it gives."""
    app.router.routes.extend(page_routes())
    app.add_middleware(PageProtection, auth=auth)
