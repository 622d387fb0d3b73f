"""``agentforge delivery``: what was delivered, and a time-limited link for the customer.

    agentforge delivery show ORDER                # where the deliverable is, and its SHA-256
    agentforge delivery link ORDER --expires 1h   # a presigned GET of exactly that version

The link is printed and nothing else: it is not stored, logged or written to the audit trail
(whoever holds it can read the object until it expires). The trail records that a link was made,
by whom and until when.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from agentforge_dagster.cli.common import default_actor, open_store

if TYPE_CHECKING:
    from agentforge_dagster.domain.models import Delivery
    from agentforge_dagster.persistence.store import BusinessStore
    from agentforge_dagster.settings import AgentForgeSettings


def _delivered(settings: AgentForgeSettings, order_id: str) -> tuple[BusinessStore, Delivery]:
    store = open_store(settings)
    found = store.deliveries.delivery(order_id)
    if found is None:
        raise click.ClickException(f"order {order_id} has no delivery (yet)")
    return store, found


@click.group("delivery")
def delivery() -> None:
    """Delivered deliverables: where they are, and links for customers."""


@delivery.command("show")
@click.argument("order_id")
@click.pass_obj
def delivery_show(settings: AgentForgeSettings, order_id: str) -> None:
    """Where ORDER's deliverable is, its SHA-256 and when it was delivered."""
    _, found = _delivered(settings, order_id)
    click.echo(f"{found.order_id}  {found.delivered_at.isoformat(timespec='seconds')}")
    click.echo(f"  location  {found.location}")
    click.echo(f"  sha256    {found.content_sha256}")


@delivery.command("link")
@click.argument("order_id")
@click.option("--expires", default="1h", show_default=True, help="Validity: 90s, 15m, 1h, 7d.")
@click.pass_obj
def delivery_link(settings: AgentForgeSettings, order_id: str, expires: str) -> None:
    """Print a presigned link to ORDER's delivered version (S3 deliveries only)."""
    from agentforge_dagster.persistence.deliverables import (
        NotLinkable,
        parse_duration,
        parse_s3_location,
        presigned_link,
    )

    try:
        seconds = parse_duration(expires)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from exc
    store, found = _delivered(settings, order_id)
    where = parse_s3_location(found.location)
    from dagster_aws.s3 import S3Resource  # only this command needs the AWS SDK

    client = S3Resource(
        endpoint_url=settings.s3.endpoint_url, region_name=settings.s3.region
    ).get_client()
    try:
        link = presigned_link(client, found.location, seconds)
    except NotLinkable as exc:
        raise click.ClickException(str(exc)) from exc
    assert where is not None  # presigned_link refuses anything else
    store.audit.record_event(
        "delivery_link_made",
        order_id=order_id,
        detail={
            "actor": default_actor(),
            "object": f"s3://{where.bucket}/{where.key}",
            "version_id": where.version_id,
            "expires_at": (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(
                timespec="seconds"
            ),
        },
    )
    click.echo(link)
