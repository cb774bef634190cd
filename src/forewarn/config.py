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
    secret: str = "change-me"
    timeout_s: float = 5.0
    # webhook-style gateways by channel name, e.g. {"sms": "https://sms.example/send", "chat": "..."}
    gateways: dict[str, str] = Field(default_factory=dict)


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


class Settings(BaseSettings):
    """All forewarn settings. Nested fields use ``__`` in env vars: ``FOREWARN_SMTP__PORT=2525``."""

    model_config = SettingsConfigDict(env_prefix="FOREWARN_", env_nested_delimiter="__", extra="ignore")

    home: Path = Path(".forewarn")
    database_url: str = ""
    signals_path: Path = Path()
    # what ingestion does with a customer id the state store does not know
    unknown_customers: Literal["reject", "create"] = "create"
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
    # signs unsubscribe links and webhook payloads
    secret_key: str = "forewarn-dev-secret-change-me"
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)

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
