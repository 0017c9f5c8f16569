"""The dashboard's web application: the JSON API, the pages and the live event stream.

`create_app(config)` builds a Starlette app over one `Backend` (a publisher and its
fleet view) and one `Poller` (the live feed). Every route goes through `_guarded`,
which checks the token or session cookie and, on writes, the CSRF token.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flagsync.dashboard import _pages
from flagsync.dashboard._auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Guard, read_form
from flagsync.dashboard._backend import Backend, BadRequestError, StaleWriteError
from flagsync.dashboard._config import DashboardConfig
from flagsync.dashboard._live import Poller, worker_row
from flagsync.errors import FlagNotFoundError, FlagsyncError, InvalidFlagError, StoreError

__all__ = ["create_app"]

_log = structlog.get_logger("flagsync.dashboard")
STATIC: Final = Path(__file__).with_name("static")
_WRITE_OPS: Final = ("kill", "enable", "ramp", "rollback")
_ROLLOUT_ACTIONS: Final = ("pause", "resume", "abort")
_MAX_REASON: Final = 2000
_EVENT_KEEPALIVE_S: Final = 15.0

Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(config: DashboardConfig, backend: Backend | None = None) -> Starlette:
    """The dashboard app; `backend` defaults to one on `config.url`."""
    store = backend or Backend(config)
    poller = Poller(store.revision, store.workers)
    guard = Guard(config.secret)
    pages = _pages.Pages(store, poller, guard, config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        import asyncio  # noqa: PLC0415

        task = asyncio.create_task(poller.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if backend is None:
                store.close()

    def guarded(endpoint: Endpoint, *, write: bool = False, api: bool = True) -> Endpoint:
        async def handler(request: Request) -> Response:
            access = guard.check(request.headers.get("authorization"), request.cookies.get(COOKIE))
            if not access.allowed:
                if api:
                    return JSONResponse(
                        {"error": "unauthorized", "message": "a token is required "
                         "(Authorization: Bearer TOKEN, or log in at /login)"},
                        status_code=401, headers={"WWW-Authenticate": "Bearer"},
                    )  # fmt: skip
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
            if write:
                refused = await _write_refusal(request, access.needs_csrf, guard, store, api)
                if refused is not None:
                    return refused
            try:
                return await endpoint(request)
            except StaleWriteError as error:
                if api:
                    return JSONResponse(error.to_json(), status_code=409)
                return await pages.conflict(request, error)
            except FlagsyncError as error:
                return _error_response(error, api, pages, request)
            except NotImplementedError as error:
                return _error_response(error, api, pages, request)

        return handler

    api = Api(store, poller, config)

    routes = [
        Route("/", guarded(pages.flags, api=False)),
        Route("/flags/{key}", guarded(pages.flag, api=False)),
        Route("/workers", guarded(pages.workers, api=False)),
        Route("/login", pages.login, methods=["GET", "POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route(
            "/flags/{key}/{op:str}",
            guarded(pages.write, write=True, api=False),
            methods=["POST"],
        ),
        Route(
            "/rollouts/{key}/{action:str}",
            guarded(pages.rollout_action, write=True, api=False),
            methods=["POST"],
        ),
        Route("/api/flags", guarded(api.flags)),
        Route("/api/flags/{key}", guarded(api.flag)),
        Route("/api/flags/{key}/{op:str}", guarded(api.write, write=True), methods=["POST"]),
        Route(
            "/api/rollouts/{key}/{action:str}", guarded(api.rollout, write=True), methods=["POST"]
        ),
        Route("/api/workers", guarded(api.workers)),
        Route("/api/history", guarded(api.history)),
        Route("/api/events", guarded(api.events)),
        Mount("/static", _VersionedStatic(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.backend = store
    app.state.poller = poller
    return app


class _VersionedStatic(StaticFiles):
    """The stylesheet and script, cached by browsers for a day: pages link them with their
    content hash (`?v=`), so a new version is a new URL. Without this every page load
    revalidated both before it could render (~25 ms on a loaded machine)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=86400, immutable"
        return response


