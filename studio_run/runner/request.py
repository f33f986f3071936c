"""What ``studio run`` was asked to do, as one value.

The CLI builds it from flags; the runner checks and carries it out. It holds no click types and
no open resources, so it can be handed between steps (and, later, between machines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from ..refs import CaptureSpec, ReuseSpec

__all__ = ["RunRequest"]


@dataclass(frozen=True)
class RunRequest:
    """Everything ``studio run`` was asked to do."""

    script: Optional[str]
    args: tuple[str, ...] = ()
    module: Optional[str] = None
    experiment: Optional[str] = None
    captures: tuple[CaptureSpec, ...] = ()
    captures_once: tuple[CaptureSpec, ...] = ()
    reuses: tuple[ReuseSpec, ...] = ()
    cwd: str = field(default_factory=os.getcwd)
