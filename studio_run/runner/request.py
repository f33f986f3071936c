"""What ``studio run`` was asked to do, as one value.

The CLI builds it from flags; the runner checks and carries it out. It holds no click types and
no open resources, so it can be handed between steps and between machines: ``to_dict`` gives
plain JSON (never pickle), ``from_dict`` reads it back. Capture paths travel both as typed and
as resolved here, so a machine that executes the request can resolve them its own way
(``RunRequest.resolved``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from ..hyperparams import Value, as_args
from ..refs import ArtifactRef, CaptureSpec, ReuseSpec
from ..storage.urls import redact_url

__all__ = ["RunRequest"]

_FORMAT = 1  # bumped when a key changes meaning; from_dict refuses newer formats


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
    # One point of a ``-hp`` sweep: already in ``args`` as ``--NAME VALUE`` (``with_point``).
    hyperparameters: Mapping[str, Value] = field(default_factory=dict)
    max_duration: Optional[float] = None  # seconds the script may run before it is stopped (``timed-out``)
    lifetime: Optional[float] = None  # seconds a queued run may wait to start (``expired``; the queue enforces it)

    def with_point(self, point: Mapping[str, Value]) -> "RunRequest":
        """This request for one point of a sweep: ``--NAME VALUE`` appended to the script's
        arguments and the values kept, for the record and ``fs_tracker.get_hyperparameters``."""
        return replace(self, args=self.args + tuple(as_args(dict(point))), hyperparameters=dict(point))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: only strings, lists, dicts and None."""
        return {
            "format": _FORMAT,
            "script": self.script,
            "args": list(self.args),
            "module": self.module,
            "experiment": self.experiment,
            "captures": [_capture_to_dict(c) for c in self.captures],
            "captures_once": [_capture_to_dict(c) for c in self.captures_once],
            "reuses": [_reuse_to_dict(r) for r in self.reuses],
            "cwd": self.cwd,
            "hyperparameters": dict(self.hyperparameters),
            "max_duration": self.max_duration,
            "lifetime": self.lifetime,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunRequest":
        """Inverse of ``to_dict``; ValueError for a newer format or a missing key."""
        if int(data.get("format", _FORMAT)) > _FORMAT:
            raise ValueError(f"run request format {data['format']} is newer than this studio understands")
        try:
            return cls(
                script=data["script"],
                args=tuple(str(a) for a in data.get("args", ())),
                module=data.get("module"),
                experiment=data.get("experiment"),
                captures=tuple(_capture_from_dict(c) for c in data.get("captures", ())),
                captures_once=tuple(_capture_from_dict(c) for c in data.get("captures_once", ())),
                reuses=tuple(_reuse_from_dict(r) for r in data.get("reuses", ())),
                cwd=str(data["cwd"]),
                hyperparameters=_hyperparameters(data.get("hyperparameters") or {}),
                max_duration=_seconds(data.get("max_duration")),
                lifetime=_seconds(data.get("lifetime")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a run request: {exc}") from None

    def resolved(self, cwd: str) -> "RunRequest":
        """This request run from ``cwd`` on this machine: capture paths resolved again as typed."""
        return replace(
            self,
            cwd=cwd,
            captures=tuple(c.resolved(cwd) for c in self.captures),
            captures_once=tuple(c.resolved(cwd) for c in self.captures_once),
        )


def _hyperparameters(data: Any) -> dict[str, Value]:
    if not isinstance(data, dict) or not all(isinstance(v, (int, float, str)) and not isinstance(v, bool)
                                             for v in data.values()):
        raise TypeError("hyperparameters must map names to numbers or words")
    return {str(k): v for k, v in data.items()}


def _seconds(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise TypeError(f"a duration must be a positive number of seconds, not {value!r}")
    return float(value)


def _capture_to_dict(spec: CaptureSpec) -> dict[str, str]:
    if spec.is_url:  # fetched by ``prepare`` where it was typed: what travels needs no password or signature
        return {"given": redact_url(spec.path), "path": redact_url(spec.path), "tag": spec.tag}
    return {"given": spec.given or spec.path, "path": spec.path, "tag": spec.tag}


def _capture_from_dict(data: Mapping[str, Any]) -> CaptureSpec:
    return CaptureSpec(str(data["path"]), str(data["tag"]), given=str(data.get("given") or data["path"]))


def _reuse_to_dict(spec: ReuseSpec) -> dict[str, Optional[str]]:
    ref = spec.ref
    return {"experiment": ref.experiment, "tag": ref.tag, "version": ref.version, "alias": spec.alias}


def _reuse_from_dict(data: Mapping[str, Any]) -> ReuseSpec:
    version = data.get("version")
    ref = ArtifactRef(str(data["experiment"]), str(data["tag"]), None if version is None else str(version))
    return ReuseSpec(ref, str(data["alias"]))
