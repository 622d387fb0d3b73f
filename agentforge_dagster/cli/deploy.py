"""``agentforge deploy`` / ``rollback`` / ``deploys``: switch the code location's image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # docker and the deploy machinery load when a deploy runs, not for --help
    from agentforge_dagster.orchestration.deploy import Deployment
    from agentforge_dagster.settings import AgentForgeSettings


def _history(settings: AgentForgeSettings) -> Path:
    return settings.deploy.history or settings.storage.home / "deploys.json"


def _env_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    extra = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: use KEY=VALUE", param_hint="--env")
        extra[key] = value
    return extra


def _echo(entry: Deployment) -> None:
    click.echo(
        f"{entry.action}: {entry.image} ({entry.image_id[:19]}) serving on port {entry.port} "
        f"in {entry.container}"
    )


@click.command("deploy")
@click.option("--image", help="Image tag to serve the code location from.")
@click.option("--rollback", "to_previous", is_flag=True, help="Go back to the previous image.")
@click.option("--port", type=int, help="Code server port (default AGENTFORGE_CODE_SERVER_PORT).")
@click.option("--env", "env_pairs", multiple=True, help="KEY=VALUE for the code server; repeat.")
@click.pass_obj
def deploy_command(
    settings: AgentForgeSettings,
    image: str | None,
    to_previous: bool,
    port: int | None,
    env_pairs: tuple[str, ...],
) -> None:
    """Start a code server from IMAGE, wait until healthy, then stop the previous one.

    The server gets the AGENTFORGE_*, DAGSTER_PG_* and AWS_* variables of this shell (host paths
    excepted) and DAGSTER_CURRENT_IMAGE, so new runs use the same image. Running runs keep theirs.
    With AGENTFORGE_SECRETS_DIR, its files are mounted and passed as NAME_FILE, never as values.
    """
    import docker.errors

    from agentforge_dagster.orchestration.deploy import DeployError, environment_from_os
    from agentforge_dagster.orchestration.deploy import deploy as deploy_image
    from agentforge_dagster.orchestration.deploy import rollback as rollback_image

    if to_previous == (image is not None):
        raise click.UsageError("give --image TAG or --rollback")
    common: dict[str, Any] = {
        "port": port or settings.deploy.code_server_port,
        "history": _history(settings),
        "host": settings.deploy.code_server_host,
        "environment": environment_from_os(_env_pairs(env_pairs)),
        "timeout_seconds": settings.deploy.timeout_seconds,
        "secrets_dir": settings.deploy.secrets_dir,
    }
    try:
        entry = rollback_image(**common) if image is None else deploy_image(image, **common)
    except (DeployError, docker.errors.DockerException) as exc:
        raise click.ClickException(str(exc)) from exc
    _echo(entry)


@click.command("rollback")
@click.option("--port", type=int, help="Code server port (default AGENTFORGE_CODE_SERVER_PORT).")
@click.option("--env", "env_pairs", multiple=True, help="KEY=VALUE for the code server; repeat.")
@click.pass_context
def rollback_command(ctx: click.Context, port: int | None, env_pairs: tuple[str, ...]) -> None:
    """Serve the code location from the image deployed before the current one."""
    ctx.invoke(deploy_command, image=None, to_previous=True, port=port, env_pairs=env_pairs)


@click.command("deploys")
@click.pass_obj
def deploys_command(settings: AgentForgeSettings) -> None:
    """The history of deploys and roll-backs, newest last."""
    from agentforge_dagster.orchestration.deploy import read_history

    history = read_history(_history(settings))
    if not history:
        click.echo("nothing deployed yet")
    for entry in history:
        click.echo(
            f"{entry.deployed_at}  {entry.action:<8}  {entry.image}  {entry.image_id[:19]}  "
            f"port {entry.port}"
        )
