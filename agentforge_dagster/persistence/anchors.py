"""Anchors: the audit chain's head witnessed outside the database.

The hash chain shows a row changed in the middle, but someone who can write to the database can
delete the last rows, or rewrite them and recompute their hashes, and the chain still verifies. An
anchor — ``{seq, row_hash, rows, written_at}``, HMAC-SHA256-signed when a key is configured — is
written beside the backups (``anchors/<timestamp>.json`` in the same folder or S3 prefix) by the
hourly ``audit_anchor`` schedule, by every backup and by ``agentforge audit anchor``. Verifying
against the newest anchors finds a tail cut off (the anchored row is gone) or rewritten (it has
another hash) up to the newest anchor; rows written after it have no outside witness.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel
from sqlalchemy import func, select

from agentforge_dagster.domain.errors import PermanentError
from agentforge_dagster.persistence.schema import audit_log

if TYPE_CHECKING:
    from agentforge_dagster.persistence.backup_locations import BackupLocation
    from agentforge_dagster.persistence.store import BusinessStore

ANCHOR_FOLDER = "anchors"
NEWEST_CHECKED = 24  # a day of hourly anchors: the newest authentic one is what counts
# A week of hourly anchors is kept. An older anchor adds no witness: the newest one fixes the hash
# of its row, and every row before it is chained to that one.
ANCHORS_KEPT = 24 * 7


class AnchorKeyError(PermanentError):
    """The configured anchor key cannot be read."""


class Anchor(BaseModel):
    """The chain's head at one moment: its last row's seq and hash, and how many rows it had."""

    seq: int | None
    row_hash: str | None
    rows: int
    written_at: datetime
    source: str = "schedule"
    hmac: str | None = None

    def canonical(self) -> bytes:
        fields = self.model_dump(mode="json", exclude={"hmac"})
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def signature(self, key: bytes) -> str:
        return hmac.new(key, self.canonical(), hashlib.sha256).hexdigest()


def load_anchor_key(key: str | None, key_file: str | Path | None) -> bytes | None:
    """The signing key: the file's content (trailing whitespace dropped) if given, else ``key``."""
    if key_file:
        try:
            text = Path(key_file).read_text().strip()
        except OSError as exc:
            raise AnchorKeyError(
                f"cannot read the audit anchor key file {key_file} ({exc.strerror}): "
                "fix AGENTFORGE_AUDIT_ANCHOR_KEY_FILE"
            ) from exc
        if not text:
            raise AnchorKeyError(f"the audit anchor key file {key_file} is empty")
        return text.encode()
    return key.encode() if key else None


def chain_head(store: BusinessStore, source: str = "schedule") -> Anchor:
    """The chain's current head as an (unsigned) anchor, read in one transaction."""
    with store.engine.begin() as conn:
        head = conn.execute(
            select(audit_log.c.seq, audit_log.c.row_hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).one_or_none()
        rows = int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())
    return Anchor(
        seq=head.seq if head else None,
        row_hash=head.row_hash if head else None,
        rows=rows,
        written_at=datetime.now(UTC),
        source=source,
    )


def write_anchor(
    store: BusinessStore,
    location: BackupLocation,
    key: bytes | None = None,
    *,
    source: str = "schedule",
    anchor: Anchor | None = None,
) -> tuple[Anchor, str]:
    """Write the chain's head (or ``anchor``) to ``location``; returns it and its file name.

    Only the newest :data:`ANCHORS_KEPT` anchors are kept there.
    """
    anchor = anchor or chain_head(store, source)
    if key is not None:
        anchor = anchor.model_copy(update={"hmac": anchor.signature(key)})
    name = f"{anchor.written_at:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:6]}.json"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(anchor.model_dump_json(indent=2))
        location.put(ANCHOR_FOLDER, name, path)
    for old in sorted(location.names(ANCHOR_FOLDER))[:-ANCHORS_KEPT]:
        location.remove(ANCHOR_FOLDER, old)
    return anchor, name


@dataclass(frozen=True)
class AnchorReport:
    """What the newest anchors say about the chain's tail."""

    checked: int
    newest: Anchor | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read(location: BackupLocation, name: str) -> Anchor:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        location.get(ANCHOR_FOLDER, name, path)
        return Anchor.model_validate_json(path.read_text())


def verify_against_anchors(
    store: BusinessStore,
    location: BackupLocation,
    key: bytes | None = None,
    *,
    newest: int = NEWEST_CHECKED,
) -> AnchorReport:
    """Check that each of the newest anchors' rows is still in the chain with the same hash.

    With a key, an anchor without a valid signature is reported as forged and not trusted.
    """
    problems: list[str] = []
    checked, newest_trusted = 0, None
    for name in sorted(location.names(ANCHOR_FOLDER), reverse=True)[:newest]:
        try:
            anchor = _read(location, name)
        except ValueError as exc:  # pydantic's ValidationError included
            problems.append(f"anchor {name} unreadable: {str(exc).splitlines()[0]}")
            continue
        if key is not None and not (
            anchor.hmac and hmac.compare_digest(anchor.hmac, anchor.signature(key))
        ):
            problems.append(
                f"anchor {name} forged: its signature does not match the configured key"
            )
            continue
        checked += 1
        newest_trusted = newest_trusted or anchor
        if anchor.seq is None:
            continue
        with store.engine.connect() as conn:
            row_hash = conn.execute(
                select(audit_log.c.row_hash).where(audit_log.c.seq == anchor.seq)
            ).scalar_one_or_none()
        when = f"anchored {anchor.written_at:%Y-%m-%d %H:%M:%S} UTC by {anchor.source}"
        if row_hash is None:
            problems.append(
                f"truncated: row {anchor.seq} ({when}, {anchor.rows} rows then) is missing"
            )
            break  # older anchors would only repeat it
        elif row_hash != anchor.row_hash:
            problems.append(
                f"rewritten tail: row {anchor.seq} has another hash than the one {when}"
            )
            break
    return AnchorReport(checked, newest_trusted, problems)
