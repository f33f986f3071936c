"""The page's safety rules, in one place: who may ask (Host header, sign-in token), what may
change state (POST with a CSRF token), and which names may reach the store (no ``..``, no
absolute path, no NUL).

Why each rule exists:

- **Host header.** A page on any web site can point its own domain at 127.0.0.1 (DNS
  rebinding) and then read this server as if same-origin. The browser still sends that foreign
  domain as ``Host``, so a request naming any host other than the one we serve is refused.
- **Token.** Bound to 127.0.0.1 only this machine can connect. Bound elsewhere, anyone on the
  network could: the server then wants a random token, shown once as a sign-in URL and kept
  in an ``HttpOnly``, ``SameSite=Strict`` cookie (scripts cannot read it; other sites cannot
  send it).
- **CSRF.** Stop and delete are POSTs carrying a per-process token embedded in the page; a
  foreign page can make a browser POST here but cannot read the page to learn the token.
- **Paths.** A file of an artifact is found by name in its manifest, never by joining the URL
  onto a folder; a path that even looks like an escape is a 404 before any lookup.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "COOKIE",
    "Guard",
    "cookie_name",
    "is_loopback",
    "safe_path",
    "strip_token",
]

COOKIE = "studio_ui_token"


def cookie_name(port: Optional[int]) -> str:
    """The sign-in cookie of the server on ``port``: browsers send a host's cookies to every port
    of it, so two ``studio ui`` on one machine must not overwrite each other's."""
    return f"{COOKIE}_{port}" if port else COOKIE
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or name) reaches only this machine."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def safe_path(path: str) -> Optional[str]:
    """``path`` as a manifest name (``a/b/c``), or None when it is absolute, holds ``..``, ``.``,
    an empty segment, a backslash or a NUL: such a request is answered 404 without a lookup."""
    if not path or "\x00" in path or "\\" in path or path.startswith("/"):
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return path


def _host_name(header: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8765`` -> ``::1``, ``a.b:80`` -> ``a.b``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass
class Guard:
    """The rules for one server: the address it is bound to and, off loopback, its token."""

    bind: str
    token: Optional[str] = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @classmethod
    def for_bind(cls, bind: str) -> "Guard":
        """Loopback binds need no token; any other bind gets a fresh random one."""
        return cls(bind, None if is_loopback(bind) else secrets.token_urlsafe(32))

    def allowed_hosts(self) -> frozenset[str]:
        """Host names a request may carry: loopback names, and off loopback this machine's names
        and the bound address (an IP literal is always accepted: no DNS is involved then)."""
        names = set(_LOOPBACK_NAMES) | {"127.0.0.1", "::1"}
        if self.token is not None:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower(), self.bind.strip("[]").lower()}
        return frozenset(names)

    def host_ok(self, header: str) -> bool:
        """Whether a request's ``Host`` header names this server (DNS rebinding defence)."""
        name = _host_name(header)
        if not name:
            return False
        if name in self.allowed_hosts():
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return address.is_loopback or self.token is not None

    def token_ok(self, offered: Optional[str]) -> bool:
        """Whether ``offered`` (cookie or ``?token=``) is this server's token (always, on loopback)."""
        if self.token is None:
            return True
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def csrf_ok(self, offered: Optional[str]) -> bool:
        """Whether a POST carried the page's CSRF token."""
        return offered is not None and hmac.compare_digest(offered.encode(), self.csrf.encode())

    def sign_in_url(self, base: str) -> str:
        """The URL printed once at start: ``base`` with the token when one is needed."""
        return f"{base}/?{urlencode({'token': self.token})}" if self.token else f"{base}/"


def strip_token(query: str) -> str:
    """The query string without its ``token`` parameter (the redirect after signing in)."""
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "token"]
    return urlencode(kept)
