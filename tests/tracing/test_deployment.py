"""Tracing reaches run containers and every compose service, and never as an empty string."""

from __future__ import annotations

from pathlib import Path

import yaml

from agentforge_dagster.execution.containers import TRACE_VARIABLES, trace_environment

ROOT = Path(__file__).parents[2]


def test_a_run_container_gets_the_set_trace_variables_only() -> None:
    daemon = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_SERVICE_NAME": "  ",  # set but blank: not forwarded either
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer secret-token",
        "AGENTFORGE_TRACE_URL": "http://v/{trace_id}",
        "PATH": "/usr/bin",
    }
    assert trace_environment(daemon) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "AGENTFORGE_TRACE_URL": "http://v/{trace_id}",
    }
    assert trace_environment({}) == {}


def test_compose_passes_each_trace_variable_only_when_set_and_the_headers_as_a_file() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    env = compose["x-dagster-env"]
    for name in TRACE_VARIABLES:
        assert name in env and env[name] is None, name  # no value: taken from the shell if set
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in env
    assert env["OTEL_EXPORTER_OTLP_HEADERS_FILE"] == "/run/secrets/otel_exporter_otlp_headers"
    instance = yaml.safe_load((ROOT / "docker" / "dagster.docker.yaml").read_text())
    assert "OTEL_EXPORTER_OTLP_HEADERS" in instance["run_launcher"]["config"]["secrets"]
    assert not set(TRACE_VARIABLES) & set(instance["run_launcher"]["config"]["env_vars"])
