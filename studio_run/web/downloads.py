"""Downloads: an artifact as ``.tar.gz`` or ``.tar``, or one file of it, streamed from the store
as it is read (``store.archive``: constant memory, every byte verified, file times kept).

The first chunk is produced before the response starts, so a run, tag or file that is not
there is a plain 404 (and damage found that early a 500 saying so) rather than a broken download. After that a failure (a corrupted object)
aborts the connection: the browser reports a failed download, never a silently wrong archive.
A single file is always sent as an attachment of type ``application/octet-stream`` in a sandbox:
a captured HTML file must never run as a page of this server.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import StreamingResponse

from ..errors import IntegrityError, NotFoundError, StoreError, UnsafePathError
from ..store.archive import GZIP_LEVEL, iter_file, iter_tar
from .context import artifact_tag, not_found, run_of
from .security import safe_path

__all__ = ["file_download", "tar_download", "tar_gz_download"]

_FORMATS = {"tar.gz": ("application/gzip", GZIP_LEVEL), "tar": ("application/x-tar", None)}


def _started(open_chunks: Callable[[], Iterator[bytes]]) -> Iterator[bytes]:
    """The chunks ``open_chunks`` gives, with the first one already produced (so a missing thing
    raises here, as a 404)."""
    try:
        chunks = iter(open_chunks())
        first = next(chunks)
    except StopIteration:
        return iter(())  # an empty file
    except (NotFoundError, UnsafePathError) as exc:
        raise not_found(str(exc)) from None
    except IntegrityError as exc:  # found before the first byte: say so instead of sending anything
        raise HTTPException(500, f"{exc} (`studio check` finds and quarantines damaged objects)") from None
    except StoreError as exc:
        raise HTTPException(503, f"the store did not answer: {exc}") from None
    return itertools.chain((first,), chunks)


def _attachment(name: str) -> dict[str, str]:
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    return {
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "no-store",
    }


def tar_gz_download(request: Request) -> StreamingResponse:
    """``/runs/{experiment}/{run_id}/artifact/{tag}.tar.gz``: the whole artifact, compressed."""
    return _artifact_download(request, "tar.gz")


def tar_download(request: Request) -> StreamingResponse:
    """``/runs/{experiment}/{run_id}/artifact/{tag}.tar``: the whole artifact, for content that is
    already compressed (checkpoints), where gzip would only cost time."""
    return _artifact_download(request, "tar")


def _artifact_download(request: Request, fmt: str) -> StreamingResponse:
    context, record = run_of(request)
    tag = artifact_tag(request, record)
    media, level = _FORMATS[fmt]
    chunks = _started(lambda: iter_tar(context.store, record, tag, gzip_level=level))
    name = f"{record.experiment}-v{record.version}-{tag}.{fmt}"
    return StreamingResponse(chunks, media_type=media, headers=_attachment(name))


def file_download(request: Request) -> StreamingResponse:
    """``/runs/{experiment}/{run_id}/file/{tag}/{path}``: one file, found by name in the manifest."""
    context, record = run_of(request)
    tag = request.path_params["tag"]
    path = safe_path(request.path_params["path"])
    if path is None or tag not in record.artifacts or not record.artifacts[tag].digest:
        raise not_found("no such file")
    chunks = _started(lambda: iter_file(context.store, record, tag, path))
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers=_attachment(path.rsplit("/", 1)[-1]))