class Api:
    """The JSON API: the same contracts as the CLI and `Publisher`."""

    def __init__(self, store: Backend, poller: Poller, config: DashboardConfig) -> None:
        self.store = store
        self.poller = poller
        self.config = config

    async def flags(self, request: Request) -> Response:
        view = await run_in_threadpool(self.store.view)
        read_only = await run_in_threadpool(self.store.read_only)
        return _json(
            {
                "namespace": self.config.namespace,
                "epoch": view.epoch,
                "revision": view.revision,
                "read_only": read_only,
                "signs_writes": self.store.signs,
                "flags": {
                    key: {
                        "version": view.versions.get(key, 0),
                        "enabled": flag.enabled,
                        "definition": msgspec.to_builtins(flag),
                        "last_change": view.last_change.get(key),
                    }
                    for key, flag in sorted(view.flags.items())
                },
            }
        )

    async def flag(self, request: Request) -> Response:
        key = request.path_params["key"]
        stored = await run_in_threadpool(self.store.flag, key)
        epoch, revision = await run_in_threadpool(self.store.revision)
        return _json(
            {
                "key": key,
                "version": stored.version,
                "enabled": stored.flag.enabled,
                "revision": revision,
                "epoch": epoch,
                "definition": msgspec.to_builtins(stored.flag),
            }
        )

    async def write(self, request: Request) -> Response:
        key, op = request.path_params["key"], request.path_params["op"]
        body = await _json_body(request)
        expected, reason, options = parse_write(op, body)
        outcome = await run_in_threadpool(
            lambda: self.store.write(op, key, expected, reason, **options)
        )
        return _json(outcome)

    async def rollout(self, request: Request) -> Response:
        key, action = request.path_params["key"], request.path_params["action"]
        if action not in _ROLLOUT_ACTIONS:
            raise FlagNotFoundError("action", action)
        body = await _json_body(request)
        reason = _reason(body)
        result = await run_in_threadpool(self.store.rollout_action, action, key, reason)
        return _json(result)

    async def workers(self, request: Request) -> Response:
        state = self.poller.state if self.poller.state.ok else None
        workers = await run_in_threadpool(self.store.workers)
        epoch, revision = await run_in_threadpool(self.store.revision)
        now_ms = int(time.time() * 1000)
        rows = [  # the presence record, and what the workers page derives from it
            {**msgspec.to_builtins(worker), **worker_row(worker, epoch, revision, now_ms)}
            for worker in workers
        ]
        return _json(
            {
                "epoch": epoch,
                "revision": revision,
                "workers": rows,
                "live": None if state is None else state.to_json(),
            }
        )

    async def history(self, request: Request) -> Response:
        key = request.query_params.get("key") or None
        try:
            limit = min(1000, max(1, int(request.query_params.get("limit", "100"))))
        except ValueError:
            raise BadRequestError("limit: not an integer") from None
        entries = await run_in_threadpool(self.store.history, key, limit)
        return _json(
            {
                "entries": [
                    {**msgspec.to_builtins(entry),
                     "diff": [str(change) for change in entry.fields]}
                    for entry in entries
                ]
            }
        )  # fmt: skip

    def _state(self, sequence: int) -> str:
        """An event's payload: the live state and its sequence number (a page rendered at
        the same sequence already shows it)."""
        return json.dumps({**self.poller.state.to_json(), "sequence": sequence})

    async def events(self, request: Request) -> Response:
        async def stream() -> AsyncIterator[dict[str, Any]]:
            seen = self.poller.sequence
            yield {"event": "state", "data": self._state(seen), "retry": 1000}
            while True:
                now = await self.poller.wait_change(seen, _EVENT_KEEPALIVE_S)
                if now == seen:
                    yield {"comment": "keepalive"}
                    continue
                seen = now
                yield {"event": "state", "data": self._state(now)}

        return EventSourceResponse(stream(), headers={"Cache-Control": "no-store"})


