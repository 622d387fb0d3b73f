"""Intake validation: bad orders get one clear message per offending field."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from agentforge_dagster.domain.errors import InvalidOrder
from agentforge_dagster.domain.models import MAX_BRIEF_CHARS, Draft, parse_order
from agentforge_dagster.persistence.io_managers import dump_artifact, load_artifact

GOOD = {
    "customer": "Acme Ltd",
    "service": "blog_post",
    "brief": "Write about retries in data pipelines",
    "price": "120.50",
}


def errors_for(raw: object) -> list[str]:
    with pytest.raises(InvalidOrder) as caught:
        parse_order(raw)  # type: ignore[arg-type]
    return caught.value.errors


def test_a_good_order_parses_from_mapping_text_and_bytes() -> None:
    for raw in (GOOD, json.dumps(GOOD), json.dumps(GOOD).encode()):
        order = parse_order(raw)
        assert order.price == Decimal("120.50")
        assert order.price_cents == 12050
        assert order.order_id.startswith("ord-")


@pytest.mark.parametrize("field", sorted(GOOD))
def test_missing_field_is_named(field: str) -> None:
    raw = {k: v for k, v in GOOD.items() if k != field}
    assert errors_for(raw) == [f"{field}: field required"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"price": "-5"}, "price: Input should be greater than 0"),
        ({"price": "0"}, "price: Input should be greater than 0"),
        ({"price": "ten"}, "price: Input should be a valid decimal"),
        ({"price": "1.234"}, "price: Decimal input should have no more than 2 decimal places"),
        ({"service": "teleportation"}, "service: Input should be 'blog_post'"),
        ({"brief": ""}, "brief: too short (at least 10 characters)"),
        ({"brief": "          "}, "brief: too short (at least 10 characters)"),
        ({"brief": "x" * 1_000_000}, f"brief: too long (at most {MAX_BRIEF_CHARS} characters)"),
        ({"brief": 12345678901}, "brief: Input should be a valid string"),
        ({"customer": ["a"]}, "customer: Input should be a valid string"),
        ({"brief": "null byte \x00 in the brief"}, "brief: Value error, must not contain control"),
        ({"order_id": "../../etc/passwd"}, "order_id: String should match pattern"),
        ({"discount": "50%"}, "discount: unknown field"),
    ],
)
def test_bad_field_is_named(overrides: dict[str, object], expected: str) -> None:
    errors = errors_for({**GOOD, **overrides})
    assert len(errors) == 1
    assert errors[0].startswith(expected)


def test_several_bad_fields_are_all_reported() -> None:
    errors = errors_for({"customer": "", "service": "x", "brief": "short", "price": -1})
    assert [e.split(":")[0] for e in errors] == ["customer", "service", "brief", "price"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'\xff\xfe{"customer": 1}', "order: not UTF-8 text (bad byte at offset 0)"),
        (b'{"customer": "caf\xe9"}', "order: not UTF-8 text (bad byte at offset 17)"),
        ("{not json", "order: not valid JSON"),
        ("[1, 2]", "order: expected a JSON object, got list"),
        ("null", "order: expected a JSON object, got NoneType"),
    ],
)
def test_unreadable_payload_is_explained(raw: bytes | str, expected: str) -> None:
    assert errors_for(raw)[0].startswith(expected)


def test_hostile_strings_are_kept_verbatim_as_data() -> None:
    hostile = "Robert'); DROP TABLE orders;-- <script>alert(1)</script> {{7*7}} ${jndi:x}"
    order = parse_order({**GOOD, "customer": hostile[:200], "brief": hostile})
    assert order.brief == hostile


def test_artifacts_round_trip_as_readable_json() -> None:
    draft = Draft(order_id="o-1", title="T", sections=[], revision=0, model="m")
    raw = dump_artifact(draft)
    assert json.loads(raw)["type"] == "Draft"
    assert load_artifact(raw) == draft


GOOD_MEMBERS = json.dumps({k: v for k, v in GOOD.items() if k != "price"})[1:-1]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{" + GOOD_MEMBERS + ', "price": ' + "1" * 5000 + "}", "price: too many digits"),
        ("[" * 200_000 + "]" * 200_000, "order: JSON nested too deeply"),
        ('{"price": ' * 100_000 + "1" + "}" * 100_000, "order: JSON nested too deeply"),
        ("{" + GOOD_MEMBERS + ', "price": "1", "price": "200"}', "price: given twice"),
        ("{" + GOOD_MEMBERS + ', "price": {"x": 1, "x": 2}}', "x: given twice"),
    ],
)
def test_hostile_json_is_refused_naming_the_field(raw: str, expected: str) -> None:
    for payload in (raw, raw.encode()):
        assert errors_for(payload)[0].startswith(expected), errors_for(payload)


@pytest.mark.parametrize(
    "price",
    [
        "１２０.５０",
        "1_0.00",
        "1e2",
        "1E2",
        "0x10",
        "NaN",
        "Infinity",
        "1,50",
        " 1 2",
        "٣٤",
        "1" * 5000,
    ],
)
def test_prices_are_ascii_decimal_notation_only(price: str) -> None:
    [error] = errors_for({**GOOD, "price": price})
    assert error.startswith("price: ") and (
        "ASCII digits" in error or "too many digits" in error
    ), error


def test_json_numbers_are_read_as_written() -> None:
    order = parse_order(
        '{"customer": "A", "service": "blog_post", "brief": "Write about retries", "price": 19.99}'
    )
    assert order.price == Decimal("19.99")
    assert parse_order({**GOOD, "price": 20}).price == Decimal(20)
    assert errors_for(json.dumps({**GOOD, "price": 1e300}))[0].startswith("price: ")
    assert errors_for({**GOOD, "price": True})[0].startswith("price: ")
    assert errors_for({**GOOD, "price": 10**5000})[0].startswith("price: too many digits")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("\u200b\u200b\u200b", "customer: Value error, must contain visible characters"),
        ("\u200d\ufeff\u2060 \u3164", "customer: Value error, must contain visible characters"),
        ("Acme\x85Ltd", "customer: Value error, must be one line"),
        ("Acme\x9bLtd", "customer: Value error, must not contain control characters"),
        ("Acme\nLtd", "customer: Value error, must be one line"),
        ("Acme\u2028Ltd", "customer: Value error, must be one line"),
        ("Acme\tLtd", "customer: Value error, must not contain control characters"),
        ("evil\u202egnp.exe", "customer: Value error, must not contain bidirectional controls"),
        ("\u2066Acme\u2069", "customer: Value error, must not contain bidirectional controls"),
        ("Acme\u200f", "customer: Value error, must not contain bidirectional controls"),
        ("Acme\u061c", "customer: Value error, must not contain bidirectional controls"),
    ],
)
def test_names_that_hide_or_disguise_themselves_are_refused(name: str, expected: str) -> None:
    [error] = errors_for({**GOOD, "customer": name})
    assert error.startswith(expected), error


def test_names_are_nfc_normalised_and_joiners_inside_them_are_kept() -> None:
    assert parse_order({**GOOD, "customer": "Cafe\u0301 Ltd"}).customer == "Caf\u00e9 Ltd"
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # ZWNJ inside a Persian word
    assert parse_order({**GOOD, "customer": persian}).customer == persian
    family = "Ana \U0001f469\u200d\U0001f467 Ltd"  # ZWJ inside an emoji sequence
    assert parse_order({**GOOD, "customer": family}).customer == family
