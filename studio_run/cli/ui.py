"""``studio ui``: serve the web page (``studio_run.web``) over the configured store.

This command only parses and wires: it checks that the ``[ui]`` extra is installed (one line
with the pip command if not), binds the socket itself (so a taken port is one line, and
``--port 0`` picks a free one), prints the address once, and hands the socket to uvicorn.
Starlette, uvicorn and Jinja2 are imported only here, inside the command, so ``studio --help``
never loads them.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading

import click

from .common import open_store

__all__ = ["ui"]

_NEEDED = ("starlette", "uvicorn", "jinja2")


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (IPv6 when ``host`` is one), or a one-line error."""
    from ..errors import UsageError

    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or --host")
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _require_extra() -> None:
    """A one-line error naming the pip command when the ``[ui]`` extra is not installed."""
    from ..errors import MissingDependencyError

    missing = []
    for name in _NEEDED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingDependencyError(f"studio ui needs {', '.join(missing)} (the [ui] extra); "
                                     "run: pip install 'studio-run[ui]'")


def _url_host(host: str) -> str:
    """The host to print in the URL: the machine's name for a wildcard bind."""
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host.strip('[]')}]" if ":" in host else host


@click.command()
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback requires the printed sign-in token.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@click.pass_context
def ui(ctx: click.Context, port: int, host: str, open_browser: bool) -> None:
    """Serve a web page over the store: runs, run pages, downloads, live logs, stop and compare.

    Binds 127.0.0.1 unless --host says otherwise; then a random token is printed once as
    part of the URL, and the page answers only browsers that opened that URL.
    """
    _require_extra()
    import uvicorn

    from ..store.runindex import RunIndex
    from ..web.app import build_app
    from ..web.security import Guard

    store = open_store(ctx, read_only=True)
    guard = Guard.for_bind(host)
    index = RunIndex(store, os.path.join(store.config.home, "index"), max_age=5.0, wait=0.0)
    app = build_app(store, guard, index, socket.gethostname())
    sock = _listening_socket(host, port)
    url = guard.sign_in_url(f"http://{_url_host(host)}:{sock.getsockname()[1]}")
    click.echo(f"studio ui: {store.url} at {url}  (Ctrl-C stops it)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False,
                                           server_header=False, lifespan="on"))
    if open_browser:
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        index.close()
        store.close()


def _open_when_started(server: "object", url: str) -> None:
    """Open ``url`` in a browser once uvicorn accepts connections."""
    import time
    import webbrowser

    deadline = time.monotonic() + 30
    while not getattr(server, "started", False) and time.monotonic() < deadline:
        time.sleep(0.05)
    webbrowser.open(url)
