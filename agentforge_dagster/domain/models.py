"""Pydantic models of an order and of every artifact a step produces for it.

Every artifact is JSON-serialisable and validates against its model, so a stored artifact can be
read by an operator and loaded back by a later run.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from agentforge_dagster.domain.errors import InvalidOrder

MAX_BRIEF_CHARS = 20_000
MAX_PRICE = Decimal("100000")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_chars(value: str) -> str:
    if _CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters (NUL, escape codes, ...)")
    return value


_NoControlChars = AfterValidator(_no_control_chars)
CustomerName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), _NoControlChars
]
Brief = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=10, max_length=MAX_BRIEF_CHARS),
    _NoControlChars,
]


class ServiceKind(StrEnum):
    """What the business sells; each kind has its own deliverable outline."""

    BLOG_POST = "blog_post"
    PRODUCT_DESCRIPTION = "product_description"
    EMAIL_CAMPAIGN = "email_campaign"
    PRESS_RELEASE = "press_release"


ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


def new_order_id() -> str:
    return "ord-" + uuid.uuid4().hex[:12]


class Artifact(BaseModel):
    """Base of all artifacts: immutable, strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Order(Artifact):
    order_id: Annotated[str, StringConstraints(pattern=ORDER_ID_PATTERN)] = Field(
        default_factory=new_order_id
    )
    customer: CustomerName
    service: ServiceKind
    brief: Brief
    price: Annotated[Decimal, Field(gt=0, le=MAX_PRICE, max_digits=9, decimal_places=2)]

    @property
    def price_cents(self) -> int:
        return int(self.price * 100)


class PlanProposal(Artifact):
    """What a model is asked to return when planning an order."""

    title: str = Field(min_length=1, max_length=300)
    sections: list[str] = Field(min_length=1, max_length=12)
    tone: str
    word_target: int = Field(gt=0, le=5000)
    keywords: list[str]


class Plan(Artifact):
    order_id: str
    title: str
    sections: list[str] = Field(min_length=1)
    tone: str
    word_target: int = Field(gt=0)
    keywords: list[str]


class DraftSection(Artifact):
    heading: str
    body: str


class DraftProposal(Artifact):
    """What a model is asked to return when drafting or revising a deliverable."""

    title: str = Field(min_length=1, max_length=300)
    sections: list[DraftSection] = Field(min_length=1, max_length=12)


class Draft(Artifact):
    order_id: str
    title: str
    sections: list[DraftSection]
    revision: int = Field(ge=0)
    model: str

    def as_markdown(self) -> str:
        parts = [f"# {self.title}"]
        parts += [f"## {section.heading}\n\n{section.body}" for section in self.sections]
        return "\n\n".join(parts) + "\n"


class Review(Artifact):
    order_id: str
    approved: bool
    issues: list[str]
    revisions: int = Field(ge=0)
    final_draft: Draft


class Delivery(Artifact):
    order_id: str
    delivery_id: str
    location: str
    content_sha256: str
    delivered_at: datetime


class Invoice(Artifact):
    order_id: str
    invoice_id: str
    amount_cents: int = Field(gt=0)
    issued_at: datetime


ARTIFACT_TYPES: dict[str, type[Artifact]] = {
    cls.__name__: cls for cls in (Order, Plan, Draft, Review, Delivery, Invoice)
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def _describe(error: Mapping[str, Any]) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "order"
    message = error["msg"]
    if error["type"] == "missing":
        return f"{field}: field required"
    if error["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    ctx = error.get("ctx") or {}
    if error["type"] in ("string_too_long", "too_long"):
        return f"{field}: too long (at most {ctx.get('max_length')} characters)"
    if error["type"] in ("string_too_short", "too_short"):
        return f"{field}: too short (at least {ctx.get('min_length')} characters)"
    return f"{field}: {message}"


def parse_order(raw: bytes | str | dict[str, Any]) -> Order:
    """Validate an incoming order from JSON bytes, JSON text or a mapping.

    Raises :class:`InvalidOrder` with one message per offending field; never anything else.
    """
    data: Any
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidOrder([f"order: not UTF-8 text (bad byte at offset {exc.start})"]) from exc
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidOrder([f"order: not valid JSON ({exc.msg} at line {exc.lineno})"]) from exc
    else:
        data = raw
    if not isinstance(data, dict):
        raise InvalidOrder([f"order: expected a JSON object, got {type(data).__name__}"])
    try:
        return Order.model_validate(data)
    except ValidationError as exc:
        raise InvalidOrder([_describe(err) for err in exc.errors()]) from exc
