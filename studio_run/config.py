"""Where studio keeps things and how it behaves: defaults, ``config.yaml`` and environment.

Precedence, highest first: command-line flags (``--store``), environment (``STUDIO_STORE``,
``STUDIOML_HOME``), the config file (``--config``, else ``$STUDIOML_HOME/config.yaml``), then the
defaults documented in ``config/default.yaml``. A missing config file is fine: the local store
needs nothing set up. Credentials are never read from here; each SDK finds its own.

StudioML's own ``config.yaml`` is read too (both tools look at ``~/.studioml/config.yaml``): its
keys that mean something here are translated (``studioml_keys``), the others give one warning
each, and credentials in it are never used. Every string value may use ``$VAR``, ``${VAR}`` and
``~``; relative paths are taken from the config file's folder, never from the current one.
"""

from __future__ import annotations

import difflib
import os
import pwd
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

from .errors import ConfigError
from .studioml_keys import STUDIO_KEYS, STUDIOML_KEYS, storage_options, translate_studioml

__all__ = ["Config", "load_config", "parse_duration", "parse_size", "resolve_store", "studio_home"]

_LONGEST = 100 * 365 * 86400.0  # seconds: a duration past this is a typo, and inf breaks timers
_LARGEST = 1 << 60  # bytes (1 EiB)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_VARIABLE = re.compile(r"\$(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\$))")
_STORE_OPTIONS = frozenset({
    "endpoint", "region", "max_attempts", "multipart_threshold", "max_concurrency",  # s3
    "project", "location", "chunk_size", "retry_deadline",  # gs
    "key_filename", "known_hosts", "timeout", "allow_agent", "look_for_keys",  # sftp
})


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
    stop_grace: float = 30.0
    source: str = "defaults"
    # Variables set for the script (StudioML's ``env:``), credentials already taken out.
    script_env: dict[str, str] = field(default_factory=dict)
    # StudioML's ``experimentLifetime``: the longest a run may take, in seconds (None: no limit).
    experiment_lifetime: Optional[float] = None
    # StudioML's ``verbose`` (debug, info, warn, error, crit), kept for whoever prints.
    verbose: Optional[str] = None
    # StudioML's ``queue``: the default queue of the job-queue commands.
    queue: Optional[str] = None
    # One line per config key that is accepted but not used (printed once by the CLI).
    warnings: tuple[str, ...] = ()

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
    """Seconds from ``90``, ``10s``, ``2m``, ``1.5h``, ``1d`` or ``500ms`` (``0s`` only with ``allow_zero``)."""
    def allowed(number: float) -> bool:
        return number >= 0 if allow_zero else number > 0

    if isinstance(value, (int, float)) and not isinstance(value, bool) and allowed(value) and value < _LONGEST:
        return float(value)
    match = _DURATION.match(str(value)) if isinstance(value, (str, int, float)) else None
    if not match or not allowed(float(match.group(1))):
        raise ConfigError(f"{what} {value!r} is not a duration; write e.g. 30s, 2m, 1h or 1d")
    number, unit = float(match.group(1)), match.group(2) or "s"
    seconds = number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if not seconds < _LONGEST:  # also catches inf from a number with hundreds of digits
        raise ConfigError(f"{what} {value!r} is too long; write at most 100 years, e.g. 30d")
    return seconds


