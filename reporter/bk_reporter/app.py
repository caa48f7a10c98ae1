"""The reporter's ASGI application (Starlette): HTTP for ingest, fleet state, events, metrics.

Ingest is answered by `ReporterApp._dispatch` before Starlette; what happens to the envelopes
is `ingest_spine.Ingest`'s.

The read-only web pages (bk_reporter.web) are installed on the same application.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from . import fleet, metrics, openapi, readmodel
from .ingest import Limits, parse_json_body
from .ingest_spine import Ingest
from .notify import web as notify_web
from .outcome import Outcome
from .ratelimit import ClientLimiter
from .settings import Settings
from .verifying import Verifier
from .web.routes import install_pages
from .web.security import SECURITY_HEADERS, PageAuth

log = logging.getLogger("bk_reporter.app")
access_log = logging.getLogger("bk_reporter.access")

# An envelope escapes its manifest as a JSON string: allow room for that around the manifest limit.
ENVELOPE_OVERHEAD_FACTOR = 2
ENVELOPE_SIGNATURE_ALLOWANCE = 64 * 1024
RETRY_AFTER_SECONDS = "30"
INGEST_SINGLE = "/api/v1/manifests"
INGEST_BATCH = "/api/v1/manifests/batch"


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over the limit of {limit} bytes")


class _SlowBody(Exception):
    def __init__(self, seconds: int) -> None:
        super().__init__(f"the request body did not arrive within {seconds} s")


def _log_outcome(outcome: Outcome) -> None:
    """Refusals at info (what an operator looks for), stored manifests at debug."""
    level = logging.DEBUG if outcome.status in (200, 201) else logging.INFO
    fields = {"status": outcome.status, "code": outcome.code, "id": outcome.manifest_id, "reason": outcome.message}
    log.log(level, "manifest", extra=fields)


def _answer(outcome: Outcome) -> JSONResponse:
    return JSONResponse(outcome.as_json(), status_code=outcome.status)


BodyReader = Callable[[int], Awaitable[bytes]]
# (status, JSON content, extra headers) of an ingest answer.
Answer = tuple[int, Any, list[tuple[bytes, bytes]]]


@dataclass(frozen=True)
class Refused:
    """A request turned away before its envelopes are looked at, with its answer."""

    answer: Answer


def _asgi_reader(scope: Scope, receive: Receive, timeout_seconds: int) -> BodyReader:
    async def read(limit: int) -> bytes:
        """The body, refused as soon as it is known to exceed `limit` (declared or counted)."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _TooLarge(limit)
        chunks, size = [], 0
        # One deadline for the whole body: a byte a second would satisfy any per-part timeout.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                raise _SlowBody(timeout_seconds) from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    return read


