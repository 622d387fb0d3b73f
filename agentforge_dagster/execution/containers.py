"""What a run container is, apart from who launches it: tags, labels, caps, hardening, its end.

Plain Python and Dagster's public API only; the launchers in :mod:`agentforge_dagster.instance`
use these, and so do the deploy commands (which must not import the launchers).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker.errors
from dagster import MetadataValue

from agentforge_dagster.domain.runs import (
    CONTAINER_EXIT_CODE_KEY,
    CONTAINER_HEADLINE_KEY,
    CONTAINER_OOM_KEY,
    CONTAINER_OUTPUT_KEY,
)

MEM_LIMIT_TAG = "agentforge/mem_limit"
NANO_CPUS_TAG = "agentforge/nano_cpus"
IMAGE_ID_TAG = "agentforge/image_id"
ROLE_LABEL = "agentforge/role"
SECRETS_MOUNT = "/run/secrets"
OUTPUT_LINES = 50  # of a dead run container's output, kept in its run's event log
# Variables a run container must never get from the daemon's environment.
NEVER_FORWARDED = frozenset({"DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY"})
# The trace settings a run container gets from the daemon (docs/traces.md), each only when set
# and not empty: a bare name in Dagster's env_vars that is unset fails every launch. The headers
# (they carry tokens) are not here: they go as the secret file otel_exporter_otlp_headers.
TRACE_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SDK_DISABLED",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    "AGENTFORGE_TRACE_URL",
)


def trace_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What of ``environ`` a run container needs to trace as its launcher does."""
    return {name: environ[name] for name in TRACE_VARIABLES if environ.get(name, "").strip()}


HOST_CHECK = ["python", "-m", "agentforge_dagster.execution.hosts", "run container", "--then"]
# Defaults of every run container (container_kwargs may override each one).
HARDENING: dict[str, Any] = {
    "read_only": True,
    "tmpfs": {"/tmp": "rw,nosuid,nodev,size=512m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_MEMORY = re.compile(r"^\s*(\d+)\s*([bkmg]?)b?\s*$", re.IGNORECASE)


def parse_memory(value: str | int) -> int:
    """Bytes of a Docker memory size (``512m``, ``2g``, ``1073741824``)."""
    if isinstance(value, int):
        return value
    match = _MEMORY.match(value)
    if match is None:
        raise ValueError(f"not a memory size: {value!r} (use e.g. 512m or 2g)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


@dataclass(frozen=True)
class CapDecision:
    """The cap a run gets for one resource, and what to tell the operator about it."""

    kwarg: str
    value: int | None
    note: str | None


def decide_cap(
    kwarg: str, requested: str | None, default: int | None, maximum: int | None, parse: Any
) -> CapDecision:
    """A per-run request, clamped to the maximum; the default when nothing (valid) is asked.

    With no maximum and no default the container is unlimited, so any request only lowers it.
    """
    if requested is None:
        return CapDecision(kwarg, default, None)
    try:
        wanted = int(parse(requested))
    except ValueError as exc:
        return CapDecision(kwarg, default, f"{kwarg}: ignored the run's request ({exc})")
    if wanted <= 0:
        return CapDecision(kwarg, default, f"{kwarg}: ignored the run's request {requested!r}")
    ceiling = maximum if maximum is not None else default
    if ceiling is not None and wanted > ceiling:
        return CapDecision(
            kwarg, ceiling, f"{kwarg}: the run asked for {requested}, clamped to the max {ceiling}"
        )
    return CapDecision(kwarg, wanted, None)


@dataclass(frozen=True)
class ContainerReport:
    """A run container's end as the engine tells it."""

    container_id: str
    status: str  # created | running | exited | dead | ...
    exit_code: int | None
    oom_killed: bool
    error: str
    output: str  # the last OUTPUT_LINES lines, stdout and stderr

    @classmethod
    def of(cls, client: Any, container_id: str) -> ContainerReport | None:
        """The report of a container the engine still has, or None."""
        try:
            attrs = client.api.inspect_container(container_id)
            raw = client.api.logs(container_id, stdout=True, stderr=True, tail=OUTPUT_LINES)
        except docker.errors.NotFound:
            return None
        state = attrs.get("State") or {}
        running = state.get("Status") == "running"
        return cls(
            container_id=container_id,
            status=str(state.get("Status") or "unknown"),
            exit_code=None if running else state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
            output=raw.decode("utf-8", errors="replace").rstrip(),
        )

    @property
    def exited(self) -> bool:
        return self.status in ("exited", "dead")

    def last_line(self) -> str:
        lines = [line for line in self.output.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def headline(self) -> str:
        """One line: how the container ended, and the last thing it said."""
        if not self.exited:
            said = f" Its last line: {self.last_line()}" if self.last_line() else ""
            return f"The run container {self.container_id[:12]} is {self.status}.{said}"
        oom = " (OOM-killed)" if self.oom_killed else ""
        error = f", engine error: {self.error}" if self.error else ""
        said = f" Its last line: {self.last_line()}" if self.last_line() else ""
        return (
            f"The run container {self.container_id[:12]} exited with code "
            f"{self.exit_code}{oom}{error}.{said}"
        )

    def text(self) -> str:
        lines = len(self.output.splitlines())
        body = self.output or "(no output)"
        return f"{self.headline()}\nIts last {lines} lines of output:\n{body}"

    def metadata(self) -> dict[str, Any]:
        return {
            CONTAINER_HEADLINE_KEY: MetadataValue.text(self.headline()),
            CONTAINER_EXIT_CODE_KEY: MetadataValue.int(
                self.exit_code if self.exit_code is not None else -1
            ),
            CONTAINER_OOM_KEY: MetadataValue.bool(self.oom_killed),
            CONTAINER_OUTPUT_KEY: MetadataValue.text(self.output),
        }


def with_volumes(configured: Any, extra: list[str]) -> Any:
    """docker-py's ``volumes`` (a list of ``host:container[:mode]`` or a dict) plus ``extra``."""
    if isinstance(configured, dict):
        added = {}
        for item in extra:
            host, bind, mode = item.split(":")
            added[host] = {"bind": bind, "mode": mode}
        return {**configured, **added}
    return [*(configured or []), *extra]


def container_death(client: Any, container_id: str) -> str:
    """``The container exited with code 137 (OOM-killed).`` from the engine's event log, or ""."""
    now = int(time.time())
    events = client.events(
        since=now - 24 * 3600,
        until=now + 1,
        filters={"container": container_id, "event": ["oom", "die"]},
        decode=True,
    )
    oom, exit_code = False, None
    for event in events:
        oom = oom or event.get("status") == "oom"
        if event.get("status") == "die":
            exit_code = event.get("Actor", {}).get("Attributes", {}).get("exitCode")
    if exit_code is None and not oom:
        return ""
    return f"The container exited with code {exit_code}" + (" (OOM-killed)." if oom else ".")
