"""The one place configuration is read from the environment (variables prefixed ``AGENTFORGE_``).

Defaults are the embedded set-up: SQLite files and local folders under ``.agentforge/``, the
offline model, no injected faults.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentforge_dagster.domain.limits import MAX_PROVIDER_WAIT_S, MAX_RESPONSE_BYTES


class AgentForgeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGENTFORGE_", extra="ignore", populate_by_name=True
    )

    home: Path = Field(
        default=Path(".agentforge"), description="Folder for embedded-default files."
    )
    dagster_home: Path = Field(
        default=Path(".dagster_home"),
        validation_alias="DAGSTER_HOME",
        description="The Dagster instance folder (SQLite storage unless its dagster.yaml says else).",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the business store; SQLite under home if unset.",
    )
    artifacts_dir: Path | None = Field(default=None, description="one JSON file per order and step")
    deliveries_dir: Path | None = Field(default=None, description="delivered Markdown files")
    models: str = Field(
        default="offline",
        description="Model chain in fallback order: provider:model[@base_url], comma-separated.",
    )
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    model_fallback_after: int = Field(default=2, ge=1)
    model_rate_limits_json: str | None = Field(
        default=None,
        description='Shared limits per "provider:model": {"openai:gpt-4o-mini": {"rpm": 500, '
        '"tpm": 200000, "concurrency": 8}}; a provider not named has none.',
    )
    model_max_rate_wait_seconds: float = Field(default=30.0, ge=0)
    # A provider's answer is untrusted input (domain/limits.py).
    max_provider_wait_seconds: float = Field(
        default=MAX_PROVIDER_WAIT_S,
        gt=0,
        description="The longest wait a model provider may ask for (Retry-After); an answer "
        "asking for more fails as rate-limited, and no wait for a provider is longer.",
    )
    model_max_response_bytes: int = Field(
        default=MAX_RESPONSE_BYTES,
        ge=1024,
        description="The most bytes of a model provider's answer read; a larger one is refused "
        "unread (MalformedResponse).",
    )
    model_breaker_failures: int = Field(default=5, ge=0)
    model_breaker_window_seconds: float = Field(default=60.0, gt=0)
    model_breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    model_max_reprompts: int = Field(default=2, ge=0)
    model_replay_only: bool = False
    model_prices_json: str | None = None
    monthly_budget_usd: float | None = Field(
        default=None, ge=0, description="default monthly model budget"
    )
    # Deploys of the code location's image (agentforge deploy / rollback).
    code_server_port: int = Field(default=4000, ge=1, le=65535)
    code_server_host: str = Field(default="127.0.0.1", description="Address the server binds.")
    deploy_history: Path | None = Field(
        default=None,
        description="History of deploys, for roll-backs; $AGENTFORGE_HOME/deploys.json.",
    )
    deploy_timeout_seconds: float = Field(default=120.0, gt=0)
    secrets_dir: Path | None = Field(
        default=None,
        description="Host folder of secret files (one per variable, lower-case name) that "
        "deploy mounts read-only into the code server at /run/secrets.",
    )
    # The container image a run executes in (set by the Docker run launcher).
    image: str | None = None
    image_id: str | None = None
    # S3 (AWS, MinIO, moto): when a bucket is set, artifacts and backups go there.
    s3_bucket: str | None = Field(default=None, description="artifacts and backups in S3")
    s3_endpoint_url: str | None = Field(default=None, description="artifacts and backups in S3")
    s3_region: str = "us-east-1"
    s3_prefix: str = "artifacts"
    # Backups of the business database.
    backup_dir: Path | None = None
    backup_keep: int = Field(default=7, ge=1, description="backups kept")
    # Audit anchors (the chain's head written beside the backups) are HMAC-signed with this key,
    # read from the file if one is named, else from the variable; unsigned without either.
    audit_anchor_key: SecretStr | None = Field(
        default=None,
        description="the key itself, when no file is named (passed to Dagster as `EnvVar`)",
    )
    audit_anchor_key_file: Path | None = None
    # Step retries: exponential back-off with jitter, capped (execution/backoff.py): the wait before
    # retry n is at most min(max_delay, delay * 2^(n-1)). The defaults span a 30 s outage; the demo
    # and the tests use short delays.
    retry_max_retries: int = Field(default=6, ge=0, le=20, description="retries per step")
    retry_delay_seconds: float = Field(
        default=1.0,
        gt=0,
        description="back-off base: retry n waits between half and all of min(cap, delay × 2^(n−1)), at least a server's `Retry-After` (`agentforge demo` uses 0.05)",
    )
    retry_max_delay_seconds: float = Field(
        default=30.0,
        gt=0,
        description="the cap on one wait; with the defaults a step's retries span about a minute, enough for a 30 s database or S3 outage. Settings that could outlast half of `AGENTFORGE_ORDER_RUN_MAX_RUNTIME_SECONDS` are refused at start",
    )
    # Fault injection (drills): off, and not even wired in, unless asked for.
    drills: bool = Field(default=False, description="Wire fault injection into the order steps.")
    fault_rate: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="injected fault rate (a rate above 0 turns drills on)",
    )
    fault_seed: int = Field(
        default=0, description="injected fault rate (a rate above 0 turns drills on)"
    )
    fault_model_latency_seconds: float = Field(default=0.0, ge=0)
    max_revisions: int = Field(default=1, ge=0, le=5, description="revisions a review may ask for")
    approval_services: str = Field(
        default="",
        description="Comma-separated services whose orders wait for a person's approval.",
    )
    approval_customers: str = Field(
        default="",
        description="Comma-separated customers whose orders wait for a person's approval.",
    )
    review_escalate_after_hours: float = Field(
        default=24.0, gt=0, description="A hold waiting longer than this is escalated."
    )
    model_timeout_seconds: float = Field(
        default=120.0, gt=0, description="a model call slower than this is a transient error"
    )
    # Orchestration under the daemon.
    run_worker_start: Literal["forkserver", "spawn"] = Field(
        default="forkserver",
        description="How the code server starts run workers: forked from a process that has "
        "imported Dagster and this code once (forkserver), or Dagster's own spawn.",
    )
    sensor_interval_seconds: int = Field(default=15, ge=1, description="how often the sensors look")
    lease_seconds: float = Field(
        default=120.0,
        ge=5,
        description="How long a runner's claim on an order holds unless renewed (every third of "
        "it); a runner that died is taken over once its lease has run out.",
    )
    queue_batch: int = Field(default=50, ge=1)
    order_run_max_runtime_seconds: int = Field(default=900, ge=10)
    dlq_cooldown_seconds: float = Field(
        default=60.0,
        ge=0,
        description="automatic replay of transient and infrastructure letters: after cooldown × 2^replays, at most this many times",
    )
    dlq_max_replays: int = Field(
        default=3,
        ge=0,
        description="automatic replay of transient and infrastructure letters: after cooldown × 2^replays, at most this many times",
    )
    drop_dir: Path | None = Field(default=None, description="Folder watched for JSON/CSV orders.")
    partition_retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete the partitions of orders final for longer than this (records kept).",
    )
    # Message brokers: orders in, order events out. Each is off until its URL is set (the URL, or
    # a file holding it: *_URL_FILE, the way the deployment mounts secrets).
    rabbitmq_url: SecretStr | None = Field(
        default=None, description="amqp://user:password@host:5672/vhost; off when unset."
    )
    rabbitmq_url_file: Path | None = None
    rabbitmq_queue: str = Field(
        default="agentforge.orders",
        min_length=1,
        max_length=255,
        description="the intake queue (refused messages go to `<queue>.rejected`), its dead-letter exchange, the topic exchange of order events",
    )
    rabbitmq_dead_letter_exchange: str = Field(
        default="agentforge.orders.dlx",
        max_length=255,
        description="the intake queue (refused messages go to `<queue>.rejected`), its dead-letter exchange, the topic exchange of order events",
    )
    rabbitmq_dlx_by_policy: bool = Field(
        default=False,
        description="The intake queue's dead-letter exchange is set by an operator policy "
        "(declare the queue passively, without arguments).",
    )
    rabbitmq_events_exchange: str = Field(
        default="agentforge.events",
        max_length=255,
        description="the intake queue (refused messages go to `<queue>.rejected`), its dead-letter exchange, the topic exchange of order events",
    )
    redis_url: SecretStr | None = Field(
        default=None, description="redis://[:password@]host:6379/db; off when unset."
    )
    redis_url_file: Path | None = None
    redis_stream: str = Field(
        default="agentforge:orders",
        min_length=1,
        description="the intake stream (refused entries go to `<stream>:rejected`), its consumer group and this consumer's name",
    )
    redis_group: str = Field(
        default="agentforge",
        min_length=1,
        description="the intake stream (refused entries go to `<stream>:rejected`), its consumer group and this consumer's name",
    )
    redis_consumer: str = Field(
        default="agentforge-intake",
        min_length=1,
        description="the intake stream (refused entries go to `<stream>:rejected`), its consumer group and this consumer's name",
    )
    redis_claim_idle_seconds: float = Field(
        default=60.0, ge=0, description="Claim entries another consumer left pending this long."
    )
    redis_events_stream: str = Field(
        default="agentforge:events",
        min_length=1,
        description="the stream of order events, trimmed to about this length",
    )
    redis_events_maxlen: int = Field(
        default=100_000,
        ge=1000,
        description="the stream of order events, trimmed to about this length",
    )
    broker_batch: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="messages a sensor tick takes (events: up to 10 batches a tick); a broker slower than this is down for the tick",
    )
    broker_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="messages a sensor tick takes (events: up to 10 batches a tick); a broker slower than this is down for the tick",
    )
    fault_broker_crash_after: int | None = Field(
        default=None,
        ge=1,
        description="Drill: the intake process dies after its Nth commit, before acknowledging.",
    )
    # Business figures.
    cash_on_hand: float = Field(default=10_000.0, description="Cash at hand, for the runway.")
    plan_start: date | None = Field(
        default=None, description="Day 1 of the business plan (default: the first order's date)."
    )
    plan_days: int = Field(default=90, ge=1, description="How many days the business plan runs.")
    daily_fixed_costs: float = Field(default=50.0, ge=0, description="Daily costs besides models.")

    @model_validator(mode="after")
    def _rate_limits_parse(self) -> AgentForgeSettings:
        """Refuse rate limits that do not parse at start, not at a model call."""
        if self.model_rate_limits_json:
            from agentforge_dagster.domain.limits import parse_rate_limits

            parse_rate_limits(self.model_rate_limits_json)
        return self

    @model_validator(mode="after")
    def _retries_fit_the_run(self) -> AgentForgeSettings:
        """A step's retries must end well inside the run's ``dagster/max_runtime``."""
        longest = sum(
            min(self.retry_max_delay_seconds, self.retry_delay_seconds * 2 ** (n - 1))
            for n in range(1, self.retry_max_retries + 1)
        )
        if longest * 2 > self.order_run_max_runtime_seconds:
            raise ValueError(
                f"step retries may wait {longest:.0f} s, more than half of "
                f"AGENTFORGE_ORDER_RUN_MAX_RUNTIME_SECONDS ({self.order_run_max_runtime_seconds}): "
                "lower AGENTFORGE_RETRY_MAX_DELAY_SECONDS or the retries, or raise the runtime"
            )
        return self

    @model_validator(mode="after")
    def _provider_waits_fit_the_run(self) -> AgentForgeSettings:
        """The longest wait a provider may ask for must leave the run time to retry."""
        if self.max_provider_wait_seconds * 2 > self.order_run_max_runtime_seconds:
            raise ValueError(
                f"AGENTFORGE_MAX_PROVIDER_WAIT_SECONDS ({self.max_provider_wait_seconds:g}) is "
                "more than half of AGENTFORGE_ORDER_RUN_MAX_RUNTIME_SECONDS "
                f"({self.order_run_max_runtime_seconds}): lower it, or raise the runtime"
            )
        return self

    def drills_enabled(self) -> bool:
        """Drills are on when asked for, or when a fault setting asks for something to inject."""
        return self.drills or self.fault_rate > 0 or self.fault_model_latency_seconds > 0

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'agentforge.db').resolve()}"

    def resolved_artifacts_dir(self) -> Path:
        return (self.artifacts_dir or self.home / "artifacts").resolve()

    def resolved_audit_anchor_key(self) -> bytes | None:
        from agentforge_dagster.persistence.anchors import load_anchor_key

        key = self.audit_anchor_key.get_secret_value() if self.audit_anchor_key else None
        return load_anchor_key(key, self.audit_anchor_key_file)

    def resolved_rabbitmq_url(self) -> str | None:
        return _secret(self.rabbitmq_url, self.rabbitmq_url_file)

    def resolved_redis_url(self) -> str | None:
        return _secret(self.redis_url, self.redis_url_file)

    def resolved_backup_dir(self) -> Path:
        return (self.backup_dir or self.home / "backups").resolve()

    def resolved_deliveries_dir(self) -> Path:
        return (self.deliveries_dir or self.home / "deliveries").resolve()


def _secret(value: SecretStr | None, path: Path | None) -> str | None:
    """A secret given as a value, or read from a file (its whitespace-trimmed content).

    A missing or empty file is a secret not configured, as the image's entrypoint reads them.
    """
    if value is not None:
        return value.get_secret_value()
    if path is not None and path.is_file():
        return path.read_text().strip() or None
    return None


def load_settings() -> AgentForgeSettings:
    return AgentForgeSettings()
