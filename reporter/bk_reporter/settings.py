"""The reporter's settings: defaults, then a TOML file, then the environment, then flags.

Every setting has a key (used in the TOML file) and an environment variable
`BK_REPORTER_<KEY IN CAPITALS>`. Command-line flags win over both.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ENV_PREFIX = "BK_REPORTER_"
CONFIG_ENV = "BK_REPORTER_CONFIG"
SECRET_SETTINGS = ("page_basic_password", "page_bearer_token")
MAX_VERIFY_PROCESSES = 4


class SettingsError(ValueError):
    """A setting has an unusable value; the message names it."""


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/bk-reporter")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "bk-reporter"


@dataclass(frozen=True)
class Settings:
    """Everything the reporter's commands need to know about their environment."""

    data_dir: Path = field(default_factory=default_data_dir)
    # The application's connection (INSERT and SELECT on events). None: the embedded cluster.
    database_url: str | None = None
    # The schema owner's connection, for `migrate` and `hosts`; defaults to database_url.
    owner_database_url: str | None = None
    app_role: str = "bk_reporter_app"
    reader_role: str | None = None
    listen: str = "127.0.0.1:8080"
    # A second listener serving only ingest and /healthz, for hosts to reach while the pages
    # stay on a loopback `listen` (behind a proxy) or behind credentials. None: only `listen`.
    ingest_listen: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    forwarded_allow_ips: str | None = None
    max_manifest_bytes: int = 256 * 1024
    max_batch_bytes: int = 8 * 1024 * 1024
    max_batch_items: int = 5000
    future_tolerance_seconds: int = 300
    # Per client address (ratelimit.py): requests to the ingest endpoints, whatever a batch holds.
    # A burst of ingest_burst at once, refilled at ingest_requests_per_minute; beyond it, 429.
    ingest_requests_per_minute: int = 1200
    ingest_burst: int = 600
    pool_size: int = 16
    # Slow clients: connections served at once (more get 503), and how long a request's headers
    # and its whole body may take to arrive (then the connection is closed, or 408 for a body).
    max_connections: int = 1000
    header_timeout_seconds: int = 10
    body_timeout_seconds: int = 60
    # Worker processes that verify large batches (1: verify in the server process).
    verify_processes: int = field(default_factory=lambda: min(os.cpu_count() or 1, MAX_VERIFY_PROCESSES))
    log_level: str = "info"
    # Optional protection of the read-only pages, /metrics and the read API (never of ingest).
    page_basic_user: str | None = None
    page_basic_password: str | None = None
    page_bearer_token: str | None = None
    # A listener on a non-loopback address needs page credentials unless this says, explicitly,
    # that the fleet's state may be read by anyone who reaches it.
    public_reads: bool = False

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def listen_host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return _split_listen(self.listen)[1]

    @property
    def ingest_listen_port(self) -> int | None:
        return None if self.ingest_listen is None else _split_listen(self.ingest_listen)[1]

    def public_view(self) -> dict[str, Any]:
        """The settings as loggable values: passwords (in URLs too) and tokens are masked."""
        view = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("database_url", "owner_database_url"):
            view[key] = mask_url(view[key])
        for key in SECRET_SETTINGS:
            view[key] = None if view[key] is None else "***"
        return {key: str(value) if isinstance(value, Path) else value for key, value in view.items()}


def mask_url(url: str | None) -> str | None:
    """The URL with any password replaced by `***`."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def _field_types() -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(Settings)}


def _convert(key: str, value: Any) -> Any:
    kind = _field_types()[key]
    if kind == "bool":
        return _boolean(key, value)
    if value is None or (isinstance(value, str) and value == "" and "None" in kind):
        return None
    if kind.startswith("int"):
        try:
            number = int(value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{key} must be an integer, got {value!r}") from exc
        if number <= 0:
            raise SettingsError(f"{key} must be positive, got {number}")
        return number
    if not isinstance(value, str):
        raise SettingsError(f"{key} must be a string, got {value!r}")
    return Path(value) if kind.startswith("Path") else value


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise SettingsError(f"{key} must be true or false, got {value!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_page_credentials(settings: Settings) -> None:
    if (settings.page_basic_user is None) != (settings.page_basic_password is None):
        raise SettingsError(
            "page_basic_user and page_basic_password must be given together: "
            "set both to protect the pages with basic auth, or neither"
        )
    protected = settings.page_basic_user is not None or settings.page_bearer_token is not None
    if not protected and not settings.public_reads and not _is_loopback(settings.listen_host):
        raise SettingsError(
            f"listen {settings.listen!r} is not a loopback address and the pages have no credentials: "
            "set page_basic_user and page_basic_password (or page_bearer_token), put the reporter behind "
            "a proxy on 127.0.0.1, or set public_reads = true if anyone who reaches it may read the fleet's state"
        )


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            document = tomllib.load(stream)
    except OSError as exc:
        raise SettingsError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"configuration file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - set(_field_types()))
    if unknown:
        raise SettingsError(f"configuration file {path} has unknown keys: {', '.join(unknown)}")
    return {key: _convert(key, value) for key, value in document.items()}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for key in _field_types():
        name = ENV_PREFIX + key.upper()
        if name in environ:
            values[key] = _convert(key, environ[name])
    return values


def load(
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from defaults < config file < environment < flags (flags set to None are ignored)."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = Path(environ[CONFIG_ENV])
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_from_file(config_file))
    values.update(_from_env(environ))
    values.update({key: _convert(key, value) for key, value in (flags or {}).items() if value is not None})
    settings = Settings(**values)
    _split_listen(settings.listen)
    if settings.ingest_listen is not None:
        ingest_port = _split_listen(settings.ingest_listen)[1]
        if ingest_port == settings.listen_port:
            raise SettingsError(f"ingest_listen {settings.ingest_listen!r} needs a port other than listen's")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SettingsError("tls_cert and tls_key must be given together")
    _check_page_credentials(settings)
    return settings