def parse_write(op: str, body: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """(expected_version, reason, options) of a write body; `BadRequestError` naming the
    field otherwise."""
    if op not in _WRITE_OPS:
        raise FlagNotFoundError("action", op)
    expected = body.get("expected_version")
    if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
        raise BadRequestError(
            "expected_version: required, the flag version your change is based on "
            "(GET /api/flags/<key> answers it)"
        )
    options: dict[str, Any] = {}
    if op == "ramp":
        variant, percent, rule = body.get("variant"), body.get("percent"), body.get("rule")
        if not isinstance(variant, str) or not variant:
            raise BadRequestError("variant: required, a variant name")
        if (
            isinstance(percent, bool)
            or not isinstance(percent, int | float)
            or not 0 <= percent <= 100  # also refuses NaN
        ):
            raise BadRequestError("percent: required, a number from 0 to 100")
        if rule is not None and not isinstance(rule, str):
            raise BadRequestError("rule: a rule name, or null for the fallthrough")
        options = {"variant": variant, "percent": float(percent), "rule": rule or None}
    elif op == "rollback":
        to_version = body.get("to_version")
        if not isinstance(to_version, int) or isinstance(to_version, bool) or to_version < 1:
            raise BadRequestError("to_version: required, a version number >= 1")
        options = {"to_version": to_version}
    return expected, _reason(body), options


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise BadRequestError("reason: must be text")
    if len(reason) > _MAX_REASON:
        raise BadRequestError(f"reason: at most {_MAX_REASON} characters")
    return reason


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequestError("body: not JSON") from None
    if not isinstance(body, dict):
        raise BadRequestError("body: a JSON object")
    return body


async def _write_refusal(
    request: Request, needs_csrf: bool, guard: Guard, store: Backend, api: bool
) -> Response | None:
    """Why a write must not run (read-only, CSRF), or None."""
    read_only = await run_in_threadpool(store.read_only)
    if read_only:
        message = f"read-only dashboard: {read_only}; nothing was written"
        if api:
            return JSONResponse({"error": "read_only", "message": message}, status_code=403)
        return Response(message, status_code=403, media_type="text/plain")
    if api:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json":
            return JSONResponse(
                {"error": "unsupported_media_type", "message": "send application/json"},
                status_code=415,
            )
        if needs_csrf and not guard.csrf_ok(request.headers.get(CSRF_HEADER)):
            origin = request.headers.get("origin")
            cross = request.headers.get("sec-fetch-site") in ("cross-site", "same-site")
            # A JSON POST from another origin needs a CORS preflight we never answer, so a
            # tokenless script on this machine may omit the header; a browser from
            # elsewhere may not (and a session cookie always needs it).
            if (
                access_is_cookie(request, guard)
                or cross
                or (origin is not None and not _same_origin(origin, request))
            ):
                return JSONResponse(
                    {"error": "csrf", "message": f"missing or wrong {CSRF_HEADER} header"},
                    status_code=403,
                )
        return None
    if needs_csrf:
        form = await read_form(request)
        if not guard.csrf_ok(form.get(CSRF_FIELD)):
            return Response("missing or wrong CSRF token: reload the page", status_code=403)
    return None


def access_is_cookie(request: Request, guard: Guard) -> bool:
    """True when the request is authenticated by the session cookie (not open mode)."""
    return guard.secret is not None and COOKIE in request.cookies


def _same_origin(origin: str, request: Request) -> bool:
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def _error_response(error: Exception, api: bool, pages: _pages.Pages, request: Request) -> Response:
    if isinstance(error, FlagNotFoundError):
        status = 404
    elif isinstance(error, BadRequestError | InvalidFlagError):
        status = 400
    elif isinstance(error, NotImplementedError):
        status = 501
    elif isinstance(error, StoreError):
        status = 503
    else:
        status = 400
    if api:
        return JSONResponse(
            {"error": type(error).__name__, "message": str(error)}, status_code=status
        )
    return pages.error(request, status, str(error))


def _json(payload: Any) -> Response:
    return Response(msgspec.json.encode(payload), media_type="application/json")
