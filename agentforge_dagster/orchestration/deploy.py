"""Deploy and roll back the image of the code location, one command each.

A deploy starts a code-server container from the new image on the location's port, waits until it
answers gRPC health checks, and only then stops the one it replaces, so the daemon and webserver
never lose the location. Both can listen at once: the containers share the host's network and the
gRPC server binds with ``SO_REUSEPORT``. The new server carries ``DAGSTER_CURRENT_IMAGE``, so runs
launched from it run in the same image; runs already running keep their own containers and image.

Every switch is appended to a history file, so ``rollback`` knows the image to go back to.

Secrets go in as files: with a secrets folder (``AGENTFORGE_SECRETS_DIR``, one file per variable,
named in lower case), the folder is mounted read-only at ``/run/secrets``, the server gets
``NAME_FILE`` for each file, and ``NAME`` itself is not passed, whatever the deployer's shell holds;
the image's entrypoint reads the files. ``docker inspect`` of the server then shows no secret.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker.client
import docker.errors

from agentforge_dagster.domain.errors import AgentForgeError
from agentforge_dagster.execution.containers import ROLE_LABEL, SECRETS_MOUNT, trace_environment
from agentforge_dagster.settings import DeploySettings, defaults

CODE_SERVER_ROLE = "code-server"
PORT_LABEL = "agentforge/port"
IMAGE_LABEL = "agentforge/image"
LOCATION_NAME = "agentforge"
MODULE = "agentforge_dagster.definitions"
READY_LINE = "Started Dagster code proxy server"

# The service names of docker/compose.yaml, on the host's network (as its extra_hosts do).
SERVICE_HOSTS = {"user_code": "127.0.0.1", "postgres": "127.0.0.1", "minio": "127.0.0.1"}
# Passed from the deployer's environment to the code server: what its sensors need.
PASSED_PREFIXES = ("AGENTFORGE_", "DAGSTER_PG_", "AWS_")
# Host-side paths and the deploy's own settings mean nothing inside the container. The secrets
# folder is passed: the instance config names it (the run launcher mounts it into run
# containers), and a sensor that reads the instance's run launcher fails without it.
NOT_PASSED = frozenset(
    {
        "AGENTFORGE_HOME",
        "AGENTFORGE_IMAGE",
        "AGENTFORGE_IMAGE_ID",
        "AGENTFORGE_DEPLOY_HISTORY",
        "AGENTFORGE_ARTIFACTS_DIR",
        "AGENTFORGE_DELIVERIES_DIR",
        "AGENTFORGE_BACKUP_DIR",
        "AGENTFORGE_DROP_DIR",
    }
)


class DeployError(AgentForgeError):
    """A deploy or roll-back that did not happen; the serving code server was left as it was."""

    error_class = "deploy"


@dataclass(frozen=True)
class Deployment:
    """One switch of the code location's image, as kept in the history file."""

    image: str
    image_id: str
    container: str
    port: int
    action: str
    deployed_at: str


def code_server_environment(
    environ: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The deployer's AGENTFORGE_/DAGSTER_PG_/AWS_ variables (no host paths) and its set trace
    variables (docs/traces.md), then ``extra``."""
    passed = {
        key: value
        for key, value in environ.items()
        if key.startswith(PASSED_PREFIXES) and key not in NOT_PASSED
    }
    return {**passed, **trace_environment(environ), **(extra or {})}


def secret_files(secrets_dir: Path | None) -> dict[str, str]:
    """``NAME_FILE`` → its path in the container, for each file of the host's secrets folder."""
    if secrets_dir is None:
        return {}
    if not secrets_dir.is_dir():
        raise DeployError(f"the secrets folder {secrets_dir} does not exist")
    return {
        f"{path.name.upper()}_FILE": f"{SECRETS_MOUNT}/{path.name}"
        for path in sorted(secrets_dir.iterdir())
        if path.is_file() and not path.name.startswith(".")
    }


def read_history(path: Path) -> list[Deployment]:
    if not path.exists():
        return []
    return [Deployment(**row) for row in json.loads(path.read_text())]


def _append_history(path: Path, entry: Deployment) -> None:
    """Append by writing a new file and renaming it, so a crash never leaves half a history."""
    rows = [asdict(row) for row in read_history(path)] + [asdict(entry)]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(rows, indent=2) + "\n")
    temporary.replace(path)


def code_servers(client: Any, port: int) -> list[Any]:
    """Running code-server containers of the location on ``port``, oldest first."""
    found = client.containers.list(
        filters={"label": [f"{ROLE_LABEL}={CODE_SERVER_ROLE}", f"{PORT_LABEL}={port}"]}
    )
    return sorted(found, key=lambda container: container.attrs["Created"])


