"""The names an uploader has accepted: files, links, and the names being staged right now.

Why a module of its own: a bad name must be refused on the script's thread before a byte is
copied, and the rules are bookkeeping that has nothing to do with queues or destinations:

- a name is a file or a link to another name; ``overwrite=False`` refuses a name that was
  uploaded or is pending;
- a name is never both a file and a folder (``a`` and ``a/b.txt``), as no destination could
  hold both;
- a link points at a name that exists, and links never form a cycle;
- removing a name removes the links that read as it, so no link is ever left dangling.

A name is *claimed* while its copy is staged, so that two threads may stage the same name at
once and the rules hold for names not yet accepted; the uploader reports claims still open
at exit. Not thread-safe by itself: the uploader calls it with its lock held.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

__all__ = ["NameTable"]


class NameTable:
    """Accepted names (file or link) and open claims, checked against the rules above."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {}  # name -> "file" | "link"
        self._links: dict[str, str] = {}  # link name -> target name
        self._claims: Counter[str] = Counter()  # names being staged right now
        self._dirs: Counter[str] = Counter()  # folder prefix -> names below it

    def claim(self, name: str, overwrite: bool) -> None:
        """Hold ``name`` while its copy is staged; ``accept`` or ``unclaim`` it afterwards.

        Raises ``FileExistsError`` when ``overwrite`` is false and the name is known or
        pending, ``NotADirectoryError`` when a folder of it is a file name, and
        ``IsADirectoryError`` when other names lie below it.
        """
        known = name in self._kinds or self._claims[name] > 0
        if known and not overwrite:
            raise FileExistsError(f"{name!r} was already uploaded or is pending; pass overwrite=True to replace it")
        parts = name.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in self._kinds or self._claims[prefix] > 0:
                raise NotADirectoryError(f"cannot upload {name!r}: {prefix!r} is already a file name")
        if not known and self._dirs[name]:
            raise IsADirectoryError(f"cannot upload {name!r}: other names lie below it")
        if not known:
            for i in range(1, len(parts)):
                self._dirs["/".join(parts[:i])] += 1
        self._claims[name] += 1

    def unclaim(self, name: str) -> None:
        """Give up a claim whose staging failed; a name never accepted is forgotten."""
        self._claims[name] -= 1
        if self._claims[name] <= 0 and name not in self._kinds:
            del self._claims[name]
            parts = name.split("/")
            for i in range(1, len(parts)):
                self._dirs["/".join(parts[:i])] -= 1

    def accept(self, name: str, target: Optional[str] = None) -> None:
        """Close a claim on ``name``: it is now a file, or with ``target`` a link to that name."""
        self._claims[name] -= 1
        if self._claims[name] <= 0:
            del self._claims[name]
        if target is None:
            self._kinds[name] = "file"
            self._links.pop(name, None)
        else:
            self._kinds[name] = "link"
            self._links[name] = target

    def check_link(self, target: str, name: str) -> None:
        """Raise ``FileNotFoundError`` if ``target`` is unknown, ``ValueError`` if ``name -> target`` makes a cycle."""
        if target not in self._kinds:
            raise FileNotFoundError(f"cannot link {name!r} to {target!r}: no file of that name was uploaded")
        hop = target
        while self._kinds.get(hop) == "link":
            hop = self._links[hop]
            if hop == name:
                raise ValueError(f"linking {name!r} to {target!r} would make a cycle")

    def remove(self, name: str) -> list[str]:
        """Forget ``name`` and every link that reads as it (through other links too).

        Returns the names forgotten, ``name`` first, so that each removal can be queued in its
        own lane. Raises ``FileNotFoundError`` for a name never accepted.
        """
        if name not in self._kinds:
            raise FileNotFoundError(f"cannot remove {name!r}: no file or link of that name was uploaded")
        gone = [name]
        for hop in gone:  # grows while it is walked: links to links go too
            gone.extend(link for link, target in self._links.items() if target == hop and link not in gone)
        for dead in gone:
            del self._kinds[dead]
            self._links.pop(dead, None)
            parts = dead.split("/")
            for i in range(1, len(parts)):
                self._dirs["/".join(parts[:i])] -= 1
        return gone

    def being_staged(self) -> list[str]:
        """Names with a copy under way right now."""
        return [name for name, count in self._claims.items() if count > 0]
