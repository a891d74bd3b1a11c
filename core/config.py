"""Configuration from ``SMM_*`` environment variables.

Every setting has a documented default (README's configuration table) except secrets that must be
shared by several processes; ``smm dev`` generates those once under ``./var``. Secrets are
``SecretStr`` so they never appear in a repr or a log line.
"""

from __future__ import annotations

import ipaddress
import logging

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMM_", extra="ignore")

    # Where things listen and connect.
    database_url: str = Field(default="", description="PostgreSQL URL; empty means embedded (smm dev)")
    nats_url: str = Field(default="", description="NATS URL; empty means embedded (smm dev)")
    grpc_addr: str = "127.0.0.1:50051"
    edge_addr: str = "127.0.0.1:8080"
    # Where the edge and workers reach the gRPC server; defaults to grpc_addr.
    grpc_target: str = ""

    # Secrets shared by the processes of one deployment.
    internal_token: SecretStr = SecretStr("")
    page_token_secret: SecretStr = SecretStr("")
    # AES-256-GCM keys for secrets at rest, "id:base64key[,id:base64key...]"; the first encrypts.
    encryption_keys: SecretStr = SecretStr("")

    # NATS: a prefix for every subject, stream and durable name, so several deployments (or test
    # runs) can share one NATS server without seeing each other's events.
    nats_namespace: str = ""
    relay_batch: int = Field(default=200, ge=1)
    relay_poll_s: float = Field(default=1.0, gt=0)

    # Database pool.
    db_pool_min: int = Field(default=2, ge=0)
    db_pool_max: int = Field(default=16, ge=1)
    db_pool_timeout_s: float = Field(default=5.0, gt=0)

    # Accounts.
    session_ttl_h: int = Field(default=720, ge=1)
    api_key_rotation_grace_h: int = Field(default=24, ge=0)
    # How often each server copy adds its in-memory API key call counts to the database.
    api_key_usage_flush_s: float = Field(default=10.0, gt=0)
    # How long each server copy may keep a live API key in memory before asking PostgreSQL again
    # (0: every call asks). The copy that revokes a key, or changes its user, forgets it at once;
    # other copies within this many seconds (docs/DECISIONS.md).
    api_key_cache_s: float = Field(default=5.0, ge=0)
    # An unverified address blocks nothing unless this is on (then only the account itself works).
    require_email_verification: bool = False
    # Staff (support, admin) must turn on two-factor sign-in before they can do anything else.
    require_staff_totp: bool = False
    verify_email_ttl_s: int = Field(default=172_800, ge=1)
    reset_password_ttl_s: int = Field(default=3_600, ge=1)
    change_email_ttl_s: int = Field(default=86_400, ge=1)
    # Where the links in emails point: the web front end's base URL.
    web_url: str = "http://127.0.0.1:8080"

    # Email.
    # "eml" (files under mail_dir), "smtp" or "resend".
    mail_transport: str = "eml"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    # A CA bundle (PEM) to trust for the relay's certificate instead of the system's (a private CA).
    smtp_ca_file: str = ""
    resend_api_key: SecretStr = SecretStr("")
    resend_api_url: str = "https://api.resend.com"
    # Svix secret of Resend's webhooks ("whsec_..."); empty turns the webhook off.
    resend_webhook_secret: SecretStr = SecretStr("")
    # The colour of the email layout, and the public URL of this API (unsubscribe links).
    brand_color: str = "#4f46e5"
    api_url: str = "http://127.0.0.1:8080"
    # Default low-balance threshold for the email ("0" = off); users set their own.
    low_balance_threshold: str = "5.00"
    panel_name: str = "smm"
    mail_from: str = "smm <no-reply@localhost>"
    # The local transport's folder; empty means <var_dir>/mail.
    mail_dir: str = ""

    # Text messages (SMS).
    # "file" (one text file per message under sms_dir) or "twilio".
    sms_transport: str = "file"
    # The local transport's folder; empty means <var_dir>/sms.
    sms_dir: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    # The sender: a number in E.164 ("+15550006666") or a Messaging Service SID ("MG...").
    twilio_from: str = ""
    twilio_api_url: str = "https://api.twilio.com"
    # Admins with a verified phone get staff alerts by text unless they turn it off.
    sms_admin_alerts: bool = True
    # Alerts that come in bursts (an order gone to review, a dead letter of one consumer) go out at
    # most once per this many seconds per kind and channel; the ones in between are held back and
    # counted in the next (server/notifications/quiet.py). 0 sends every one.
    admin_alert_interval_s: int = Field(default=600, ge=0, le=86_400)
    # Phone verification codes: how long one works, and how many wrong tries spend it.
    phone_code_ttl_minutes: int = Field(default=10, ge=1)
    phone_code_max_attempts: int = Field(default=5, ge=1)
    # A notification durable (email or text) created on a stream that already holds events (the
    # worker started for the first time after the others, a release that adds one) takes only the
    # events published within this many seconds before: nobody wants mail about last week's orders
    # or a reset link for a request made days ago. An existing durable is never moved by it.
    notify_start_window_s: float = Field(default=3600.0, ge=0)

    # Rate limits, per minute (shared by every copy through PostgreSQL). At least 1: a limit of 0
    # would refuse every call, a penalty threshold of 0 would tighten every address from its first call.
    rate_per_ip_per_min: int = Field(default=600, ge=1)
    rate_login_per_ip_per_min: int = Field(default=20, ge=1)
    rate_login_per_account_per_min: int = Field(default=10, ge=1)
    rate_per_user_per_min: int = Field(default=600, ge=1)
    # Resellers place orders in bulk: well above 100 orders a minute per key.
    rate_per_api_key_per_min: int = Field(default=1200, ge=1)
    rate_auth_failures_before_penalty: int = Field(default=20, ge=1)
    rate_reset_per_ip_per_min: int = Field(default=10, ge=1)
    rate_reset_per_account_per_min: int = Field(default=3, ge=1)
    # How often each server copy shares its per-IP, per-user and per-key counts with the others
    # (they count in memory in between; server/common/ratelimit.py).
    rate_sync_s: float = Field(default=0.5, gt=0)
    # Verification texts sent per minute, per account and per number.
    rate_sms_per_account_per_min: int = Field(default=2, ge=1)

    # Money.
    currency: str = "USD"

    # Orders.
    # Orders not finished, and refills still open, after this many hours raise an alert event
    # (once each).
    order_stuck_after_h: int = Field(default=24, ge=1)
    # The posts a subscription placed without `posts` (the protocol's "unlimited") is held for and
    # sent upstream with, so that the provider stops where the hold does; 0 refuses such orders.
    subscription_default_posts: int = Field(default=30, ge=0, le=10_000)
    # New orders one dispatch worker sends to providers at the same time (each provider's own
    # concurrency and rate limits still apply).
    dispatch_concurrency: int = Field(default=16, ge=1)

    # Providers.
    # A provider cost rise of more than this (percent) quarantines the service until staff accept it.
    sync_price_jump_percent: int = Field(default=20, ge=0)
    # The circuit opens after this many unknown outcomes in a row, and lets a probe out after the wait.
    provider_failure_threshold: int = Field(default=5, ge=1)
    provider_circuit_reset_s: float = Field(default=30.0, gt=0)
    # How long a server copy may trust what it last read of a provider (its settings, and a closed
    # circuit without failures) before reading again (0: every call reads). The copy that changes a
    # provider, or sees its circuit move, knows at once; others within this many seconds.
    provider_state_cache_s: float = Field(default=1.0, ge=0)

    # Retention (docs/DEPLOYMENT.md): the hourly purge jobs delete older operational rows in
    # batches of retention_batch rows, each batch its own transaction. Request ids outlive every
    # stream's redeliveries (7 days); message rows too (a redelivered event finds its message).
    retain_request_ids_days: int = Field(default=30, ge=8)
    # Provider exchanges (the per-order provider log staff read); an open order keeps its own.
    retain_provider_log_days: int = Field(default=90, ge=1)
    # Email and SMS delivery rows (what was sent to whom, bounces, the user's message list).
    retain_messages_days: int = Field(default=90, ge=8)
    retention_batch: int = Field(default=5000, ge=1, le=100_000)

    # The demo provider (`smm demo-provider`; `smm dev` starts it and adds it as a provider).
    # Empty: `smm dev` neither starts nor seeds it, and seeds a small catalog without a provider.
    demo_provider_addr: str = "127.0.0.1:8090"
    demo_provider_key: SecretStr = SecretStr("")
    # Seconds between two status steps of a demo order (Pending -> In progress -> ...).
    demo_provider_step_s: float = Field(default=5.0, gt=0)

    # Edge.
    trusted_proxies: str = ""
    # Browser origins allowed to call the API (comma-separated, exact, e.g. https://panel.example).
    cors_origins: str = ""
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    rpc_timeout_s: float = Field(default=10.0, gt=0)
    # Sanic's RESPONSE_TIMEOUT: a request whose answer is not ready within this many seconds is cut
    # off (504 on the JSON API; on the reseller endpoint, whose `add` fits its attempts in a budget
    # that ends 1 s before it, an error saying the outcome is unknown). Keep a proxy's read
    # timeout above it.
    response_timeout_s: float = Field(default=60.0, gt=0)
    # Serve the reseller endpoint at /api/v2 as well, for panels migrating from elsewhere.
    reseller_v2_alias: bool = False
    # Deadline of each attempt of the reseller `add` (CreateOrder); an attempt that ends without an
    # answer is tried again under the same idempotency key (edge/reseller.py) while the budget set
    # by response_timeout_s lasts.
    reseller_add_timeout_s: float = Field(default=30.0, gt=0)

    # Observability.
    log_level: str = "INFO"
    service_name: str = "smm"

    # Where local state (embedded servers' data, mail, ports) lives.
    var_dir: str = "var"

    @field_validator("trusted_proxies")
    @classmethod
    def _cidr_list(cls, value: str) -> str:
        for part in (p.strip() for p in value.split(",")):
            if part:
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise ValueError(f"{part!r} is not an address or a CIDR range") from None
        return value

    @field_validator("grpc_addr", "edge_addr", "demo_provider_addr")
    @classmethod
    def _listen_address(cls, value: str, info: ValidationInfo) -> str:
        if info.field_name == "demo_provider_addr" and not value:  # no demo provider
            return value
        host, sep, port = value.strip().rpartition(":")
        if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not HOST:PORT with a port from 1 to 65535 (127.0.0.1:8080)")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if not isinstance(logging.getLevelName(value.upper()), int):
            raise ValueError(f"{value!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
        return value.upper()

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.db_pool_max < self.db_pool_min:
            raise ValueError(f"db_pool_max ({self.db_pool_max}) is below db_pool_min ({self.db_pool_min})")
        return self

    @property
    def mail_path(self) -> str:
        return self.mail_dir or f"{self.var_dir}/mail"

    @property
    def sms_path(self) -> str:
        return self.sms_dir or f"{self.var_dir}/sms"

    @property
    def grpc_dial_target(self) -> str:
        return self.grpc_target or self.grpc_addr


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
