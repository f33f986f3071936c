"""The Runs page (home): one page of the run index, sorted and filtered on the server.

Only the 50 rows shown are rendered; the index answers the page and the total without reading
records (``store.runindex``), so the page costs the same with ten or ten thousand runs. With
htmx (paging, sorting, filter inputs) only the table is sent back and the URL is pushed, so a
filtered page can be bookmarked and reloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..store.runindex import SORTS
from .context import STATUS_CLASSES, context_of, render

__all__ = ["PAGE_SIZE", "RunsQuery", "runs_page"]

PAGE_SIZE = 50


@dataclass(frozen=True)
class RunsQuery:
    """What a Runs URL asks for; anything unparsable falls back to the default, never an error."""

    page: int = 1
    sort: str = "started"
    descending: bool = True
    experiment: str = ""
    status: str = ""
    host: str = ""
    hyper: str = ""  # NAME=VALUE[, NAME=VALUE...]

    @classmethod
    def parse(cls, params: dict[str, str]) -> "RunsQuery":
        """From a request's query parameters."""
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        sort = params.get("sort", "started")
        return cls(
            page=page,
            sort=sort if sort in SORTS else "started",
            descending=params.get("order", "desc") != "asc",
            experiment=params.get("experiment", "").strip()[:200],
            status=params.get("status", "").strip()[:40],
            host=params.get("host", "").strip()[:200],
            hyper=params.get("hp", "").strip()[:200],
        )

    def url(self, **changes: object) -> str:
        """This query with ``changes`` applied, as a ``/?...`` URL (defaults left out)."""
        values = {"page": self.page, "sort": self.sort, "order": "desc" if self.descending else "asc",
                  "experiment": self.experiment, "status": self.status, "host": self.host, "hp": self.hyper}
        values.update(changes)
        defaults = {"page": 1, "sort": "started", "order": "desc"}
        kept = {k: v for k, v in values.items() if v not in ("", None) and defaults.get(k) != v}
        return "/?" + urlencode(kept) if kept else "/"

    def sort_url(self, column: str) -> str:
        """The URL a column header links to: that column, flipping the order when already sorted by it."""
        if column == self.sort:
            return self.url(order="asc" if self.descending else "desc", page=1)
        return self.url(sort=column, order="asc" if column == "experiment" else "desc", page=1)

    def hyper_filter(self) -> dict[str, str]:
        """The hyper-parameter filter, ``lr=0.01, bs=32`` -> ``{"lr": "0.01", "bs": "32"}`` (parts
        without ``=`` are ignored)."""
        pairs = (part.partition("=") for part in self.hyper.split(","))
        return {name.strip(): value.strip() for name, eq, value in pairs if eq and name.strip()}


def runs_page(request: Request) -> HTMLResponse:
    """The Runs page; just its table for an htmx request."""
    context = context_of(request)
    query = RunsQuery.parse(dict(request.query_params))
    index = context.fresh_index()
    rows, total = index.page(offset=(query.page - 1) * PAGE_SIZE, limit=PAGE_SIZE, sort=query.sort,
                             descending=query.descending, experiment=query.experiment, status=query.status,
                             host=query.host, hyper=query.hyper_filter())
    pages = max(1, -(-total // PAGE_SIZE))
    fragment = request.headers.get("hx-request") == "true" and request.headers.get("hx-target") == "runs"
    return render(request, "_runs_table.html" if fragment else "runs.html", rows=rows, total=total,
                  query=query, pages=pages, page_size=PAGE_SIZE, choices=_choices(index.choices()),
                  indexing=index.indexing(), index_error=index.last_error)


def _choices(known: dict[str, list[str]]) -> dict[str, list[str]]:
    """What the filter inputs offer: every status studio knows, the hosts and names in the index."""
    return {"status": sorted(set(STATUS_CLASSES) | set(known.get("status", []))),
            "host": known.get("host", []), "names": known.get("names", [])}