def code_server_command(host: str, port: int) -> list[str]:
    """The image's own server command, on the deploy's address and port."""
    return [
        *("dagster", "code-server", "start", "-h", host, "-p", str(port)),
        *("-m", MODULE, "--location-name", LOCATION_NAME),
    ]


_DEPLOY = defaults(DeploySettings)  # the settings' defaults, written once in settings.py


def deploy(
    image: str,
    *,
    port: int,
    history: Path,
    host: str = _DEPLOY.code_server_host,
    environment: Mapping[str, str] | None = None,
    timeout_seconds: float = _DEPLOY.timeout_seconds,
    action: str = "deploy",
    client: Any = None,
    secrets_dir: Path | None = None,
) -> Deployment:
    """Serve the location from ``image``; the previous code server stops once this one is up."""
    files = secret_files(secrets_dir)
    passed = {
        key: value
        for key, value in (environment or {}).items()
        if f"{key}_FILE" not in files  # held in a file: never passed as a value
    }
    client = client or docker.client.from_env()
    try:
        image_id = str(client.images.get(image).id)
    except docker.errors.ImageNotFound as exc:
        raise DeployError(
            f"image {image} is not in the local engine: build it (docker/build-image.sh)"
        ) from exc
    previous = code_servers(client, port)
    container = client.containers.create(
        image,
        command=code_server_command(host, port),
        name=f"agentforge-code-{port}-{uuid.uuid4().hex[:8]}",
        network_mode="host",
        extra_hosts=SERVICE_HOSTS,
        environment={
            **passed,
            **files,
            "DAGSTER_CURRENT_IMAGE": image,
            "DAGSTER_RUN_IMAGE": image,
            "AGENTFORGE_IMAGE": image,
            "AGENTFORGE_IMAGE_ID": image_id,
        },
        labels={ROLE_LABEL: CODE_SERVER_ROLE, PORT_LABEL: str(port), IMAGE_LABEL: image},
        restart_policy={"Name": "unless-stopped"},
        volumes=[f"{secrets_dir.resolve()}:{SECRETS_MOUNT}:ro"] if files and secrets_dir else [],
        # The image's non-root user, no capabilities, a read-only root with writable scratch.
        security_opt=["no-new-privileges"],
        cap_drop=["ALL"],
        read_only=True,
        tmpfs={
            "/tmp": "rw,nosuid,nodev,size=256m",
            "/opt/dagster/dagster_home": "rw,size=64m,uid=10001,gid=10001",
        },
    )
    try:
        container.start()
        _wait_healthy(container, port, timeout_seconds)
    except docker.errors.APIError as exc:
        container.remove(force=True)
        raise DeployError(f"the code server from {image} did not start: {exc}") from exc
    except DeployError:
        container.remove(force=True)
        raise
    for old in previous:
        old.stop(timeout=30)
        old.remove()
    entry = Deployment(
        image=image,
        image_id=image_id,
        container=str(container.name),
        port=port,
        action=action,
        deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _append_history(history, entry)
    return entry


def _wait_healthy(container: Any, port: int, timeout_seconds: float) -> None:
    """Until this container has bound the port and answers a gRPC health check from inside."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        container.reload()
        if container.status not in ("created", "running", "restarting"):
            raise DeployError(
                f"the code server exited ({container.status}) before it was healthy:\n"
                + container.logs(tail=30).decode("utf-8", "replace")
            )
        if container.status == "running" and READY_LINE in container.logs().decode(
            "utf-8", "replace"
        ):
            probe = container.exec_run(["dagster", "api", "grpc-health-check", "-p", str(port)])
            if probe.exit_code == 0:
                return
        time.sleep(1)
    raise DeployError(
        f"the code server was not healthy within {timeout_seconds:.0f} s:\n"
        + container.logs(tail=30).decode("utf-8", "replace")
    )


def previous_image(history: list[Deployment]) -> str:
    """The image served before the current one."""
    if not history:
        raise DeployError("nothing deployed yet: no history to roll back in")
    current = history[-1].image
    for entry in reversed(history):
        if entry.image != current:
            return entry.image
    raise DeployError(f"only {current} was ever deployed: nothing to roll back to")


def rollback(*, port: int, history: Path, **kwargs: Any) -> Deployment:
    """Deploy again the image that served before the current one."""
    return deploy(
        previous_image(read_history(history)),
        port=port,
        history=history,
        action="rollback",
        **kwargs,
    )


def environment_from_os(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return code_server_environment(os.environ, extra)
