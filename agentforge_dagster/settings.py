"""The one place configuration is read from the environment (variables prefixed ``AGENTFORGE_``).

One group of settings per concern, each a ``BaseSettings`` that reads its own variables when the
settings are built: ``settings.storage``, ``settings.s3``, ``settings.models``,
``settings.retries``, ``settings.runs``, ``settings.sensors``, ``settings.review``,
``settings.brokers``, ``settings.deploy``, ``settings.drills``, ``settings.figures``. Each
variable's name is the group's prefix and the field's name, or the field's alias where the two
differ (``DAGSTER_HOME``, ``AGENTFORGE_MODELS``); ``docs/reference/settings.md`` lists them all.

Defaults are the embedded set-up: SQLite files and local folders under ``.agentforge/``, the
offline model, no injected faults. Each default is written here once: resources that take a
setting's value default to it through :func:`defaults`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentforge_dagster.domain.limits import (
    DEFAULT_LEASE_SECONDS,
    MAX_PROVIDER_WAIT_S,
    MAX_RESPONSE_BYTES,
)
from agentforge_dagster.execution.backoff import StepBackoff


def _config(env_prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=env_prefix, extra="ignore", populate_by_name=True)


class StorageSettings(BaseSettings):
    """Where the business data lives: the database, the local folders, backups and their key."""

    model_config = _config("AGENTFORGE_")

    home: Path = Field(
        default=Path(".agentforge"),
        description="Folder of the embedded default's files: the SQLite database, artifacts, "
        "deliveries, backups and the deploy history.",
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
    artifacts_dir: Path | None = Field(
        default=None,
        description="Folder of the steps' artifacts, one JSON file per order and step; "
        "home/artifacts if unset (unused when an S3 bucket is set).",
    )
    deliveries_dir: Path | None = Field(
        default=None,
        description="Folder of the delivered Markdown files; home/deliveries if unset (unused "
        "when an S3 bucket is set).",
    )
    backup_dir: Path | None = Field(
        default=None,
        description="Folder of the business database's backups; home/backups if unset (unused "
        "when an S3 bucket is set).",
    )
    backup_keep: int = Field(
        default=7, ge=1, description="How many of the newest backups are kept; older ones go."
    )
    # Audit anchors (the chain's head written beside the backups) are HMAC-signed with this key,
    # read from the file if one is named, else from the variable; unsigned without either.
    audit_anchor_key: SecretStr | None = Field(
        default=None,
        description="The HMAC key that signs the audit anchors, when no key file is named "
        "(passed to Dagster as `EnvVar`); anchors are unsigned without a key.",
    )
    audit_anchor_key_file: Path | None = Field(
        default=None,
        description="A file holding the audit anchors' HMAC key; read in preference to "
        "AGENTFORGE_AUDIT_ANCHOR_KEY.",
    )

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'agentforge.db').resolve()}"

    def resolved_artifacts_dir(self) -> Path:
        return (self.artifacts_dir or self.home / "artifacts").resolve()

    def resolved_deliveries_dir(self) -> Path:
        return (self.deliveries_dir or self.home / "deliveries").resolve()

    def resolved_backup_dir(self) -> Path:
        return (self.backup_dir or self.home / "backups").resolve()

    def resolved_audit_anchor_key(self) -> bytes | None:
        from agentforge_dagster.persistence.anchors import load_anchor_key

        key = self.audit_anchor_key.get_secret_value() if self.audit_anchor_key else None
        return load_anchor_key(key, self.audit_anchor_key_file)


class S3Settings(BaseSettings):
    """S3 (AWS, MinIO, moto): when a bucket is set, artifacts, deliveries and backups go there."""

    model_config = _config("AGENTFORGE_S3_")

    bucket: str | None = Field(
        default=None,
        description="The bucket of artifacts, deliveries and backups; local folders when unset.",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="The S3 server's URL (MinIO, moto); AWS's own endpoint when unset.",
    )
    region: str = Field(default="us-east-1", description="The bucket's region.")
    prefix: str = Field(
        default="artifacts", description="Key prefix of the artifacts in the bucket."
    )


class ModelSettings(BaseSettings):
    """Which models answer, and the limits every model call is held to."""

    model_config = _config("AGENTFORGE_MODEL_")

    chain: str = Field(
        default="offline",
        validation_alias="AGENTFORGE_MODELS",
        description="Model chain in fallback order: provider:model[@base_url], comma-separated.",
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias="OPENAI_API_KEY",
        description="The key of OpenAI models (passed to Dagster as `EnvVar`).",
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias="ANTHROPIC_API_KEY",
        description="The key of Anthropic models (passed to Dagster as `EnvVar`).",
    )
    timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="The deadline of a model call: a slower call is a transient error.",
    )
    fallback_after: int = Field(
        default=2,
        ge=1,
        description="Transient failures of a model on one order's step before the step passes "
        "it over for the next model of the chain.",
    )
    rate_limits_json: str | None = Field(
        default=None,
        description='Shared limits per "provider:model": {"openai:gpt-4o-mini": {"rpm": 500, '
        '"tpm": 200000, "concurrency": 8}}; a provider not named has none.',
    )
    max_rate_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description="The longest a call waits for the shared rate limits before it fails as a "
        "transient error (the step backs off).",
    )
    # A provider's answer is untrusted input (domain/limits.py).
    max_provider_wait_seconds: float = Field(
        default=MAX_PROVIDER_WAIT_S,
        gt=0,
        validation_alias="AGENTFORGE_MAX_PROVIDER_WAIT_SECONDS",
        description="The longest wait a model provider may ask for (Retry-After); an answer "
        "asking for more fails as rate-limited, and no wait for a provider is longer.",
    )
    max_response_bytes: int = Field(
        default=MAX_RESPONSE_BYTES,
        ge=1024,
        description="The most bytes of a model provider's answer read; a larger one is refused "
        "unread (MalformedResponse).",
    )
    breaker_failures: int = Field(
        default=5,
        ge=0,
        description="Transient failures of a provider within the window, across all orders, "
        "that open its shared circuit breaker (0: no breaker).",
    )
    breaker_window_seconds: float = Field(
        default=60.0, gt=0, description="The window the breaker counts a provider's failures in."
    )
    breaker_cooldown_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long an open breaker passes its provider over before one probe call.",
    )
    max_reprompts: int = Field(
        default=2,
        ge=0,
        description="Re-prompts after an answer that does not match the step's schema, before "
        "the step fails permanently.",
    )
    replay_only: bool = Field(
        default=False,
        description="Answer from recorded model responses only: a call with none recorded "
        "fails permanently, no provider is paid.",
    )
    prices_json: str | None = Field(
        default=None,
        description='USD per million tokens, over the built-in prices: {"model": [input, output]}.',
    )
    monthly_budget_usd: float | None = Field(
        default=None,
        ge=0,
        validation_alias="AGENTFORGE_MONTHLY_BUDGET_USD",
        description="The month's cap on model spend when none is set for the month "
        "(agentforge budget); no cap if unset.",
    )

    @model_validator(mode="after")
    def _rate_limits_parse(self) -> ModelSettings:
        """Refuse rate limits that do not parse at start, not at a model call."""
        if self.rate_limits_json:
            from agentforge_dagster.domain.limits import parse_rate_limits

            parse_rate_limits(self.rate_limits_json)
        return self


class RetrySettings(BaseSettings):
    """A step's retries: exponential back-off with jitter, capped (execution/backoff.py).

    The defaults span a 30 s outage; the demo and the tests use short delays.
    """

    model_config = _config("AGENTFORGE_RETRY_")

    max_retries: int = Field(default=6, ge=0, le=20, description="Retries per step.")
    delay_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Back-off base: retry n waits between half and all of min(cap, delay × 2^(n−1)), at least a server's `Retry-After` (`agentforge demo` uses 0.05)",
    )
    max_delay_seconds: float = Field(
        default=30.0,
        gt=0,
        description="The cap on one wait; with the defaults a step's retries span about a minute, enough for a 30 s database or S3 outage. Settings that could outlast half of `AGENTFORGE_ORDER_RUN_MAX_RUNTIME_SECONDS` are refused at start",
    )

    def backoff(self, longest_asked_s: float) -> StepBackoff:
        """The back-off these settings describe; a server may ask for up to ``longest_asked_s``."""
        return StepBackoff(
            self.max_retries, self.delay_seconds, self.max_delay_seconds, longest_asked_s
        )


class RunSettings(BaseSettings):
    """An order's run under the daemon: how long it may take, its lease, how its worker starts."""

    model_config = _config("AGENTFORGE_")

    order_run_max_runtime_seconds: int = Field(
        default=900,
        ge=10,
        description="An order's run still going after this long is cancelled and fails "
        "(`dagster/max_runtime`).",
    )
    lease_seconds: float = Field(
        default=DEFAULT_LEASE_SECONDS,
        ge=5,
        description="How long a runner's claim on an order holds unless renewed (every third of "
        "it); a runner that died is taken over once its lease has run out.",
    )
    run_worker_start: Literal["forkserver", "spawn"] = Field(
        default="forkserver",
        description="How the code server starts run workers: forked from a process that has "
        "imported Dagster and this code once (forkserver), or Dagster's own spawn.",
    )


