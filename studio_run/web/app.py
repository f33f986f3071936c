"""The Starlette application: its routes, the guard every request passes first, and error pages.

``build_app`` only wires: the page modules (``runs``, ``run_page``, ``logs``, ``downloads``,
``actions``, ``compare``, ``queue_page``) do the work through the store, ``security`` holds the rules. The run
index refreshes itself in the background (``store.runindex``), so no page request pays for a scan.
"""

from __future__ import annotations

import contextlib
import html
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, MutableMapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..store.runindex import RunIndex
from ..store.store import Store
from .actions import delete_action, stop_action
from .compare import compare_page
from .context import Context, render, template_environment
from .downloads import file_download, tar_download, tar_gz_download
from .logs import log_fragment
from .queue_page import queue_page
from .run_page import run_page, tree_fragment
from .runs import runs_page
from .security import Guard, cookie_name, strip_token

try:  # the TensorBoard button needs integrations.tensorboard (studio tb); without it there is no button
    from .tensorboard import TensorBoards, tensorboard_action
except ImportError:
    TensorBoards = None  # type: ignore[assignment,misc]

__all__ = ["build_app"]

_Scope = MutableMapping[str, Any]
_ASGI = Callable[[_Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
# Every response: no framing by other sites, no type sniffing, scripts and styles only from here.
_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
]


class _Guarded:
    """ASGI middleware: the Host check, then (off loopback) the sign-in token, before any route."""

    def __init__(self, app: _ASGI, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: _Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = self._refusal(request)

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _value in headers}
                message["headers"] = headers + [(n, v) for n, v in _HEADERS if n not in present]
            await send(message)

        if response is not None:
            await response(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        """The response refusing this request, or None to let it through."""
        if not self.guard.host_ok(request.headers.get("host", "")):
            return PlainTextResponse("studio ui: unknown Host header (open the page by the address studio ui "
                                     "printed)\n", status_code=400)
        if self.guard.token is None:
            return None
        server = request.scope.get("server")
        cookie = cookie_name(server[1] if server else None)
        offered = request.query_params.get("token")
        if offered is not None and self.guard.token_ok(offered):
            query = strip_token(request.url.query)
            target = request.url.path + (f"?{query}" if query else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(cookie, offered, httponly=True, samesite="strict", path="/")
            return response
        if self.guard.token_ok(request.cookies.get(cookie)):
            return None
        return PlainTextResponse("studio ui: this server needs its sign-in token: open the URL with ?token= "
                                 "that `studio ui` printed when it started\n", status_code=403)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.headers.get("hx-request") == "true":
        return HTMLResponse(f'<p class="error">{html.escape(exc.detail)}</p>', status_code=exc.status_code)
    return render(request, "error.html", status_code=exc.status_code, message=exc.detail)


def build_app(store: Store, guard: Guard, index: RunIndex, hostname: str) -> Starlette:
    """The ``studio ui`` application over ``store``, its runs table answered by ``index`` (which
    refreshes itself when a page finds it older than its ``max_age``)."""
    context = Context(store, guard, index, hostname, template_environment())

    tensorboards = TensorBoards() if TensorBoards is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Start bringing the index up to date now, so the first page finds it (nearly) ready.
        threading.Thread(target=index.refresh_if_stale, name="studio-ui-index", daemon=True).start()
        try:
            yield
        finally:
            if tensorboards is not None:
                tensorboards.stop()  # TensorBoard ends with the UI

    run = "/runs/{experiment}/{run_id}"
    routes = [
        Route("/", runs_page),
        Route("/compare", compare_page),
        Route("/queue", queue_page),
        Route(run, run_page),
        Route(run + "/log", log_fragment),
        Route(run + "/tree/{tag}", tree_fragment),
        Route(run + "/artifact/{tag}.tar.gz", tar_gz_download),
        Route(run + "/artifact/{tag}.tar", tar_download),
        Route(run + "/file/{tag}/{path:path}", file_download),
        Route(run + "/stop", stop_action, methods=["POST"]),
        Route(run + "/delete", delete_action, methods=["POST"]),
        *([Route("/tensorboard", tensorboard_action, methods=["POST"])] if tensorboards is not None else []),
        Mount("/static", StaticFiles(packages=[("studio_run.web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.context = context
    app.state.tensorboards = tensorboards
    app.add_middleware(_Guarded, guard=guard)  # type: ignore[arg-type]
    return app