def parse_size(value: object, what: str = "size") -> int:
    """Bytes from ``1048576``, ``100MiB``, ``2G`` or ``512KB`` (K/M/G/T are powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _LARGEST:
        return value
    match = _SIZE.match(str(value)) if isinstance(value, (str, float)) else None
    if not match:
        raise ConfigError(f"{what} {value!r} is not a size; write e.g. 100MiB or 2GiB")
    unit = (match.group(2) or "B").upper()[:1]
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit]
    size = float(match.group(1)) * 1024**power
    if not size < _LARGEST:  # inf, or more than any disk holds
        raise ConfigError(f"{what} {value!r} is too large; write at most 1 EiB")
    return int(size)


def resolve_store(url: str, base: Optional[str], what: str, env: Mapping[str, str] = os.environ) -> str:
    """A store URL with its path made absolute once: a relative path is taken from ``base``
    (the config file's folder), or refused when there is none; ``file://`` must name a path on
    this machine (``file://host/path`` would silently drop the host)."""
    if "://" not in url:
        path = _expand_home(url, what, env)
        if not os.path.isabs(path):
            if base is None:
                raise ConfigError(f"{what} {url!r} is a relative path; give an absolute one, so every "
                                  "command finds the same store wherever it runs")
            path = os.path.join(base, path)
        return os.path.normpath(path)
    if url.split("://", 1)[0].lower() == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{what} {url!r} names host {parts.netloc!r}: file:// reaches only this machine's disk; "
                "write file:///absolute/path (three slashes), or sftp://HOST/path for another machine"
            )
        if not parts.path.startswith("/"):
            raise ConfigError(f"{what} {url!r} has no absolute path; write file:///absolute/path")
        return "file://" + os.path.normpath(parts.path)
    return url


def load_config(
    config_path: Optional[str] = None,
    env: Mapping[str, str] = os.environ,
    store: Optional[str] = None,
) -> Config:
    """Build the settings for this command from flags, environment, file and defaults."""
    home = studio_home(env)
    path = _expand_home(config_path, "--config", env) if config_path else os.path.join(home, "config.yaml")
    path = os.path.abspath(path)
    data: dict[str, Any] = {}
    source = "defaults"
    if os.path.isdir(path):
        raise ConfigError(f"config file {path} is a folder; point --config at a YAML file (e.g. {path}/config.yaml)")
    if config_path and not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist; fix --config or create it")
    if os.path.isfile(path):
        data = _expand(_read_yaml(path), path, "", env)
        source = path
    base = os.path.dirname(path)
    studioml = translate_studioml(data, path)
    unknown = sorted(set(data) - STUDIO_KEYS - studioml.accepted)
    if unknown:
        raise ConfigError(_unknown(path, "key", unknown[0], STUDIO_KEYS, STUDIO_KEYS | STUDIOML_KEYS))
    url, options = _store_from(data, home, path)
    options.update(_store_options(data.get("store_options"), path))
    url = resolve_store(url, base, f"{path}: store", env)
    if store:
        url = resolve_store(store, os.getcwd(), "--store", env)
    elif env.get("STUDIO_STORE"):
        url = resolve_store(env["STUDIO_STORE"], None, "STUDIO_STORE", env)
    policy = data.get("upload_policy", "block")
    if policy not in ("block", "latest"):
        raise ConfigError(f"{path}: upload_policy must be 'block' or 'latest', not {policy!r}")
    fsync = data.get("fsync", True)
    if not isinstance(fsync, bool):
        raise ConfigError(f"{path}: fsync must be true or false, not {fsync!r}")
    blobcache = data.get("blobcache") or os.path.join(home, "blobcache")
    if not isinstance(blobcache, str):
        raise ConfigError(f"{path}: blobcache must be a folder path, not {blobcache!r}")
    return Config(
        home=home,
        store=url,
        store_options=options,
        capture_interval=parse_duration(data["capture_interval"], f"{path}: capture_interval")
        if "capture_interval" in data else studioml.capture_interval or 60.0,
        upload_wait=parse_duration(data.get("upload_wait", 600), f"{path}: upload_wait"),
        fsync=fsync,
        workspace_warn_size=parse_size(data.get("workspace_warn_size", 100 << 20), f"{path}: workspace_warn_size"),
        upload_queue_size=parse_size(data.get("upload_queue_size", 2 << 30), f"{path}: upload_queue_size"),
        upload_policy=policy,
        blobcache=resolve_store(blobcache, base, f"{path}: blobcache", env),
        stop_grace=parse_duration(data.get("stop_grace", 30), f"{path}: stop_grace"),
        source=source,
        script_env=studioml.script_env,
        experiment_lifetime=studioml.experiment_lifetime,
        verbose=studioml.verbose,
        queue=studioml.queue,
        warnings=studioml.warnings,
    )


def _unknown(path: str, what: str, name: str, known: frozenset[str], near: frozenset[str] = frozenset()) -> str:
    """"unknown key 'x'; did you mean 'y'?" (``near``: every name to suggest from, default ``known``)."""
    close = difflib.get_close_matches(str(name), sorted(near or known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{path}: unknown {what} {name!r}; {hint}known {what}s: {', '.join(sorted(known))}"


def _store_options(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: store_options must be a mapping (endpoint: ..., region: ...), not {value!r}")
    for name, option in value.items():
        if name == "password":
            raise ConfigError(f"{path}: store_options.password is a credential, which studio never reads from "
                              "config; use an SSH key (key_filename) or the ssh agent")
        if name not in _STORE_OPTIONS:
            raise ConfigError(_unknown(path, "store option", name, _STORE_OPTIONS))
        if isinstance(option, (dict, list)) or option is None:
            raise ConfigError(f"{path}: store_options.{name} must be a single value, not {option!r}")
    return dict(value)


def _expand_home(text: str, where: str, env: Mapping[str, str]) -> str:
    """``~`` and ``~user`` at the start of ``text``; an unknown user is an error, not a folder
    literally named ``~user``."""
    if not text.startswith("~"):
        return text
    name, sep, rest = text[1:].partition("/")
    if not name:
        home = env.get("HOME") or os.path.expanduser("~")
    else:
        try:
            home = pwd.getpwnam(name).pw_dir
        except KeyError:
            raise ConfigError(f"{where} {text!r}: no user named {name!r} on this machine") from None
    return home + (sep + rest if sep else "")


def _expand(value: Any, path: str, where: str, env: Mapping[str, str]) -> Any:
    """``$VAR``, ``${VAR}`` (``$$`` for a literal ``$``) and a leading ``~`` in every string."""
    if isinstance(value, dict):
        return {k: _expand(v, path, f"{where}.{k}" if where else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, path, f"{where}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def variable(match: re.Match[str]) -> str:
        if match.group(3):
            return "$"
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if name not in env:
            raise ConfigError(f"{path}: {where} uses ${name}, which is not set; set it in the environment "
                              "(or write $$ for a literal $)")
        return env[name]

    return _expand_home(_VARIABLE.sub(variable, value), f"{path}: {where}", env)


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def _store_from(data: dict[str, Any], home: str, path: str) -> tuple[str, dict[str, Any]]:
    """The store URL from ``store:`` or the original Studio's ``storage: {type: …}`` form."""
    if data.get("store"):
        if not isinstance(data["store"], str):
            raise ConfigError(f"{path}: store must be a path or URL, not {data['store']!r}")
        return data["store"], {}
    spec = data.get("storage")
    if not spec:
        return os.path.join(home, "store"), {}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError("storage: must be a mapping with a 'type' (s3, gcloud, sftp or local)")
    kind = str(spec["type"])
    prefix = str(spec.get("path", spec.get("prefix", ""))).strip("/")
    options = storage_options(spec, path)
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
        return str(spec.get("path") or os.path.join(home, "store")), options
    raise ConfigError(f"storage: unknown type {kind!r}; use s3, gcloud, sftp or local")