class SensorSettings(BaseSettings):
    """The sensors: how often they look, and what they take from the queue, the dead letters,
    the drop folder and the old partitions."""

    model_config = _config("AGENTFORGE_")

    interval_seconds: int = Field(
        default=15,
        ge=1,
        validation_alias="AGENTFORGE_SENSOR_INTERVAL_SECONDS",
        description="How often the sensors look (the slower ones at most once a minute).",
    )
    queue_batch: int = Field(
        default=50, ge=1, description="Queued orders one sensor tick asks runs for."
    )
    dlq_cooldown_seconds: float = Field(
        default=60.0,
        ge=0,
        description="A transient or infrastructure dead letter is replayed automatically after "
        "this cooldown × 2^replays.",
    )
    dlq_max_replays: int = Field(
        default=3,
        ge=0,
        description="How many times a dead letter is replayed automatically before it waits "
        "for a person.",
    )
    drop_dir: Path | None = Field(default=None, description="Folder watched for JSON/CSV orders.")
    partition_retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete the partitions of orders final for longer than this (records kept).",
    )


class ReviewSettings(BaseSettings):
    """The review of drafts: how many revisions it asks for, whose orders wait for a person."""

    model_config = _config("AGENTFORGE_")

    max_revisions: int = Field(default=1, ge=0, le=5, description="Revisions a review may ask for.")
    approval_services: str = Field(
        default="",
        description="Comma-separated services whose orders wait for a person's approval.",
    )
    approval_customers: str = Field(
        default="",
        description="Comma-separated customers whose orders wait for a person's approval.",
    )
    escalate_after_hours: float = Field(
        default=24.0,
        gt=0,
        validation_alias="AGENTFORGE_REVIEW_ESCALATE_AFTER_HOURS",
        description="A hold waiting longer than this is escalated.",
    )


