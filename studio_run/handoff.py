"""The runner's hand-off to the script: a small JSON file named by ``STUDIO_HANDOFF``.

It is the only thing ``fs_tracker`` reads, so a script behaves the same whether the runner is
local or a worker on another machine: either way it finds local paths for every tag here. It
holds paths and names, never credentials. Reading it imports nothing heavy.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

__all__ = ["ENV_VAR", "Handoff", "read_handoff", "write_handoff"]

ENV_VAR = "STUDIO_HANDOFF"


@dataclass(frozen=True)
class Handoff:
    """What a running script may know about its run."""

    experiment: str
    run_id: str
    version: int
    store: str
    run_dir: str
    artifacts: dict[str, str] = field(default_factory=dict)
    upload: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # this run's ``-hp`` values

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Handoff":
        """Inverse of ``to_dict``, ignoring unknown keys."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def write_handoff(path: str, handoff: Handoff) -> None:
    """Write the hand-off atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(handoff.to_dict(), f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_handoff(env: Mapping[str, str] = os.environ) -> Optional[Handoff]:
    """The hand-off of the run this process belongs to, or None outside ``studio run``."""
    path = env.get(ENV_VAR)
    if not path:
        return None
    with open(path) as f:
        return Handoff.from_dict(json.load(f))
