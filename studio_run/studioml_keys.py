"""StudioML's config keys, read the way studio can use them.

Both tools read ``~/.studioml/config.yaml``, so a StudioML user's file must work unchanged: the
keys that mean something here are translated (``saveWorkspaceFrequency`` -> capture interval,
``env`` -> the script's variables, ``experimentLifetime``, ``verbose``, ``queue``; ``storage`` is
read by ``config``), the keys of StudioML features studio does not have give one warning line
each, and credentials (``storage.credentials``, AWS keys in ``env``) are never used: the warning
says where they belong. Kept apart from ``config`` so the list of foreign keys is read in one
place. Durations given as a bare number are minutes, as StudioML read them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import ConfigError

__all__ = ["CREDENTIALS_HINT", "STUDIOML_KEYS", "STUDIO_KEYS", "StudioMLKeys", "storage_options",
           "translate_studioml"]

STUDIO_KEYS = frozenset({
    "store", "storage", "store_options", "capture_interval", "upload_wait", "fsync",
    "workspace_warn_size", "upload_queue_size", "upload_policy", "blobcache", "stop_grace",
})
"""studio's own top-level keys (``storage`` is StudioML's form of ``store``, read by ``config``)."""

_MAPPED = frozenset({"saveWorkspaceFrequency", "env", "experimentLifetime", "verbose", "queue"})
_IGNORED = {
    "database": "experiment database (studio keeps records in the store)",
    "cloud": "cloud worker settings",
    "resources_needed": "worker resources",
    "optimizer": "hyper-parameter optimizer",
    "server": "server settings",
    "sleep_time": "worker polling interval",
    "worker_timeout": "worker timeout",
    "cloud_timeout": "cloud timeout",
    "cpus": "worker resources", "gpus": "worker resources", "ram": "worker resources",
    "hdd": "worker resources", "gpuMem": "worker resources",
    "log": "log settings",
    "pip": "extra pip packages for workers",
    "use_spot": "spot-instance setting", "spot_price": "spot-instance setting",
    "ssh_keypair": "cloud worker key pair",
    "completion_service": "completion service",
    "studio_ml_user": "StudioML account",
}
STUDIOML_KEYS = frozenset(_MAPPED | set(_IGNORED))
"""Every StudioML top-level key studio accepts (mapped or warned about)."""

_STORAGE_USED = frozenset({"type", "bucket", "path", "prefix", "host", "user", "port", "endpoint", "region",
                           "project", "location", "key_filename", "known_hosts"})
_STORAGE_OPTIONS = ("endpoint", "region", "project", "location", "key_filename", "known_hosts")
_STORAGE_IGNORED = frozenset({"authentication", "compression", "serverUrl", "use_email_auth", "guest",
                              "projectId", "authDomain", "databaseURL", "storageBucket", "messagingSenderId"})
_CREDENTIAL_NAME = re.compile(r"credential|secret|token|passw|access_?key|api_?key|private_?key", re.IGNORECASE)
_VERBOSE = ("debug", "info", "warn", "warning", "error", "crit", "critical")

CREDENTIALS_HINT = (
    "AWS keys belong in ~/.aws/credentials or AWS_* environment variables, Google's in "
    "`gcloud auth application-default login` or GOOGLE_APPLICATION_CREDENTIALS, SFTP logins in an SSH key or agent"
)


@dataclass(frozen=True)
class StudioMLKeys:
    """What a config's StudioML keys mean for studio."""

    accepted: frozenset[str] = frozenset()
    capture_interval: Optional[float] = None
    script_env: dict[str, str] = field(default_factory=dict)
    experiment_lifetime: Optional[float] = None
    verbose: Optional[str] = None
    queue: Optional[str] = None
    warnings: tuple[str, ...] = ()


def translate_studioml(data: dict[str, Any], path: str) -> StudioMLKeys:
    """Read the StudioML keys of ``data`` (a parsed, expanded config file)."""
    present = set(data) & STUDIOML_KEYS
    warnings: list[str] = []
    for key in sorted(present & set(_IGNORED)):
        held = "; it holds credentials, never used: " + CREDENTIALS_HINT if _has_credentials(data[key]) else ""
        warnings.append(f"{path}: {key}: StudioML's {_IGNORED[key]} does not apply to studio; ignored{held}")
    spec = data.get("storage")
    if isinstance(spec, dict):
        for key in sorted(k for k in spec if k not in _STORAGE_USED):
            if key in _STORAGE_IGNORED or _CREDENTIAL_NAME.search(str(key)):
                continue
            close = difflib.get_close_matches(str(key), sorted(_STORAGE_USED), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{path}: unknown key storage.{key}; {hint}known: {', '.join(sorted(_STORAGE_USED))}")
        for key in sorted(k for k in spec if k not in _STORAGE_USED):
            if _CREDENTIAL_NAME.search(str(key)):
                warnings.append(f"{path}: storage.{key} holds credentials, which studio never reads from its "
                                f"config; {CREDENTIALS_HINT}")
            else:
                warnings.append(f"{path}: storage.{key} is a StudioML database setting; ignored")
    script_env = _script_env(data.get("env"), path, warnings)
    verbose = data.get("verbose")
    if verbose is not None and (not isinstance(verbose, str) or verbose.lower() not in _VERBOSE):
        raise ConfigError(f"{path}: verbose must be one of {', '.join(_VERBOSE)}, not {verbose!r}")
    queue = data.get("queue")
    if queue is not None and not isinstance(queue, str):
        raise ConfigError(f"{path}: queue must be a queue name, not {queue!r}")
    return StudioMLKeys(
        accepted=frozenset(present),
        capture_interval=_minutes(data.get("saveWorkspaceFrequency"), f"{path}: saveWorkspaceFrequency"),
        script_env=script_env,
        experiment_lifetime=_minutes(data.get("experimentLifetime"), f"{path}: experimentLifetime"),
        verbose=verbose.lower() if isinstance(verbose, str) else None,
        queue=queue,
        warnings=tuple(warnings),
    )


def storage_options(spec: dict[str, Any], path: str) -> dict[str, Any]:
    """The backend settings inside a StudioML ``storage:`` mapping (never its credentials)."""
    options = {k: spec[k] for k in _STORAGE_OPTIONS if k in spec}
    for name, value in options.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"{path}: storage.{name} must be a single value, not {value!r}")
    return options


def _script_env(value: Any, path: str, warnings: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: env must be a mapping of variable names to values, not {value!r}")
    env: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ConfigError(f"{path}: env: {name!r} is not a variable name")
        if isinstance(item, (dict, list)):
            raise ConfigError(f"{path}: env.{name} must be a single value, not {item!r}")
        if _CREDENTIAL_NAME.search(name):
            warnings.append(f"{path}: env.{name} is a credential, which studio never reads from its config "
                            f"(nor passes on); {CREDENTIALS_HINT}")
            continue
        env[name] = "" if item is None else str(item).lower() if isinstance(item, bool) else str(item)
    return env


def _minutes(value: Any, what: str) -> Optional[float]:
    """A StudioML duration: ``10s``, ``2m``, ``1h``, or a bare number of minutes."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value) * 60
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", value) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{what} {value!r} is not a duration; write e.g. 30s, 2m or 1h")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "m"]


def _has_credentials(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_CREDENTIAL_NAME.search(str(k)) or _has_credentials(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_credentials(v) for v in value)
    return False
