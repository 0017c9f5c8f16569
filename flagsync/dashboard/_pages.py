"""The HTML pages: flags, one flag, workers, login, and the write results.

Pages are rendered on the server and readable without JS. A page's live region is
also served alone (`?fragment=1`) so the page's script can swap it in when the
event stream says the store moved. Writes from the pages are plain form posts whose
answer is the flag page with the write's propagation report, or the conflict view.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

import msgspec
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from flagsync.dashboard._auth import COOKIE, Guard, read_form
from flagsync.dashboard._views import environment

if TYPE_CHECKING:
    from flagsync.dashboard._backend import Backend, StaleWriteError, StoreView, WriteOutcome
    from flagsync.dashboard._config import DashboardConfig
    from flagsync.dashboard._live import Poller

__all__ = ["Pages"]

_FRAGMENT = "X-Flagsync-Fragment"
"""Says whether a fragment answer holds changed rows only (`rows`) or the whole region."""


PAGE_SIZE: Final = 50
"""Flags per page: 1,000 rows (~700 KB) took Chromium ~0.7 s to parse and lay out,
100 rows ~0.15 s on the loaded 2-core VM; 50 keep a page load well under 200 ms."""
_PAGES_CACHED: Final = 32
_MAX_FILTER: Final = 128


@dataclass(frozen=True)
class _Listing:
    """Which flags the flags page shows: a page of the sorted keys matching a filter."""

    page: int = 1
    query: str = ""

    @classmethod
    def of(cls, request: Request) -> _Listing:
        """From `?page=N&q=TEXT` (a bad page number is the first page)."""
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        return cls(page, request.query_params.get("q", "").strip()[:_MAX_FILTER])

    def keys(self, view: StoreView) -> tuple[list[str], int]:
        """The keys on this page (sorted), and how many flags match the filter."""
        wanted = self.query.lower()
        matching = sorted(
            key
            for key, flag in view.flags.items()
            if not wanted or wanted in key or wanted in (flag.description or "").lower()
        )
        start = (self.page - 1) * PAGE_SIZE
        return matching[start : start + PAGE_SIZE], len(matching)

    def query_string(self, page: int | None = None) -> str:
        """`?page=2&q=model` for a link to `page` of this listing."""
        params = {"page": str(page or self.page)} if (page or self.page) > 1 else {}
        if self.query:
            params["q"] = self.query
        return "?" + urlencode(params) if params else ""


def _redacted(url: str) -> str:
    from flagsync._connection import redact_url  # noqa: PLC0415

    try:
        return redact_url(url)
    except ValueError:
        return url.rsplit("@", 1)[-1]


class Pages:
    """Renders every page from the backend and the live state."""

    def __init__(
        self, backend: Backend, poller: Poller, guard: Guard, config: DashboardConfig
    ) -> None:
        self.backend = backend
        self.poller = poller
        self.guard = guard
        self.config = config
        self.env = environment()
        self.store_url = _redacted(config.url)
        self._table: tuple[Any, dict[_Listing, str]] | None = None
        self._table_lock = threading.Lock()

    def _render(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        fragment = request.query_params.get("fragment") == "1"
        template = self.env.get_template(f"_{name}.html" if fragment else f"{name}.html")
        html = template.render(
            csrf=self.guard.csrf,
            live=self.poller.state,
            live_sequence=self.poller.sequence,
            namespace=self.config.namespace,
            store_url=self.store_url,
            actor=self.backend.actor,
            read_only=self.backend.read_only(),
            logged_in=self.guard.secret is not None,
            page=name,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    async def flags(self, request: Request) -> Response:
        """`/`: the flags (a page of `PAGE_SIZE`, optionally filtered), their state,
        weights, last change and a kill switch each."""
        listing = _Listing.of(request)

        def table() -> tuple[StoreView, str]:
            view = self.backend.view()
            return view, self._flags_table(view, self.backend.request_shares(), listing)

        if request.query_params.get("fragment") == "rows":
            rows = await run_in_threadpool(self._changed_rows, request, listing)
            if rows is not None:
                return HTMLResponse(rows, headers={"Cache-Control": "no-store", _FRAGMENT: "rows"})
        view, html = await run_in_threadpool(table)
        if request.query_params.get("fragment") in ("1", "rows"):
            return HTMLResponse(html, headers={"Cache-Control": "no-store"})
        return self._render(
            request,
            "flags",
            view=view,
            table=Markup(html),  # noqa: S704 - rendered by our autoescaping template
            listing=listing,
        )

    def _changed_rows(self, request: Request, listing: _Listing) -> str | None:
        """The table rows of the page's flags changed since its revision (`since`), or
        None when the page must reload its whole table (new epoch, deletions, a changed
        flag that is new to the page, many changes)."""
        try:
            since = int(request.query_params.get("since", ""))
        except ValueError:
            return None
        view = self.backend.view()
        if request.query_params.get("epoch", "") != (view.epoch or "") or since > view.revision:
            return None
        changed = self.backend.changed_since(since)
        if changed is None or not changed <= view.flags.keys():
            return None
        shown = set(listing.keys(view)[0])
        return self.env.get_template("_flag_rows.html").render(
            keys=sorted(changed & shown), view=view, shares=self.backend.request_shares(),
            csrf=self.guard.csrf, read_only=self.backend.read_only(),
        )  # fmt: skip

    def _flags_table(
        self, view: StoreView, shares: dict[str, dict[str, float]], listing: _Listing
    ) -> str:
        """A page of the flags table, rendered once per revision, request-share reading
        and page (every open page asks for it after a change)."""
        read_only = self.backend.read_only()
        state = (id(view), view.epoch, view.revision, read_only,
                 tuple((k, tuple(v.items())) for k, v in shares.items()))  # fmt: skip
        with self._table_lock:
            if self._table is None or self._table[0] != state:
                self._table = (state, {})
            pages = self._table[1]
            html = pages.get(listing)
            if html is None:
                keys, total = listing.keys(view)
                html = self.env.get_template("_flags.html").render(
                    csrf=self.guard.csrf, view=view, shares=shares, keys=keys, total=total,
                    listing=listing, pages=max(1, -(-total // PAGE_SIZE)), page_size=PAGE_SIZE,
                    namespace=self.config.namespace, read_only=read_only,
                )  # fmt: skip
                if len(pages) >= _PAGES_CACHED:
                    pages.clear()
                pages[listing] = html
            return html

    async def flag(
        self,
        request: Request,
        outcome: WriteOutcome | None = None,
        conflict: StaleWriteError | None = None,
        status: int = 200,
    ) -> Response:
        """`/flags/<key>`: rules, ramp controls, kill/enable, history, rollout, metrics."""
        key = request.path_params["key"]

        def gather() -> dict[str, Any]:
            stored = self.backend.flag(key)
            return {
                "key": key,
                "stored": stored,
                "revision": self.backend.revision()[1],
                "history": self.backend.history(key, limit=50),
                "rollout": self.backend.rollout(key),
                "metrics": self.backend.metrics_series(key),
            }

        context = await run_in_threadpool(gather)
        return self._render(
            request, "flag", status=status, outcome=outcome, conflict=conflict, **context
        )

    async def workers(self, request: Request) -> Response:
        """`/workers`: each live worker and the convergence of the latest revision."""
        return self._render(request, "workers")

    async def write(self, request: Request) -> Response:
        """A form post: kill, enable, ramp or rollback; answers the flag page with the
        propagation report (or the conflict view, via `conflict`)."""
        from flagsync.dashboard._backend import BadRequestError  # noqa: PLC0415
        from flagsync.dashboard.app import parse_write  # noqa: PLC0415

        key, op = request.path_params["key"], request.path_params["op"]
        form = await read_form(request)
        body: dict[str, Any] = {"reason": str(form.get("reason", ""))}
        try:
            body["expected_version"] = int(str(form.get("expected_version", "")))
            if op == "ramp":
                body["variant"] = str(form.get("variant", ""))
                body["percent"] = float(str(form.get("percent", "")))
                body["rule"] = str(form.get("rule", "")) or None
            if op == "rollback":
                body["to_version"] = int(str(form.get("to_version", "")))
        except ValueError as error:
            raise BadRequestError(f"form: {error}") from None
        expected, reason, options = parse_write(op, body)
        outcome = await run_in_threadpool(
            lambda: self.backend.write(op, key, expected, reason, **options)
        )
        return await self.flag(request, outcome=outcome)

    async def rollout_action(self, request: Request) -> Response:
        """A form post: pause, resume or abort the flag's guarded rollout; answers the flag
        page saying what was done (an abort's ramp with its propagation report)."""
        key, action = request.path_params["key"], request.path_params["action"]
        form = await read_form(request)
        reason = str(form.get("reason", ""))[:2000]
        answer = await run_in_threadpool(self.backend.rollout_action, action, key, reason)
        return await self.flag(request, outcome=_rollout_outcome(answer))

    async def conflict(self, request: Request, error: StaleWriteError) -> Response:
        """The 409 view: nothing written; what the flag is now and what changed."""
        return await self.flag(request, conflict=error, status=409)

    def error(self, request: Request, status: int, message: str) -> Response:
        """An error page with the one-line reason."""
        return self._render(request, "error", status=status, status_code=status, message=message)

    async def login(self, request: Request) -> Response:
        """The login form; a correct token sets the HttpOnly session cookie."""
        target = request.query_params.get("next", "/")
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            target = "/"  # only a path here: browsers read `/\host` as `//host`
        if self.guard.secret is None:
            return RedirectResponse(target, status_code=303)
        failed = False
        if request.method == "POST":
            form = await read_form(request)
            cookie = self.guard.login(str(form.get("token", "")))
            if cookie is not None:
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(
                    COOKIE, cookie, httponly=True, samesite="strict", path="/",
                    secure=request.url.scheme == "https",
                )  # fmt: skip
                return response
            failed = True
            await asyncio.sleep(0.2)  # a wrong token costs a guesser a little time
        status = 401 if failed else 200
        return self._render(request, "login", status=status, failed=failed, next=target)

    async def logout(self, request: Request) -> Response:
        """Forget the session cookie."""
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response


def _rollout_outcome(answer: dict[str, Any]) -> WriteOutcome:
    """A rollout command's answer as the flag page's outcome banner shows a write."""
    from flagsync.dashboard._backend import Propagation, WriteOutcome  # noqa: PLC0415

    action, key = answer["action"], answer["key"]
    done = {"pause": "paused", "resume": "resumed", "abort": "aborted"}[action]
    message = f"rollout of {key} {done} by {answer['actor']}"
    propagation = answer.get("propagation")
    if action == "abort":
        message += (
            f"; its variant ramped to 0% at revision {answer['revision']}"
            if answer["changed"]
            else "; its variant already served nobody"
        )
    return WriteOutcome(
        op=f"rollout {action}",
        key=key,
        changed=bool(answer.get("changed")),
        revision=answer.get("revision") or 0,
        version=None,
        actor=answer["actor"],
        reason=answer["reason"],
        propagation=None if propagation is None else msgspec.convert(propagation, Propagation),
        message=message,
    )
