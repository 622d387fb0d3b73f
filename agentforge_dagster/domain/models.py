"""Pydantic models of an order and of every artifact a step produces for it.

Every artifact is JSON-serialisable and validates against its model, so a stored artifact can be
read by an operator and loaded back by a later run.
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from agentforge_dagster.domain.errors import InvalidOrder
from agentforge_dagster.domain.services import ServiceKind

MAX_BRIEF_CHARS = 20_000
MAX_PRICE = Decimal("100000")
MAX_PRICE_CHARS = 20  # "100000.00" is 9; anything this long is not a price, whatever it says
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 but tab/CR/LF, C1
# Bidirectional controls reorder what a reader sees ("Trojan Source"): never in a name.
_BIDI_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)
# Characters that draw nothing although Unicode does not class them as format or space.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")
_PRICE_NOTATION = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?", re.ASCII)


def _no_control_chars(value: str) -> str:
    if _CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters (NUL, escape codes, ...)")
    return value


def _visible_name(value: str) -> str:
    """NFC-normalise a name and refuse what would hide or disguise it.

    Controls (C0, C1), line breaks and bidi controls are refused; zero-width joiners and
    non-joiners stay, as they are part of the spelling of names in many scripts, but a name
    must have at least one character that draws something.
    """
    value = unicodedata.normalize("NFC", value)
    for char in value:
        category = unicodedata.category(char)
        if category in ("Zl", "Zp") or char in "\n\r\x0b\x0c\x85":
            raise ValueError("must be one line (no line breaks)")
        if category == "Cc":
            raise ValueError(f"must not contain control characters (U+{ord(char):04X})")
        if char in _BIDI_CONTROLS:
            raise ValueError(f"must not contain bidirectional controls (U+{ord(char):04X})")
    if all(
        unicodedata.category(char) in ("Cf", "Zs", "Mn", "Me") or char in _BLANK_LETTERS
        for char in value
    ):
        raise ValueError("must contain visible characters (only invisible ones were given)")
    return value


class JsonNumber:
    """A number as written in JSON text, kept as text so a price's notation can be checked.

    Converting it is left to the field that receives it: ``int()`` of a 5,000-digit literal
    raises, and a float would lose the cents.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"JsonNumber({self.text!r})"


def _price_notation(value: Any) -> Any:
    """Only ASCII decimal notation is a price: ``120``, ``120.5``, ``120.50`` (and a sign).

    Full-width or other non-ASCII digits, ``1_0.00``, exponents, NaN and very long numbers are
    refused here, although ``Decimal()`` would take them.
    """
    if isinstance(value, bool):
        raise PydanticCustomError("decimal_type", "Input should be a number, like 120.50")
    if isinstance(value, JsonNumber):
        value = value.text
    elif isinstance(value, int):
        if value.bit_length() > 64:
            raise PydanticCustomError("decimal_max_digits", "too many digits for a price")
        value = str(value)
    elif isinstance(value, float):
        value = repr(value)
    elif isinstance(value, Decimal):
        if not value.is_finite() or abs(value.adjusted()) > MAX_PRICE_CHARS:
            raise PydanticCustomError("decimal_max_digits", "too many digits for a price")
        value = format(value, "f")
    if not isinstance(value, str):
        return value  # the field's own validation says what it expects
    text = value.strip()
    if len(text) > MAX_PRICE_CHARS:
        raise PydanticCustomError(
            "decimal_max_digits",
            "too many digits for a price ({length} characters)",
            {"length": len(text)},
        )
    if not _PRICE_NOTATION.fullmatch(text):
        raise PydanticCustomError(
            "decimal_parsing",
            "Input should be a valid decimal in ASCII digits, like 120.50 "
            "(no exponent, no _ or , separators, no other digits)",
        )
    return text


_NoControlChars = AfterValidator(_no_control_chars)
CustomerName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_visible_name),
]
Brief = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=10, max_length=MAX_BRIEF_CHARS),
    _NoControlChars,
]


# The sections every deliverable of a service covers: a plan leaves none out (the plan's check).
SERVICE_OUTLINES: dict[str, tuple[str, ...]] = {
    "blog_post": ("Introduction", "Why it matters", "How to do it", "Conclusion"),
    "product_description": ("Overview", "Features", "Who it is for"),
    "email_campaign": ("Subject line", "Opening", "Offer", "Call to action"),
    "press_release": ("Headline", "Summary", "Details", "Quote", "About"),
}

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
    price: Annotated[
        Decimal,
        Field(gt=0, le=MAX_PRICE, max_digits=9, decimal_places=2),
        BeforeValidator(_price_notation),
    ]

    require_approval: bool = Field(
        default=False, description="Hold the reviewed deliverable for a person's approval."
    )

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
    """The review's verdict on the final draft, and whether the order is held for a person.

    ``approved`` is the review's own verdict; ``hold`` says the order waits for a decision
    (``quarantined``: the review or a policy rule objects; ``awaiting_approval``: the business
    wants a person to approve it), with the hold's id in the store. A held review is delivered
    only once a person approves or edits it.
    """

    order_id: str
    approved: bool
    issues: list[str]
    revisions: int = Field(ge=0)
    final_draft: Draft
    hold: Literal["quarantined", "awaiting_approval"] | None = None
    hold_id: int | None = None


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


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def load_order_json(text: str | bytes) -> Any:
    """Parse JSON as intake reads it: duplicate keys refused, numbers kept as written.

    Raises :class:`InvalidOrder` naming the problem (bad UTF-8, bad JSON, a key given twice,
    nesting deeper than the parser can follow); never anything else.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidOrder([f"order: not UTF-8 text (bad byte at offset {exc.start})"]) from exc
    try:
        return json.loads(
            text, object_pairs_hook=_unique_keys, parse_int=JsonNumber, parse_float=JsonNumber
        )
    except json.JSONDecodeError as exc:
        raise InvalidOrder([f"order: not valid JSON ({exc.msg} at line {exc.lineno})"]) from exc
    except _DuplicateKey as exc:
        field = exc.key if len(exc.key) <= 80 else exc.key[:80] + "…"
        raise InvalidOrder([f"{field}: given twice (duplicate JSON keys are refused)"]) from exc
    except RecursionError as exc:
        raise InvalidOrder(["order: JSON nested too deeply to read"]) from exc


def parse_order(raw: Any, *, default_order_id: str | None = None) -> Order:
    """Validate an incoming order from JSON bytes, JSON text or a mapping.

    ``default_order_id`` is the id of an order that does not name its own (the drop folder's
    stable ids). Raises :class:`InvalidOrder` with one message per offending field; never
    anything else.
    """
    data: Any = load_order_json(raw) if isinstance(raw, bytes | str) else raw
    if not isinstance(data, dict):
        raise InvalidOrder([f"order: expected a JSON object, got {type(data).__name__}"])
    if default_order_id is not None and "order_id" not in data:
        data = {"order_id": default_order_id, **data}
    try:
        return Order.model_validate(data)
    except ValidationError as exc:
        raise InvalidOrder([_describe(err) for err in exc.errors()]) from exc