def _json_body(content: Any) -> bytes:
    """As starlette's JSONResponse renders it."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def _json_response(answer: Answer) -> Response:
    status, content, headers = answer
    return Response(
        _json_body(content),
        status_code=status,
        media_type="application/json",
        headers=_latin1(headers),
    )


async def _send_answer(send: Send, answer: Answer) -> None:
    status, content, headers = answer
    body = _json_body(content)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(body)).encode("latin-1")),
                (b"content-type", b"application/json"),
                *headers,
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _configure_connection(conn: psycopg.AsyncConnection) -> None:
    """Every pooled connection: no JIT. The reporter's statements are short and index-bound;
    compiling them cost more than it saved (about 90 ms on /api/v1/hosts at 2,000 hosts)."""
    await conn.execute("SET jit = off")


class Reporter:
    """The application's state: settings, the connection pool and the ingest counters."""

    def __init__(self, settings: Settings, database_url: str, *, start_workers: bool = False) -> None:
        self.settings = settings
        self.start_workers = start_workers
        self.limits = Limits(
            max_manifest_bytes=settings.max_manifest_bytes,
            future_tolerance=timedelta(seconds=settings.future_tolerance_seconds),
        )
        self.pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=settings.pool_size,
            kwargs={"autocommit": True, "application_name": "bk-reporter"},
            configure=_configure_connection,
            open=False,
        )
        self.counters = metrics.IngestCounters()
        self.verifier = Verifier(settings.verify_processes)
        self.ingest = Ingest(self.pool, self.limits, self.verifier)
        self.limiter = ClientLimiter(settings.ingest_requests_per_minute, settings.ingest_burst)

    @property
    def single_body_limit(self) -> int:
        return self.settings.max_manifest_bytes * ENVELOPE_OVERHEAD_FACTOR + ENVELOPE_SIGNATURE_ALLOWANCE

    # -- ingest ---------------------------------------------------------------------------

    async def ingest_single(self, read: BodyReader, client: str) -> Answer:
        parsed = await self._json_body("single", read, client, self.single_body_limit)
        if isinstance(parsed, Refused):
            return parsed.answer
        (outcome,) = await self.ingest.receive([parsed], client)
        return self._counted("single", outcome)

    async def ingest_batch(self, read: BodyReader, client: str) -> Answer:
        parsed = await self._json_body("batch", read, client, self.settings.max_batch_bytes)
        if isinstance(parsed, Refused):
            return parsed.answer
        if not isinstance(parsed, list):
            return self._counted("batch", Outcome(400, "not_a_list", "a batch is a JSON list of envelopes"))
        if len(parsed) > self.settings.max_batch_items:
            limit = self.settings.max_batch_items
            return self._counted("batch", Outcome(413, "too_many_items", f"a batch holds at most {limit} envelopes"))
        outcomes = await self.ingest.receive(parsed, client)
        self.counters.count("batch", 200, outcomes)
        by_code: dict[str, int] = {}
        for outcome in outcomes:
            by_code[outcome.code] = by_code.get(outcome.code, 0) + 1
            _log_outcome(outcome)
        log.info("batch", extra={"items": len(outcomes), "outcomes": by_code})
        return 200, [outcome.as_json() for outcome in outcomes], []

    async def _json_body(self, endpoint: str, read: BodyReader, client: str, limit: int) -> Any:
        """The request's JSON body, or the answer refusing it (rate limit, size, time, JSON)."""
        limited = self._rate_limited(endpoint, client)
        if limited is not None:
            return Refused(limited)
        try:
            body = await read(limit)
        except _TooLarge as exc:
            return Refused(self._counted(endpoint, Outcome(413, "too_large", str(exc))))
        except _SlowBody as exc:
            return Refused(self._counted(endpoint, Outcome(408, "body_timeout", str(exc))))
        parsed = parse_json_body(body)
        if isinstance(parsed, Outcome):
            return Refused(self._counted(endpoint, parsed))
        return parsed

    def _rate_limited(self, endpoint: str, client: str) -> Answer | None:
        """429 before the body is read, when this client has used up its requests (ratelimit.py)."""
        retry_after = self.limiter.take(client)
        if retry_after is None:
            return None
        outcome = Outcome(
            429, "rate_limited", f"too many requests from {client or 'this client'}; retry in {retry_after} s"
        )
        status, content, _headers = self._counted(endpoint, outcome)
        return status, content, [(b"retry-after", str(retry_after).encode("latin-1"))]

    def _counted(self, endpoint: str, outcome: Outcome) -> Answer:
        self.counters.count(endpoint, outcome.status, [outcome])
        _log_outcome(outcome)
        return outcome.status, outcome.as_json(), []

    # -- reading ------------------------------------------------------------------------------

    async def _rows(self, query: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(query, params)
            return await cursor.fetchall()

    async def list_hosts(self, request: Request) -> Response:
        async with self.pool.connection() as conn:
            state = await readmodel.fleet(conn)
        return JSONResponse(fleet.fleet_document(state.hosts, state.jobs, datetime.now(UTC)))

    async def get_host(self, request: Request) -> Response:
        name = request.path_params["host"]
        no_such_host = Outcome(404, "no_such_host", "no such host: neither enrolled nor reporting")
        if not fleet.usable_text(name):
            return _answer(no_such_host)
        async with self.pool.connection() as conn:
            summary = await readmodel.host(conn, name)
            if summary is None:
                return _answer(no_such_host)
            chain = await readmodel.chain(conn, summary, fleet.HOST_DETAIL_LIMIT)
            details = fleet.HostDetails(
                keys=await readmodel.host_keys(conn, name),
                gaps=chain.gaps,
                breaks=chain.breaks,
                snapshots=await readmodel.snapshots(conn, name, fleet.HOST_SNAPSHOTS_LIMIT),
            )
            jobs = await readmodel.host_jobs(conn, name)
        return JSONResponse(fleet.host_detail_document(summary, jobs, details, datetime.now(UTC)))

    async def list_events(self, request: Request) -> Response:
        try:
            query = fleet.event_query(request.query_params)
        except fleet.BadParameter as exc:
            return _answer(Outcome(400, "bad_parameter", str(exc)))
        async with self.pool.connection() as conn:
            rows = await readmodel.events(conn, query)
        return JSONResponse(fleet.events_page_document(rows, query))

    async def get_event(self, request: Request) -> Response:
        try:
            event_id = uuid.UUID(request.path_params["id"])
        except ValueError:
            event_id = None
        row = None
        if event_id is not None:
            async with self.pool.connection() as conn:
                row = await readmodel.event(conn, event_id)
        if row is None:
            return _answer(Outcome(404, "no_such_event", "no event with this id is stored"))
        return JSONResponse(fleet.event_document(row))

    async def metrics(self, request: Request) -> Response:
        async with self.pool.connection() as conn:
            state = await readmodel.fleet(conn)
        notifications = await notify_web.metrics_text(self.pool)
        return PlainTextResponse(
            metrics.exposition(state.jobs, state.hosts, self.counters) + notifications,
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    async def health(self, request: Request) -> Response:
        await self._rows("SELECT 1")
        return JSONResponse({"status": "ok"})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi.document())

    # -- lifecycle ------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.pool.open(wait=True)
        if self.start_workers:
            await self.verifier.start()
        await self._warn_if_role_may_rewrite()
        log.info("serving", extra={"settings": self.settings.public_view()})
        try:
            yield
        finally:
            self.verifier.close()
            await self.ingest.refusals.drain()
            await self.pool.close()

    async def _warn_if_role_may_rewrite(self) -> None:
        rows = await self._rows(
            "SELECT current_user AS role, has_table_privilege('events', 'UPDATE') AS can_update,"
            " has_table_privilege('events', 'DELETE') AS can_delete"
        )
        if rows[0]["can_update"] or rows[0]["can_delete"]:
            log.warning(
                "the application's database role may update or delete events; only triggers protect them. "
                "Connect as the application role (app_role) instead",
                extra={"role": rows[0]["role"]},
            )


def _unavailable_answer(path: str, exc: Exception) -> Answer:
    log.error("database unavailable", extra={"error": str(exc), "path": path})
    outcome = Outcome(503, "unavailable", "the reporter's database is unreachable; retry later")
    return 503, outcome.as_json(), [(b"retry-after", RETRY_AFTER_SECONDS.encode("latin-1"))]


def _method_not_allowed(method: str, path: str) -> Answer:
    outcome = Outcome(405, "method_not_allowed", f"Method Not Allowed: {method} {path}")
    return 405, outcome.as_json(), [(b"allow", b"POST")]


def _latin1(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}


def _unavailable(request: Request, exc: Exception) -> Response:
    return _json_response(_unavailable_answer(request.url.path, exc))


class ReporterApp(Starlette):
    """Starlette, with the two ingest paths answered before its middleware and routing.

    Single POSTs come by the thousand per second: the Request and Response objects, the
    router and three middleware layers were a large part of what each one cost. The answers
    are the same, headers included (the security headers of web.security.PageProtection,
    which asks no credentials on these paths). These paths have no Starlette route: other
    methods on them are answered 405 here, and a trailing slash is redirected here as
    Starlette's redirect_slashes would.
    """

    reporter: Reporter
    # The port of the ingest-only listener (settings.ingest_listen), if any.
    ingest_only_port: int | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        access = _Access()
        if self._outside_ingest_listener(scope):
            access.code = "ingest_listener"
            access.status = 404
            try:
                await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            finally:
                _log_access(scope, access)
            return

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                access.status = message["status"]
            await send(message)

        try:
            await self._dispatch(scope, receive, recording_send, access)
        finally:
            _log_access(scope, access)

    def _outside_ingest_listener(self, scope: Scope) -> bool:
        """A request on the ingest-only listener for anything but ingest and /healthz."""
        server = scope.get("server")
        if self.ingest_only_port is None or not server or server[1] != self.ingest_only_port:
            return False
        allowed = {("POST", INGEST_SINGLE), ("POST", INGEST_BATCH), ("GET", "/healthz")}
        return (scope["method"], scope["path"]) not in allowed

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, access: _Access) -> None:
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        handler = {INGEST_SINGLE: self.reporter.ingest_single, INGEST_BATCH: self.reporter.ingest_batch}.get(path)
        if handler is not None and scope["method"] == "POST":
            await self._answer_ingest(handler, path, scope, receive, send, access=access)
        elif handler is not None:
            access.code = "method_not_allowed"
            await _send_answer(send, _method_not_allowed(scope["method"], path))
        elif path.endswith("/") and path.rstrip("/") in (INGEST_SINGLE, INGEST_BATCH):
            # As Starlette's redirect_slashes answers for a route of its own.
            without_slash = URL(scope={**scope, "path": scope["path"].rstrip("/")})
            await RedirectResponse(str(without_slash), headers=_latin1(SECURITY_HEADERS))(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def _answer_ingest(
        self,
        handler: Callable[[BodyReader, str], Awaitable[Answer]],
        path: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        access: _Access,
    ) -> None:
        try:
            reader = _asgi_reader(scope, receive, self.reporter.settings.body_timeout_seconds)
            answer = await handler(reader, _client(scope))
        except ClientDisconnect:
            access.code = "client_disconnected"
            return
        except (psycopg.OperationalError, PoolTimeout) as exc:
            answer = _unavailable_answer(path, exc)
        except Exception:
            log.exception("ingest failed", extra={"path": path})
            body = b"Internal Server Error"
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-length", b"21"), (b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            raise
        content = answer[1]
        if isinstance(content, dict) and isinstance(content.get("code"), str):
            access.code = content["code"]
        await _send_answer(send, answer)


@dataclass
class _Access:
    status: int | None = None
    code: str | None = None


def _client(scope: Scope) -> str:
    """The peer's address; uvicorn puts X-Forwarded-For's there only for `forwarded_allow_ips`."""
    client = scope.get("client")
    return client[0] if client else ""


def _log_access(scope: Scope, access: _Access) -> None:
    """One line per request: what was asked, by whom, and the answer; never a body or a query."""
    fields = {
        "method": scope["method"],
        "path": scope["path"],
        "status": access.status,
        "client": _client(scope) or None,
        "code": access.code,
    }
    access_log.info("request", extra=fields)


HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors: JSON under /api/ (the API's documented shape), plain text elsewhere."""
    if not isinstance(exc, HTTPException):
        raise exc
    if not request.url.path.startswith("/api/"):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    outcome = Outcome(exc.status_code, code, f"{exc.detail}: {request.method} {request.url.path}")
    return JSONResponse(outcome.as_json(), status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings, database_url: str, *, start_workers: bool = False) -> Starlette:
    """The application; `start_workers`: start the verifying worker processes with it (serve does)."""
    reporter = Reporter(settings, database_url, start_workers=start_workers)
    routes = [
        Route("/api/v1/hosts", reporter.list_hosts, methods=["GET"]),
        Route("/api/v1/hosts/{host:path}", reporter.get_host, methods=["GET"]),
        Route("/api/v1/events", reporter.list_events, methods=["GET"]),
        Route("/api/v1/events/{id:path}", reporter.get_event, methods=["GET"]),
        Route("/api/v1/openapi.json", reporter.openapi, methods=["GET"]),
        Route("/metrics", reporter.metrics, methods=["GET"]),
        Route("/healthz", reporter.health, methods=["GET"]),
    ]
    app = ReporterApp(
        routes=routes,
        lifespan=reporter.lifespan,
        exception_handlers={
            HTTPException: _http_error,
            psycopg.OperationalError: _unavailable,
            PoolTimeout: _unavailable,
        },
    )
    app.state.reporter = reporter
    app.reporter = reporter
    if settings.ingest_listen is not None:
        app.ingest_only_port = settings.ingest_listen_port
    page_auth = PageAuth(
        basic_user=settings.page_basic_user,
        basic_password=settings.page_basic_password,
        bearer_token=settings.page_bearer_token,
    )
    install_pages(app, page_auth)
    notify_web.install(app)
    return app
