"""Deliverables in a versioned S3 bucket (the moto server), and the customer's link made on demand."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from agentforge_dagster.cli import main
from agentforge_dagster.domain.models import Delivery, utcnow
from agentforge_dagster.persistence.deliverables import (
    LocalDeliverables,
    NotLinkable,
    S3Deliverables,
    parse_duration,
    parse_s3_location,
    presigned_link,
)
from agentforge_dagster.persistence.io_managers_s3 import ensure_bucket
from agentforge_dagster.persistence.store import BusinessStore

pytestmark = pytest.mark.service


@pytest.fixture
def deliverables(s3_client: Any, s3_bucket: str) -> S3Deliverables:
    ensure_bucket(s3_client, s3_bucket)
    return S3Deliverables(s3_client, s3_bucket)


def test_a_delivery_is_a_versioned_object_and_its_location_names_the_version(
    deliverables: S3Deliverables, s3_client: Any, s3_bucket: str
) -> None:
    first = deliverables.put("ord-1", b"# The deliverable\n")
    second = deliverables.put("ord-1", b"# Written over\n")

    where = parse_s3_location(first)
    assert where is not None and where.bucket == s3_bucket and where.key == "deliveries/ord-1.md"
    assert where.version_id and where.version_id != parse_s3_location(second).version_id  # type: ignore[union-attr]
    assert deliverables.read(first) == b"# The deliverable\n", (
        "the recorded version, not the newest"
    )
    assert deliverables.read(second) == b"# Written over\n"
    head = s3_client.head_object(Bucket=s3_bucket, Key=where.key, VersionId=where.version_id)
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"# The deliverable\n").hexdigest()
    assert deliverables.read(f"s3://{s3_bucket}/deliveries/never.md") is None


def test_durations_and_limits_of_a_link(deliverables: S3Deliverables, tmp_path: Path) -> None:
    assert [parse_duration(t) for t in ("90s", "15m", "1h", "7d", "30")] == [
        90,
        900,
        3600,
        7 * 86400,
        30,
    ]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    location = deliverables.put("ord-2", b"x")
    with pytest.raises(NotLinkable, match="7 days"):
        presigned_link(deliverables.client, location, 8 * 86400)
    local = LocalDeliverables(tmp_path).put("ord-2", b"x")
    with pytest.raises(NotLinkable, match="local file"):
        presigned_link(deliverables.client, local, 3600)


def test_the_link_command_prints_a_working_link_and_stores_it_nowhere(
    deliverables: S3Deliverables,
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "agentforge"
    for key, value in {
        "AGENTFORGE_HOME": str(home),
        "AGENTFORGE_S3_BUCKET": s3_bucket,
        "AGENTFORGE_S3_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AGENTFORGE_DATABASE_URL", raising=False)
    store = BusinessStore.opened(f"sqlite:///{home / 'agentforge.db'}")
    content = b"# For the customer\n"
    store.deliveries.record_delivery(
        Delivery(
            order_id="ord-3",
            delivery_id="dlv-ord-3",
            location=deliverables.put("ord-3", content),
            content_sha256=hashlib.sha256(content).hexdigest(),
            delivered_at=utcnow(),
        )
    )

    done = CliRunner().invoke(main, ["delivery", "link", "ord-3", "--expires", "1h"])
    assert done.exit_code == 0, done.output
    link = done.output.strip()
    query = parse_qs(urlsplit(link).query)
    assert query["versionId"] and query.get("X-Amz-Expires", query.get("Expires"))
    with urllib.request.urlopen(link, timeout=10) as answer:
        assert (
            hashlib.sha256(answer.read()).hexdigest()
            == store.deliveries.delivery("ord-3").content_sha256
        )  # type: ignore[union-attr]
    signature = (query.get("X-Amz-Signature") or query["Signature"])[0]
    [made] = [
        row for row in store.audit.audit_rows("ord-3") if row["event"] == "delivery_link_made"
    ]
    assert made["detail"]["version_id"] == query["versionId"][0]
    everything = repr(store.audit.audit_rows()) + repr(store.deliveries.delivery("ord-3"))
    assert signature not in everything and link not in everything

    missing = CliRunner().invoke(main, ["delivery", "link", "ord-none"])
    assert missing.exit_code == 1 and "has no delivery" in missing.output
    store.engine.dispose()
