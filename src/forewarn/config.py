"""Settings: environment variables (``FOREWARN_*``) over an optional TOML config file over defaults.

The embedded default keeps everything under one home folder (``./.forewarn``): a SQLite state store and a
DuckDB signal store. Production points ``FOREWARN_DATABASE_URL`` at PostgreSQL.

>>> s = Settings(home="/tmp/fw-doc")
>>> s.database_url
'sqlite:////tmp/fw-doc/state.db'
>>> s.signals_path.name
'signals.duckdb'
>>> Settings(home="/tmp/fw-doc", cycle_every="15m").cycle_every
datetime.timedelta(seconds=900)
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from forewarn.timeutil import parse_duration

# "15m", "1h", a number of seconds; empty or unset means off
OptionalDuration = Annotated[
    timedelta | None, BeforeValidator(lambda v: None if v in (None, "") else parse_duration(v))
]


class SmtpSettings(BaseSettings):
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    sender: str = "forewarn@localhost"
    timeout_s: float = 10.0


class WebhookSettings(BaseSettings):
    url: str | None = None
    # signs outbound webhooks; unset: the secret generated in the state store (forewarn.state.secrets)
    secret: str = "change-me"
    previous_secret: str | None = None  # still accepted while set (rotation of a configured secret)
    timeout_s: float = 5.0
    # webhook-style gateways by channel name, e.g. {"sms": "https://sms.example/send", "chat": "..."}
    gateways: dict[str, str] = Field(default_factory=dict)


# topics a customer must have opted in to (no consent row is a no); the one default, read by
# forewarn.deliver.consent for the guardrails, the worker, auto-replies and incident notices alike
EXPLICIT_CONSENT_TOPICS: tuple[str, ...] = ("offer", "marketing")


class DeliverySettings(BaseSettings):
    max_attempts: int = 6
    backoff_base_s: float = 2.0
    backoff_max_s: float = 600.0
    batch_size: int = 200
    # messages per second per channel; 0 means unlimited
    rate_limits: dict[str, float] = Field(default_factory=dict)
    critical_overrides_quiet_hours: bool = True
    quiet_hours_start: int = 21
    quiet_hours_end: int = 8
    explicit_consent_topics: list[str] = Field(default_factory=lambda: list(EXPLICIT_CONSENT_TOPICS))


class ApiSettings(BaseSettings):
    """Limits of the REST API (``forewarn.api.auth``, ``forewarn.api.limits``)."""

    # requests per second per token (a token's own ``rate_limit`` overrides it); 0: unlimited
    rate_limit: float = 100.0
    # requests a token may make at once above its rate (the bucket's size)
    rate_burst: float = 200.0
    # largest request body accepted (413 above it): a batch of 1,000 signal events is about 200 kB
    max_body_bytes: int = 16 * 1024 * 1024
    # a client that sends no part of its body for this long gets a 408
    body_timeout_s: float = 30.0
    # how long a checked token is trusted before it is read again (a revocation elsewhere takes effect then)
    token_cache_s: float = 5.0
    # a token's last-used time is written at most this often
    last_used_every_s: float = 60.0


class AuthSettings(BaseSettings):
    """Dashboard sign-in: local users (``forewarn users``), or a reverse proxy's trusted header where set."""

    # a signed-in session lasts this long (server-side: expired or signed-out sessions are refused)
    session_ttl: OptionalDuration = timedelta(hours=12)
    # send the session cookie only over https; when unset, it is Secure when the request came over https
    secure_cookies: bool | None = None
    # failed sign-ins allowed per user name, and per client address, in ``failure_window``; then 429
    max_failures_per_user: int = 5
    max_failures_per_address: int = 20
    failure_window: OptionalDuration = timedelta(minutes=15)
    # a reverse proxy that authenticates people and names them in this header (e.g. "X-Forwarded-User");
    # believed only from ``trusted_proxies`` (addresses or networks); the user's role is their local user's,
    # else ``trusted_header_role``
    trusted_header: str | None = None
    trusted_proxies: list[str] = Field(default_factory=list)
    trusted_header_role: Literal["viewer", "agent", "admin"] = "viewer"


class Settings(BaseSettings):
    """All forewarn settings. Nested fields use ``__`` in env vars: ``FOREWARN_SMTP__PORT=2525``."""

    model_config = SettingsConfigDict(env_prefix="FOREWARN_", env_nested_delimiter="__", extra="ignore")

    home: Path = Path(".forewarn")
    database_url: str = ""
    signals_path: Path = Path()
    # what ingestion does with a customer id the state store does not know (a typo must not become a customer)
    unknown_customers: Literal["reject", "create"] = "reject"
    # the public base URL used in links (unsubscribe, status page)
    public_url: str = "http://127.0.0.1:8000"
    # uptime monitors (YAML or TOML) that `forewarn serve` runs in the background; none when unset
    monitors_file: Path | None = None
    # the playbooks (a YAML file or a folder of them) the live loop decides with (default: HOME/playbooks)
    playbooks_path: Path = Path()
    # how often `forewarn serve` runs the live loop (detect, incidents, link, decide, digests); off when unset
    cycle_every: OptionalDuration = None
    # a live pass does not judge customers when a metered feed's newest reading is older than this: absence
    # (went silent, stopped using) would fire for everyone whose data simply has not arrived; unset: no check
    max_signal_lag: OptionalDuration = timedelta(days=2)
    # a ticket's case closes after this long without activity (no contact, no status change): its topic is no
    # longer suppressed; live guardrails and backtests both read it (forewarn.state.tickets)
    ticket_idle_close: Annotated[timedelta, BeforeValidator(parse_duration)] = timedelta(days=7)
    # signs unsubscribe links; unset: the secret generated in the state store (forewarn.state.secrets)
    secret_key: str = "forewarn-dev-secret-change-me"
    previous_secret_key: str | None = None  # still accepted while set (rotation of a configured secret)
    api: ApiSettings = Field(default_factory=ApiSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'state.db'}"
        if self.signals_path == Path():
            self.signals_path = self.home / "signals.duckdb"
        if self.playbooks_path == Path():
            self.playbooks_path = self.home / "playbooks"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFileSource(settings_cls))


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads ``FOREWARN_CONFIG`` (or ``./forewarn.toml`` when present)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("FOREWARN_CONFIG") or (
            "forewarn.toml" if Path("forewarn.toml").exists() else ""
        )
        if not path:
            return {}
        with open(path, "rb") as f:
            return tomllib.load(f)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
