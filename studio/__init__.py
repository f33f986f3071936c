"""``from studio import fs_tracker`` for scripts written against the original StudioML."""

import sys

import fs_tracker

sys.modules.setdefault("studio.fs_tracker", fs_tracker)

__all__ = ["fs_tracker"]
