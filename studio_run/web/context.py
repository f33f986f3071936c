"""What every page handler needs: the opened store, its run index, the safety rules and the
templates, held by one ``Context`` on the app; plus the few helpers every page uses (render a
template, find the run a URL names, answer 404).

A run is named in URLs by experiment and run id, both checked against the names studio could
have stored before anything is looked up, so an odd URL is a 404, never a store key.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Optional

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..console import format_size
from ..errors import NotFoundError, UsageError
from ..refs import check_name
from ..store.records import DamagedRecordError, RunRecord
from ..store.runindex import RunIndex
from ..store.store import Store
from .security import Guard

__all__ = ["Context", "STATUS_CLASSES", "artifact_tag", "context_of", "not_found", "record_of", "render", "run_of",
           "template_environment"]

_RUN_ID = re.compile(r"\d{8}T\d{6}(\d{6})?Z-[0-9a-f]{6}")
# A colour per status (styles in static/studio.css); unknown statuses get the neutral one.
STATUS_CLASSES = {
    "finished": "ok", "running": "live", "queued": "wait", "incomplete": "warn", "failed": "bad",
    "lost": "bad", "interrupted": "off", "stopped": "off", "timed-out": "warn", "expired": "off",
}


@dataclass
class Context:
    """The state of one ``studio ui`` server (built once by ``app.build_app``)."""

    store: Store
    guard: Guard
    index: RunIndex
    hostname: str
    templates: jinja2.Environment

    def fresh_index(self, force: bool = False) -> RunIndex:
        """The run index; with ``force``, brought up to date first (after a stop or a delete, so the
        next page shows it). Otherwise the index refreshes itself when a read finds it stale."""
        if force:
            self.index.refresh()
        return self.index


def context_of(request: Request) -> Context:
    """The server's ``Context`` (kept in ``app.state``)."""
    return request.app.state.context  # type: ignore[no-any-return]


def not_found(what: str) -> HTTPException:
    """A 404 saying what was not there (raise it)."""
    return HTTPException(404, what)


def run_of(request: Request) -> tuple[Context, RunRecord]:
    """The context, and the run that ``/runs/{experiment}/{run_id}/...`` names (404s as ``record_of``)."""
    context = context_of(request)
    return context, record_of(context, request.path_params["experiment"], request.path_params["run_id"])


def artifact_tag(request: Request, record: RunRecord) -> str:
    """The URL's ``{tag}``, once ``record`` holds a stored artifact by that tag; 404 otherwise."""
    tag: str = request.path_params["tag"]
    art = record.artifacts.get(tag)
    if art is None or not art.digest:
        raise not_found(f"the run has no artifact {tag}")
    return tag


def record_of(context: Context, experiment: str, run_id: str) -> RunRecord:
    """The run a URL names, with its version number; 404 when the names are not ones studio
    stores, the run is not there, or its record is damaged.

    The version comes from the index (no listing per request: the log box asks every second);
    a run newer than the index is placed by listing its experiment."""
    if not check_name(experiment) or not _RUN_ID.fullmatch(run_id):
        raise not_found("no such run")
    try:
        row = context.index.run(experiment, run_id)
        if row is not None:
            return context.store.records.read(experiment, run_id, row.version)
        ids = context.store.records.run_ids(experiment)
        if run_id not in ids:
            raise not_found(f"experiment {experiment} has no run {run_id}")
        return context.store.records.read(experiment, run_id, ids.index(run_id) + 1)
    except (NotFoundError, UsageError):
        raise not_found(f"experiment {experiment} has no run {run_id}") from None
    except DamagedRecordError as exc:
        raise not_found(str(exc)) from None


def render(request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """A page (or, for htmx, a fragment) rendered from ``templates/name``."""
    context = context_of(request)
    template = context.templates.get_template(name)
    tensorboards = request.app.state.tensorboards
    html = template.render(request=request, csrf=context.guard.csrf, store_url=context.store.url,
                           status_class=_status_class, tensorboard=tensorboards is not None,
                           tensorboard_url=tensorboards.url() if tensorboards is not None else None, **values)
    return HTMLResponse(html, status_code=status_code)


def _status_class(status: str) -> str:
    return "st-" + STATUS_CLASSES.get(status, "off")


def template_environment() -> jinja2.Environment:
    """Jinja2 over the packaged templates, escaping everything, with the page's formatting filters."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("studio_run.web", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["size"] = lambda n: "" if n is None else format_size(int(n))
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)  # compiled now, at start, rather than by the first page that needs it
    return env


def _when(stamp: Optional[float]) -> str:
    if not stamp:
        return ""
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
