"""The settings by concern read the very variables the flat settings read: users know them.

``EXPECTED`` was written down from the flat ``AgentForgeSettings`` before it was split into
groups: every variable it read, where its value lands now, a value to set and what it reads as.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from agentforge_dagster.settings import AgentForgeSettings, all_settings

# variable → (group.attribute, the value set, the value read)
EXPECTED: dict[str, tuple[str, str, Any]] = {
    "AGENTFORGE_HOME": ("storage.home", "/srv/af", Path("/srv/af")),
    "DAGSTER_HOME": ("storage.dagster_home", "/srv/dh", Path("/srv/dh")),
    "AGENTFORGE_DATABASE_URL": ("storage.database_url", "sqlite:///x.db", "sqlite:///x.db"),
    "AGENTFORGE_ARTIFACTS_DIR": ("storage.artifacts_dir", "/srv/a", Path("/srv/a")),
    "AGENTFORGE_DELIVERIES_DIR": ("storage.deliveries_dir", "/srv/d", Path("/srv/d")),
    "AGENTFORGE_MODELS": (
        "models.chain",
        "openai:gpt-4o-mini,offline",
        "openai:gpt-4o-mini,offline",
    ),
    "OPENAI_API_KEY": ("models.openai_api_key", "sk-o", "sk-o"),
    "ANTHROPIC_API_KEY": ("models.anthropic_api_key", "sk-a", "sk-a"),
    "AGENTFORGE_MODEL_FALLBACK_AFTER": ("models.fallback_after", "3", 3),
    "AGENTFORGE_MODEL_RATE_LIMITS_JSON": (
        "models.rate_limits_json",
        '{"offline:offline": {"rpm": 5}}',
        '{"offline:offline": {"rpm": 5}}',
    ),
    "AGENTFORGE_MODEL_MAX_RATE_WAIT_SECONDS": ("models.max_rate_wait_seconds", "7.5", 7.5),
    "AGENTFORGE_MAX_PROVIDER_WAIT_SECONDS": ("models.max_provider_wait_seconds", "42", 42.0),
    "AGENTFORGE_MODEL_MAX_RESPONSE_BYTES": ("models.max_response_bytes", "4096", 4096),
    "AGENTFORGE_MODEL_BREAKER_FAILURES": ("models.breaker_failures", "9", 9),
    "AGENTFORGE_MODEL_BREAKER_WINDOW_SECONDS": ("models.breaker_window_seconds", "61", 61.0),
    "AGENTFORGE_MODEL_BREAKER_COOLDOWN_SECONDS": ("models.breaker_cooldown_seconds", "31", 31.0),
    "AGENTFORGE_MODEL_MAX_REPROMPTS": ("models.max_reprompts", "4", 4),
    "AGENTFORGE_MODEL_REPLAY_ONLY": ("models.replay_only", "true", True),
    "AGENTFORGE_MODEL_PRICES_JSON": ("models.prices_json", '{"m": [1, 2]}', '{"m": [1, 2]}'),
    "AGENTFORGE_MONTHLY_BUDGET_USD": ("models.monthly_budget_usd", "12.5", 12.5),
    "AGENTFORGE_CODE_SERVER_PORT": ("deploy.code_server_port", "4100", 4100),
    "AGENTFORGE_CODE_SERVER_HOST": ("deploy.code_server_host", "0.0.0.0", "0.0.0.0"),
    "AGENTFORGE_DEPLOY_HISTORY": ("deploy.history", "/srv/deploys.json", Path("/srv/deploys.json")),
    "AGENTFORGE_DEPLOY_TIMEOUT_SECONDS": ("deploy.timeout_seconds", "33", 33.0),
    "AGENTFORGE_TRACE_URL": ("traces.url", "http://v/t/{trace_id}", "http://v/t/{trace_id}"),
    "AGENTFORGE_SECRETS_DIR": ("deploy.secrets_dir", "/srv/secrets", Path("/srv/secrets")),
    "AGENTFORGE_IMAGE": ("deploy.image", "agentforge:1", "agentforge:1"),
    "AGENTFORGE_IMAGE_ID": ("deploy.image_id", "sha256:ab", "sha256:ab"),
    "AGENTFORGE_S3_BUCKET": ("s3.bucket", "bucket", "bucket"),
    "AGENTFORGE_S3_ENDPOINT_URL": ("s3.endpoint_url", "http://127.0.0.1:9", "http://127.0.0.1:9"),
    "AGENTFORGE_S3_REGION": ("s3.region", "eu-west-1", "eu-west-1"),
    "AGENTFORGE_S3_PREFIX": ("s3.prefix", "art", "art"),
    "AGENTFORGE_BACKUP_DIR": ("storage.backup_dir", "/srv/b", Path("/srv/b")),
    "AGENTFORGE_BACKUP_KEEP": ("storage.backup_keep", "3", 3),
    "AGENTFORGE_AUDIT_ANCHOR_KEY": ("storage.audit_anchor_key", "k", "k"),
    "AGENTFORGE_AUDIT_ANCHOR_KEY_FILE": ("storage.audit_anchor_key_file", "/srv/k", Path("/srv/k")),
    "AGENTFORGE_RETRY_MAX_RETRIES": ("retries.max_retries", "2", 2),
    "AGENTFORGE_RETRY_DELAY_SECONDS": ("retries.delay_seconds", "0.5", 0.5),
    "AGENTFORGE_RETRY_MAX_DELAY_SECONDS": ("retries.max_delay_seconds", "20", 20.0),
    "AGENTFORGE_DRILLS": ("drills.enabled", "true", True),
    "AGENTFORGE_FAULT_RATE": ("drills.rate", "0.25", 0.25),
    "AGENTFORGE_FAULT_SEED": ("drills.seed", "7", 7),
    "AGENTFORGE_FAULT_MODEL_LATENCY_SECONDS": ("drills.model_latency_seconds", "0.2", 0.2),
    "AGENTFORGE_MAX_REVISIONS": ("review.max_revisions", "2", 2),
    "AGENTFORGE_APPROVAL_SERVICES": ("review.approval_services", "blog_post", "blog_post"),
    "AGENTFORGE_APPROVAL_CUSTOMERS": ("review.approval_customers", "Acme", "Acme"),
    "AGENTFORGE_REVIEW_ESCALATE_AFTER_HOURS": ("review.escalate_after_hours", "6", 6.0),
    "AGENTFORGE_MODEL_TIMEOUT_SECONDS": ("models.timeout_seconds", "45", 45.0),
    "AGENTFORGE_RUN_WORKER_START": ("runs.run_worker_start", "spawn", "spawn"),
    "AGENTFORGE_SENSOR_INTERVAL_SECONDS": ("sensors.interval_seconds", "5", 5),
    "AGENTFORGE_LEASE_SECONDS": ("runs.lease_seconds", "30", 30.0),
    "AGENTFORGE_QUEUE_BATCH": ("sensors.queue_batch", "10", 10),
    "AGENTFORGE_ORDER_RUN_MAX_RUNTIME_SECONDS": (
        "runs.order_run_max_runtime_seconds",
        "1200",
        1200,
    ),
    "AGENTFORGE_DLQ_COOLDOWN_SECONDS": ("sensors.dlq_cooldown_seconds", "5", 5.0),
    "AGENTFORGE_DLQ_MAX_REPLAYS": ("sensors.dlq_max_replays", "1", 1),
    "AGENTFORGE_DROP_DIR": ("sensors.drop_dir", "/srv/drop", Path("/srv/drop")),
    "AGENTFORGE_PARTITION_RETENTION_DAYS": ("sensors.partition_retention_days", "30", 30.0),
    "AGENTFORGE_RABBITMQ_URL": ("brokers.rabbitmq_url", "amqp://h/v", "amqp://h/v"),
    "AGENTFORGE_RABBITMQ_URL_FILE": ("brokers.rabbitmq_url_file", "/run/r", Path("/run/r")),
    "AGENTFORGE_RABBITMQ_QUEUE": ("brokers.rabbitmq_queue", "q", "q"),
    "AGENTFORGE_RABBITMQ_DEAD_LETTER_EXCHANGE": ("brokers.rabbitmq_dead_letter_exchange", "x", "x"),
    "AGENTFORGE_RABBITMQ_DLX_BY_POLICY": ("brokers.rabbitmq_dlx_by_policy", "true", True),
    "AGENTFORGE_RABBITMQ_EVENTS_EXCHANGE": ("brokers.rabbitmq_events_exchange", "e", "e"),
    "AGENTFORGE_REDIS_URL": ("brokers.redis_url", "redis://h/0", "redis://h/0"),
    "AGENTFORGE_REDIS_URL_FILE": ("brokers.redis_url_file", "/run/s", Path("/run/s")),
    "AGENTFORGE_REDIS_STREAM": ("brokers.redis_stream", "s", "s"),
    "AGENTFORGE_REDIS_GROUP": ("brokers.redis_group", "g", "g"),
    "AGENTFORGE_REDIS_CONSUMER": ("brokers.redis_consumer", "c", "c"),
    "AGENTFORGE_REDIS_CLAIM_IDLE_SECONDS": ("brokers.redis_claim_idle_seconds", "9", 9.0),
    "AGENTFORGE_REDIS_EVENTS_STREAM": ("brokers.redis_events_stream", "es", "es"),
    "AGENTFORGE_REDIS_EVENTS_MAXLEN": ("brokers.redis_events_maxlen", "2000", 2000),
    "AGENTFORGE_BROKER_BATCH": ("brokers.batch", "20", 20),
    "AGENTFORGE_BROKER_TIMEOUT_SECONDS": ("brokers.timeout_seconds", "2.5", 2.5),
    "AGENTFORGE_FAULT_BROKER_CRASH_AFTER": ("drills.broker_crash_after", "3", 3),
    "AGENTFORGE_CASH_ON_HAND": ("figures.cash_on_hand", "500", 500.0),
    "AGENTFORGE_PLAN_START": ("figures.plan_start", "2026-01-02", date(2026, 1, 2)),
    "AGENTFORGE_PLAN_DAYS": ("figures.plan_days", "30", 30),
    "AGENTFORGE_DAILY_FIXED_COSTS": ("figures.daily_fixed_costs", "20", 20.0),
}


def _read(settings: AgentForgeSettings, path: str) -> Any:
    group, name = path.split(".")
    value = getattr(getattr(settings, group), name)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for variable in EXPECTED:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


@pytest.mark.parametrize("variable", sorted(EXPECTED))
def test_each_variable_is_read_where_its_group_says(
    clean_env: pytest.MonkeyPatch, variable: str
) -> None:
    path, raw, expected = EXPECTED[variable]
    clean_env.setenv(variable, raw)
    assert _read(AgentForgeSettings(), path) == expected


def test_every_variable_at_once(clean_env: pytest.MonkeyPatch) -> None:
    for variable, (_path, raw, _expected) in EXPECTED.items():
        clean_env.setenv(variable, raw)
    settings = AgentForgeSettings()
    assert {v: _read(settings, path) for v, (path, _, _) in EXPECTED.items()} == {
        v: expected for v, (_, _, expected) in EXPECTED.items()
    }


def test_the_settings_read_these_variables_and_no_others() -> None:
    assert {s.variable: f"{s.group}.{s.name}" for s in all_settings()} == {
        variable: path for variable, (path, _, _) in EXPECTED.items()
    }


def test_every_setting_says_what_it_does() -> None:
    described = [s.field.description for s in all_settings()]
    assert all(described)
    assert len(set(described)) == len(described), "each setting has its own description"


def test_a_group_given_in_part_reads_the_rest_from_the_environment(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("AGENTFORGE_DATABASE_URL", "sqlite:///env.db")
    settings = AgentForgeSettings(storage={"home": tmp_path})
    assert settings.storage.home == tmp_path
    assert settings.storage.database_url == "sqlite:///env.db"


def test_a_bad_value_is_refused_at_start(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTFORGE_MODEL_RATE_LIMITS_JSON", "{not json")
    with pytest.raises(ValidationError):
        AgentForgeSettings()