class BrokerSettings(BaseSettings):
    """Message brokers: orders in, order events out.

    Each is off until its URL is set (the URL, or a file holding it: ``*_URL_FILE``, the way the
    deployment mounts secrets).
    """

    model_config = _config("AGENTFORGE_")

    rabbitmq_url: SecretStr | None = Field(
        default=None, description="amqp://user:password@host:5672/vhost; off when unset."
    )
    rabbitmq_url_file: Path | None = Field(
        default=None,
        description="A file holding the RabbitMQ URL, read when AGENTFORGE_RABBITMQ_URL is unset.",
    )
    rabbitmq_queue: str = Field(
        default="agentforge.orders",
        min_length=1,
        max_length=255,
        description="The intake queue orders are taken from; refused messages go to "
        "`<queue>.rejected`.",
    )
    rabbitmq_dead_letter_exchange: str = Field(
        default="agentforge.orders.dlx",
        max_length=255,
        description="The intake queue's dead-letter exchange, bound to `<queue>.rejected`.",
    )
    rabbitmq_dlx_by_policy: bool = Field(
        default=False,
        description="The intake queue's dead-letter exchange is set by an operator policy "
        "(declare the queue passively, without arguments).",
    )
    rabbitmq_events_exchange: str = Field(
        default="agentforge.events",
        max_length=255,
        description="The topic exchange order events are published to.",
    )
    redis_url: SecretStr | None = Field(
        default=None, description="redis://[:password@]host:6379/db; off when unset."
    )
    redis_url_file: Path | None = Field(
        default=None,
        description="A file holding the Redis URL, read when AGENTFORGE_REDIS_URL is unset.",
    )
    redis_stream: str = Field(
        default="agentforge:orders",
        min_length=1,
        description="The intake stream orders are taken from; refused entries go to "
        "`<stream>:rejected`.",
    )
    redis_group: str = Field(
        default="agentforge",
        min_length=1,
        description="The consumer group that reads the intake stream.",
    )
    redis_consumer: str = Field(
        default="agentforge-intake",
        min_length=1,
        description="This consumer's name in the group.",
    )
    redis_claim_idle_seconds: float = Field(
        default=60.0, ge=0, description="Claim entries another consumer left pending this long."
    )
    redis_events_stream: str = Field(
        default="agentforge:events",
        min_length=1,
        description="The stream order events are published to.",
    )
    redis_events_maxlen: int = Field(
        default=100_000,
        ge=1000,
        description="The events stream is trimmed to about this many entries.",
    )
    batch: int = Field(
        default=100,
        ge=1,
        le=10_000,
        validation_alias="AGENTFORGE_BROKER_BATCH",
        description="Messages a sensor tick takes from a broker, and events it publishes in one "
        "batch (up to 10 batches a tick).",
    )
    timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias="AGENTFORGE_BROKER_TIMEOUT_SECONDS",
        description="A broker that does not answer within this is down for the tick.",
    )

    def resolved_rabbitmq_url(self) -> str | None:
        return _secret(self.rabbitmq_url, self.rabbitmq_url_file)

    def resolved_redis_url(self) -> str | None:
        return _secret(self.redis_url, self.redis_url_file)


