"""A small HTTP file server on 127.0.0.1 for URL-input tests, counting what it was asked.

It serves ``files`` (path -> bytes) with an ``ETag`` (MD5 of the bytes), ``Last-Modified``
and ``Content-Length``, answers ``If-None-Match`` with 304, asks for Basic auth on paths under
``/private/``, redirects ``redirects`` and can announce a wrong ``Content-MD5`` (``lie_md5``) or length (``cut_short``) to show that damaged
downloads are refused. ``requests`` lists ``(method, path, status)`` of every request.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

__all__ = ["FileServer", "serve_files"]

USER, PASSWORD = "alice", "pw-not-to-be-recorded"


class FileServer:
    """The files served, the requests seen, and the server's base URL."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.lie_md5 = False
        self.cut_short = False  # announce 5 bytes more than are sent, then close
        self.redirects: dict[str, str] = {}  # path -> absolute URL answered with 302
        self.authorizations: list[str] = []  # every Authorization header received
        self.lock = threading.Lock()
        self.base = ""

    def bodies_sent(self, path: str) -> int:
        """How many times ``path`` was answered with its whole content (200)."""
        with self.lock:
            return sum(1 for _m, p, status in self.requests if p.split("?")[0] == path and status == 200)

    def statuses(self, path: str) -> list[int]:
        """The status of every request for ``path``, in order."""
        with self.lock:
            return [status for _m, p, status in self.requests if p.split("?")[0] == path]


def serve_files() -> Iterator[FileServer]:
    """Start a ``FileServer`` in a thread (a generator for a pytest fixture); stops it after."""
    state = FileServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            self._answer()

        def send_response(self, code: int, message: str | None = None) -> None:
            # Recorded before any byte goes out: a client that has read the whole answer must
            # find its request counted (recording after the write raced with the test's check).
            with state.lock:
                state.requests.append(("GET", self.path, code))
            super().send_response(code, message)

        def _answer(self) -> int:
            path = self.path.split("?")[0]
            with state.lock:
                if self.headers.get("Authorization"):
                    state.authorizations.append(self.headers["Authorization"])
                target = state.redirects.get(path)
            if target:
                return self._empty(302, {"Location": target})
            if path.startswith("/private/"):
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self._empty(401, {"WWW-Authenticate": 'Basic realm="files"'})
            with state.lock:
                body = state.files.get(path)
            if body is None:
                return self._empty(404)
            etag = '"' + hashlib.md5(body).hexdigest() + '"'
            if self.headers.get("If-None-Match") == etag:
                return self._empty(304, {"ETag": etag})
            md5 = hashlib.md5(body + b"x" if state.lie_md5 else body).digest()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + (5 if state.cut_short else 0)))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", formatdate(0, usegmt=True))
            self.send_header("Content-MD5", base64.b64encode(md5).decode())
            self.end_headers()
            self.wfile.write(body)
            return 200

        def _empty(self, status: int, headers: dict[str, str] | None = None) -> int:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return status

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="test-http-files", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
