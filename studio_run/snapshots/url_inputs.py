"""``--capture-once URL:TAG``: fetch each URL input once, and not again while it is unchanged.

``UrlInputs.fetch`` runs before anything of the run is stored. For each URL it asks the server
for the current validators (ETag / Last-Modified / size of every file: ``url_sources``) and
compares them with what ``$STUDIOML_HOME/url-inputs/cache.json`` remembers from an earlier run:

- unchanged, and the snapshot it produced is still in the store: nothing is downloaded, and the
  run's artifact points at that snapshot (``FetchedInput.digest``);
- otherwise the file or prefix is streamed into a temporary folder under
  ``$STUDIOML_HOME/url-inputs/``, which the runner snapshots like any ``--capture-once`` path
  (so its content is deduplicated by the object store) and ``remember`` then records.

The cache is keyed by the URL without credentials or query string, and holds only that URL,
a hash of the validators and a snapshot digest: never a secret. An HTTP server decides itself
whether a cached copy is current (a conditional GET with the full URL), so two signed links to
one file share an entry safely. The script gets the snapshot materialised read-only from the
blob cache (``input_paths``), whether or not it was downloaded this time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from .. import console
from ..objects.repository import Repository
from ..origin import process_alive
from ..refs import CaptureSpec
from ..storage.urls import redact_url, scheme_of
from .blobcache import BlobCache

if TYPE_CHECKING:  # url_sources (urllib.request, http.client, ssl) is imported when a URL is fetched
    from .url_sources import RemoteFile, Source

__all__ = ["FetchedInput", "UrlInputs", "input_paths"]

_CACHE_ENTRIES = 500  # URLs remembered; the least recently used are forgotten first


@dataclass
class FetchedInput:
    """One URL input of a run: either ``path`` to snapshot (just downloaded), or the ``digest``
    of the unchanged snapshot an earlier run made of it."""

    tag: str
    url: str  # redacted
    validator: str  # what the cache compares next time ("" when the server gave none)
    path: str = ""
    digest: str = ""


class UrlInputs:
    """Fetches a run's URL inputs under ``home`` and remembers their snapshots.

    ``repos`` are where a remembered snapshot may still be (captures' repository first);
    ``options_for(scheme)`` gives backend options (an S3 endpoint) for a scheme.
    """

    def __init__(self, home: str, repos: Sequence[Repository], options_for: Callable[[str], dict[str, Any]]) -> None:
        self.folder = os.path.join(home, "url-inputs")
        self.cache_path = os.path.join(self.folder, "cache.json")
        self.repos = list(repos)
        self.options_for = options_for
        self._temp: list[str] = []

    def fetch(self, specs: Sequence[CaptureSpec]) -> list[FetchedInput]:
        """Fetch or find each URL spec; raises (one line) before anything is stored."""
        if not specs:
            return []
        self._sweep()
        cache = self._load()
        fetched = []
        try:
            for spec in specs:
                fetched.append(self._one(spec, cache.get(_cache_key(spec.path))))
        except BaseException:
            self.cleanup()
            raise
        return fetched

    def _one(self, spec: CaptureSpec, cached: Optional[dict[str, Any]]) -> FetchedInput:
        from .url_sources import HttpSource, open_source  # only runs with URL inputs pay for the HTTP stack

        url = _cache_key(spec.path)
        scheme = scheme_of(spec.path)
        source = open_source(spec.path, self.options_for(scheme))
        try:
            digest = str(cached.get("digest", "")) if cached else ""
            if digest and not self._stored(digest):
                digest = ""  # the snapshot was collected since: fetch again
            if isinstance(source, HttpSource):
                item = source.validators(str(cached.get("validator", "")) if digest and cached else None)
                if item is None:
                    return self._unchanged(spec, url, str(cached.get("validator", "")) if cached else "", digest)
                listing = [item]
                validator = item.validator
            else:
                listing = source.listing()
                validator = _combined(listing)
                if digest and cached and cached.get("validator") == validator:
                    return self._unchanged(spec, url, validator, digest)
            path = self._download(source, listing)
        finally:
            source.close()
        size = sum(max(item.size, 0) for item in listing)
        console.info(f"fetched {url} as {spec.tag!r} ({len(listing)} file{'s' if len(listing) != 1 else ''}, "
                     f"{console.format_size(size)})")
        return FetchedInput(spec.tag, url, validator, path=path)

    def _unchanged(self, spec: CaptureSpec, url: str, validator: str, digest: str) -> FetchedInput:
        console.info(f"{url} is unchanged since it was last fetched: {spec.tag!r} reuses that snapshot")
        return FetchedInput(spec.tag, url, validator, digest=digest)

    def _download(self, source: Source, listing: list[RemoteFile]) -> str:
        """Stream every file into a new temporary folder; the path to snapshot (file or folder)."""
        os.makedirs(self.folder, exist_ok=True)
        temp = os.path.join(self.folder, f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.mkdir(temp)
        self._temp.append(temp)
        root = temp if source.single else os.path.join(temp, "data")
        with console.progress(f"fetching {source.url}", sum(max(i.size, 0) for i in listing) or None) as advance:
            for item in listing:
                dest = os.path.join(root, *item.name.split("/"))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                source.fetch(item, dest, advance)
        return os.path.join(temp, listing[0].name) if source.single else root

    def _stored(self, digest: str) -> bool:
        for repo in self.repos:
            try:
                if repo.has_manifest(digest):
                    return True
            except Exception:  # noqa: BLE001 - an unreachable store only means "fetch again"
                continue
        return False

    def remember(self, fetched: Sequence[FetchedInput], digests: dict[str, str]) -> None:
        """Record, for each downloaded input whose snapshot is ``digests[tag]``, its validators."""
        cache = self._load()
        now = time.time()
        for item in fetched:
            digest = digests.get(item.tag) or item.digest
            if item.validator and digest:
                cache[item.url] = {"validator": item.validator, "digest": digest, "used": now}
        if len(cache) > _CACHE_ENTRIES:
            keep = sorted(cache.items(), key=lambda kv: kv[1].get("used", 0), reverse=True)[:_CACHE_ENTRIES]
            cache = dict(keep)
        os.makedirs(self.folder, exist_ok=True)
        tmp = f"{self.cache_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(cache, f, indent=1, sort_keys=True)
        os.replace(tmp, self.cache_path)  # a lost race only costs the loser's entry a download

    def cleanup(self) -> None:
        """Remove the temporary folders of this run's downloads (after their snapshot)."""
        for temp in self._temp:
            shutil.rmtree(temp, ignore_errors=True)
        self._temp.clear()

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.cache_path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}  # missing or damaged: everything is fetched again, nothing is lost
        return data if isinstance(data, dict) else {}

    def _sweep(self) -> None:
        """Remove temporary folders left by runs that died (their pid no longer lives)."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            parts = name.split("-")
            if name.startswith("tmp-") and len(parts) == 3 and parts[1].isdigit() and not process_alive(int(parts[1])):
                shutil.rmtree(os.path.join(self.folder, name), ignore_errors=True)


def input_paths(cache: BlobCache, repos: Sequence[Repository], digests: dict[str, str]) -> dict[str, str]:
    """The local path of each URL input's snapshot (``tag -> digest``), read-only from the blob
    cache, filled from the first of ``repos`` that holds it (a remote store's staging first)."""
    paths = {}
    for tag, digest in digests.items():
        repo = next((r for r in repos if r.has_manifest(digest)), repos[-1])
        manifest = repo.get_manifest(digest)
        paths[tag], _hit = cache.ensure(repo, digest, manifest)
    return paths


def _cache_key(url: str) -> str:
    """The URL as recorded and remembered: no password, no query; a bucket or SSH prefix
    without its trailing ``/`` (``s3://b/data`` and ``s3://b/data/`` name the same keys)."""
    shown = redact_url(url)
    return shown if scheme_of(url) in ("http", "https") else shown.rstrip("/")


def _combined(listing: list[RemoteFile]) -> str:
    """One value that changes when any file of a listing does (its name, size or validator)."""
    text = json.dumps([[i.name, i.size, i.validator] for i in listing])
    return hashlib.sha256(text.encode()).hexdigest()