class DeploySettings(BaseSettings):
    """Deploys of the code location's image (agentforge deploy / rollback), and the image a run
    executes in."""

    model_config = _config("AGENTFORGE_")

    code_server_port: int = Field(
        default=4000, ge=1, le=65535, description="Port the deployed code server listens on."
    )
    code_server_host: str = Field(
        default="127.0.0.1", description="Address the deployed code server binds."
    )
    history: Path | None = Field(
        default=None,
        validation_alias="AGENTFORGE_DEPLOY_HISTORY",
        description="History of deploys, for roll-backs; $AGENTFORGE_HOME/deploys.json.",
    )
    timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        validation_alias="AGENTFORGE_DEPLOY_TIMEOUT_SECONDS",
        description="How long a deploy waits for the new code server to turn healthy; past "
        "it the new server is removed and the one before keeps serving.",
    )
    secrets_dir: Path | None = Field(
        default=None,
        description="Host folder of secret files (one per variable, lower-case name) that "
        "deploy mounts read-only into the code server at /run/secrets.",
    )
    # The container image a run executes in (set by the Docker run launcher).
    image: str | None = Field(
        default=None,
        description="The image tag a run executes in (set by deploy and the launchers).",
    )
    image_id: str | None = Field(
        default=None, description="The id (digest) of that image (set by deploy and the launchers)."
    )


class DrillSettings(BaseSettings):
    """Fault injection (drills): off, and not even wired in, unless asked for."""

    model_config = _config("AGENTFORGE_FAULT_")

    enabled: bool = Field(
        default=False,
        validation_alias="AGENTFORGE_DRILLS",
        description="Wire fault injection into the order steps.",
    )
    rate: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="The probability that one attempt of one step fails with an injected "
        "transient fault (a rate above 0 turns drills on).",
    )
    seed: int = Field(
        default=0, description="Seed of the injected faults: the same seed fails the same attempts."
    )
    model_latency_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Latency added to every model call (above 0 turns drills on).",
    )
    broker_crash_after: int | None = Field(
        default=None,
        ge=1,
        description="Drill: the intake process dies after its Nth commit, before acknowledging.",
    )

    def active(self) -> bool:
        """Drills are on when asked for, or when a fault setting asks for something to inject."""
        return self.enabled or self.rate > 0 or self.model_latency_seconds > 0


class FigureSettings(BaseSettings):
    """Business figures the books do not hold: cash, fixed costs, the plan."""

    model_config = _config("AGENTFORGE_")

    cash_on_hand: float = Field(default=10_000.0, description="Cash at hand, for the runway.")
    plan_start: date | None = Field(
        default=None, description="Day 1 of the business plan (default: the first order's date)."
    )
    plan_days: int = Field(default=90, ge=1, description="How many days the business plan runs.")
    daily_fixed_costs: float = Field(default=50.0, ge=0, description="Daily costs besides models.")


