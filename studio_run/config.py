"""Where studio keeps things and how it behaves: defaults, ``config.yaml`` and environment.

Precedence, highest first: command-line flags (``--store``), environment (``STUDIO_STORE``,
``STUDIOML_HOME``), the config file (``--config``, else ``$STUDIOML_HOME/config.yaml``), then the
defaults documented in ``config/default.yaml``. A missing config file is fine: the local store
needs nothing set up. Credentials are never read from here; each SDK finds its own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from .errors import ConfigError

__all__ = ["Config", "load_config", "parse_duration", "parse_size", "studio_home"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_KNOWN_KEYS = {
    "store", "storage", "store_options", "capture_interval", "upload_wait", "fsync",
    "workspace_warn_size", "upload_queue_size", "upload_policy", "blobcache",
}


def studio_home(env: Mapping[str, str] = os.environ) -> str:
    """``$STUDIOML_HOME`` or ``~/.studioml``: config, local store, blob cache, stat cache."""
    return os.path.abspath(os.path.expanduser(env.get("STUDIOML_HOME") or "~/.studioml"))


@dataclass(frozen=True)
class Config:
    """Settings in force for one command."""

    home: str
    store: str
    store_options: dict[str, Any] = field(default_factory=dict)
    capture_interval: float = 60.0
    upload_wait: float = 600.0
    fsync: bool = True
    workspace_warn_size: int = 100 << 20
    upload_queue_size: int = 2 << 30
    upload_policy: str = "block"
    blobcache: str = ""
    source: str = "defaults"

    @property
    def statcache_path(self) -> str:
        """The SQLite stat cache shared by every run on this machine."""
        return os.path.join(self.home, "statcache.sqlite")

    @property
    def runs_dir(self) -> str:
        """Where each run's own folders (output, modeldir, tb, hand-off) live."""
        return os.path.join(self.home, "runs")

    def with_store(self, url: Optional[str]) -> "Config":
        """This config with the store replaced (``--store``)."""
        return replace(self, store=url) if url else self


def parse_duration(value: object, what: str = "duration", allow_zero: bool = False) -> float:
    """Seconds from ``90``, ``10s``, ``2m``, ``1.5h`` or ``500ms`` (``0s`` only with ``allow_zero``)."""
    def allowed(number: float) -> bool:
        return number >= 0 if allow_zero else number > 0

    if isinstance(value, (int, float)) and not isinstance(value, bool) and allowed(value):
        return float(value)
    match = _DURATION.match(str(value))
    if not match or not allowed(float(match.group(1))):
        raise ConfigError(f"{what} {value!r} is not a duration; write e.g. 30s, 2m or 1h")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def parse_size(value: object, what: str = "size") -> int:
    """Bytes from ``1048576``, ``100MiB``, ``2G`` or ``512KB`` (K/M/G/T are powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ConfigError(f"{what} {value!r} is not a size; write e.g. 100MiB or 2GiB")
    unit = (match.group(2) or "B").upper()[:1]
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit]
    return int(float(match.group(1)) * 1024**power)


def load_config(
    config_path: Optional[str] = None,
    env: Mapping[str, str] = os.environ,
    store: Optional[str] = None,
) -> Config:
    """Build the settings for this command from flags, environment, file and defaults."""
    home = studio_home(env)
    path = os.path.expanduser(config_path) if config_path else os.path.join(home, "config.yaml")
    data: dict[str, Any] = {}
    source = "defaults"
    if config_path and not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist; fix --config or create it")
    if os.path.isfile(path):
        data = _read_yaml(path)
        source = path
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; known keys are {', '.join(sorted(_KNOWN_KEYS))}")
    url, options = _store_from(data, home)
    options.update(data.get("store_options") or {})
    url = store or env.get("STUDIO_STORE") or url
    policy = str(data.get("upload_policy", "block"))
    if policy not in ("block", "latest"):
        raise ConfigError(f"{path}: upload_policy must be 'block' or 'latest', not {policy!r}")
    return Config(
        home=home,
        store=url,
        store_options=options,
        capture_interval=parse_duration(data.get("capture_interval", 60), "capture_interval"),
        upload_wait=parse_duration(data.get("upload_wait", 600), "upload_wait"),
        fsync=bool(data.get("fsync", True)),
        workspace_warn_size=parse_size(data.get("workspace_warn_size", 100 << 20), "workspace_warn_size"),
        upload_queue_size=parse_size(data.get("upload_queue_size", 2 << 30), "upload_queue_size"),
        upload_policy=policy,
        blobcache=os.path.expanduser(str(data.get("blobcache") or os.path.join(home, "blobcache"))),
        source=source,
    )


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def _store_from(data: dict[str, Any], home: str) -> tuple[str, dict[str, Any]]:
    """The store URL from ``store:`` or the original Studio's ``storage: {type: …}`` form."""
    if data.get("store"):
        return str(data["store"]), {}
    spec = data.get("storage")
    if not spec:
        return os.path.join(home, "store"), {}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError("storage: must be a mapping with a 'type' (s3, gcloud, sftp or local)")
    kind = str(spec["type"])
    prefix = str(spec.get("path", spec.get("prefix", ""))).strip("/")
    options = {k: spec[k] for k in ("endpoint", "region", "project", "key_filename", "known_hosts") if k in spec}
    if kind in ("s3", "gcloud", "gcs", "gs"):
        if not spec.get("bucket"):
            raise ConfigError(f"storage: type {kind} needs a 'bucket'")
        scheme = "s3" if kind == "s3" else "gs"
        return f"{scheme}://{spec['bucket']}" + (f"/{prefix}" if prefix else ""), options
    if kind == "sftp":
        if not spec.get("host"):
            raise ConfigError("storage: type sftp needs a 'host' (and optionally user, port, path)")
        user = f"{spec['user']}@" if spec.get("user") else ""
        port = f":{spec['port']}" if spec.get("port") else ""
        return f"sftp://{user}{spec['host']}{port}/{prefix}", options
    if kind == "local":
        return os.path.expanduser(str(spec.get("path") or os.path.join(home, "store"))), options
    raise ConfigError(f"storage: unknown type {kind!r}; use s3, gcloud, sftp or local")