class TraceSettings(BaseSettings):
    """Traces (docs/traces.md). The SDK's standard ``OTEL_*`` variables turn them on and
    configure them; this group holds only what is the project's own."""

    model_config = _config("AGENTFORGE_")

    url: str | None = Field(
        default=None,
        validation_alias="AGENTFORGE_TRACE_URL",
        description="A trace viewer's page of one trace, with {trace_id} where the id goes "
        "(Phoenix: http://127.0.0.1:6006/projects/agentforge/traces/{trace_id}); each order "
        "step's materialization then links to its trace in the UI.",
    )

    @field_validator("url")
    @classmethod
    def _has_the_id(cls, value: str | None) -> str | None:
        if value is not None and "{trace_id}" not in value:
            raise ValueError("AGENTFORGE_TRACE_URL needs {trace_id} where the trace's id goes")
        return value or None

    def link(self, trace_id: str) -> str | None:
        from agentforge_dagster import tracing

        return tracing.link(self.url, trace_id)


class AgentForgeSettings(BaseModel):
    """All the settings, a group per concern; each group reads its own variables when built."""

    storage: StorageSettings = Field(default_factory=StorageSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    retries: RetrySettings = Field(default_factory=RetrySettings)
    runs: RunSettings = Field(default_factory=RunSettings)
    sensors: SensorSettings = Field(default_factory=SensorSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    brokers: BrokerSettings = Field(default_factory=BrokerSettings)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    drills: DrillSettings = Field(default_factory=DrillSettings)
    figures: FigureSettings = Field(default_factory=FigureSettings)
    traces: TraceSettings = Field(default_factory=TraceSettings)

    @model_validator(mode="after")
    def _retries_fit_the_run(self) -> AgentForgeSettings:
        """A step's retries must end well inside the run's ``dagster/max_runtime``."""
        longest = self.retries.backoff(self.models.max_provider_wait_seconds).budget()
        runtime = self.runs.order_run_max_runtime_seconds
        if longest * 2 > runtime:
            raise ValueError(
                f"step retries may wait {longest:.0f} s, more than half of "
                f"AGENTFORGE_ORDER_RUN_MAX_RUNTIME_SECONDS ({runtime}): "
                "lower AGENTFORGE_RETRY_MAX_DELAY_SECONDS or the retries, or raise the runtime"
            )
        return self

    @model_validator(mode="after")
    def _provider_waits_fit_the_run(self) -> AgentForgeSettings:
        """The longest wait a provider may ask for must leave the run time to retry."""
        longest = self.models.max_provider_wait_seconds
        runtime = self.runs.order_run_max_runtime_seconds
        if longest * 2 > runtime:
            raise ValueError(
                f"AGENTFORGE_MAX_PROVIDER_WAIT_SECONDS ({longest:g}) is "
                "more than half of AGENTFORGE_ORDER_RUN_MAX_RUNTIME_SECONDS "
                f"({runtime}): lower it, or raise the runtime"
            )
        return self


@dataclass(frozen=True)
class Setting:
    """One setting as a person meets it: its variable, and where it lands in the settings."""

    group: str  # the attribute of AgentForgeSettings
    name: str  # the attribute inside the group
    variable: str  # the environment variable that sets it
    field: FieldInfo


def all_settings() -> Iterator[Setting]:
    """Every setting, group by group (the settings reference page is made from these)."""
    for group, group_field in AgentForgeSettings.model_fields.items():
        cls = group_field.annotation
        assert isinstance(cls, type) and issubclass(cls, BaseSettings)
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            alias = field.validation_alias if isinstance(field.validation_alias, str) else None
            yield Setting(group, name, (alias or f"{prefix}{name}").upper(), field)


Group = TypeVar("Group", bound=BaseSettings)


def defaults(group: type[Group]) -> Group:
    """A group of settings at its defaults, the environment not read.

    What a resource that takes a setting's value defaults to, so each default is written once.
    """
    return group.model_construct()  # type: ignore[return-value]  # pydantic types it as the base


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
