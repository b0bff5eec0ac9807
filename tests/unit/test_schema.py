"""Answer schemas (protocol sections 5 and 6): which question ``schema`` is accepted, and which answer
``value`` is valid against it, each refusal naming the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vibews.schema import (
    MAX_ENUM,
    MAX_PROPERTIES,
    SchemaRefused,
    ValueRefused,
    check_schema,
    is_date,
    is_email,
    is_uri,
    validate_value,
)

# Shaped like an MCP elicitation requestedSchema.
BOOKING: dict[str, Any] = {
    "type": "object",
    "title": "Book the review",
    "description": "When and with whom should the design review happen?",
    "properties": {
        "name": {
            "type": "string",
            "title": "Your name",
            "description": "As it should appear on the invitation",
            "minLength": 2,
            "maxLength": 5,
        },
        "email": {"type": "string", "title": "Email", "format": "email"},
        "age": {"type": "integer", "minimum": 18, "maximum": 120, "default": 30},
        "budget": {"type": "number", "minimum": 0, "maximum": 99.5},
        "agree": {"type": "boolean", "default": False},
        "room": {"type": "string", "enum": ["red", "blue", "green"], "default": "red"},
        "homepage": {"type": "string", "format": "uri"},
        "day": {"type": "string", "format": "date"},
        "start": {"type": "string", "format": "date-time"},
    },
    "required": ["name", "email"],
}

VALID_BOOKING: dict[str, Any] = {"name": "Ada", "email": "ada@example.org"}


def refusal(schema: object) -> str:
    with pytest.raises(SchemaRefused) as info:
        check_schema(schema)
    assert info.value.message == str(info.value)
    assert "\n" not in info.value.message
    return info.value.message


def value_refusal(value: object, schema: dict[str, Any] | None = None) -> str:
    with pytest.raises(ValueRefused) as info:
        validate_value(BOOKING if schema is None else schema, value)
    assert info.value.message == str(info.value)
    assert "\n" not in info.value.message
    return info.value.message


def with_property(spec: object, name: str = "p") -> dict[str, Any]:
    return {"type": "object", "properties": {name: spec}}


def booking(**fields: Any) -> dict[str, Any]:
    return {**VALID_BOOKING, **fields}


# --- check_schema: accepted ----------------------------------------------------------------------


def test_realistic_elicitation_schema_is_accepted() -> None:
    """An MCP-elicitation-style schema using every allowed keyword passes check_schema."""
    check_schema(BOOKING)


def test_check_schema_does_not_modify_the_schema() -> None:
    """Checking (and validating against) a schema leaves the caller's dict as it was."""
    before = copy.deepcopy(BOOKING)
    check_schema(BOOKING)
    validate_value(BOOKING, VALID_BOOKING)
    assert before == BOOKING


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {}},
        {"type": "object", "properties": {}, "required": []},
        with_property({"type": "number"}),
        with_property({"type": "integer", "enum": [1, 2.0, 3]}),
        with_property({"type": "number", "minimum": 1.5, "maximum": 1.5}),
        with_property({"type": "integer", "minimum": -3, "maximum": 3.5, "default": 3.0}),
        with_property({"type": "string", "minLength": 0, "maxLength": 0, "default": ""}),
        with_property({"type": "string", "format": "date", "default": "2024-02-29"}),
        with_property({"type": "boolean", "enum": [True, False], "default": True}),
        with_property(
            {"type": "string", "enum": ["x"] * 1 + [str(i) for i in range(MAX_ENUM - 1)]}
        ),
        {
            "type": "object",
            "properties": {f"p{i}": {"type": "string"} for i in range(MAX_PROPERTIES)},
        },
    ],
)
def test_schemas_inside_the_subset_are_accepted(schema: dict[str, Any]) -> None:
    """Empty properties, integral floats as integers, equal bounds, limits at their maximum: accepted."""
    check_schema(schema)


# --- check_schema: the top level ---------------------------------------------------------------


def test_schema_must_be_an_object() -> None:
    """A schema that is not a JSON object is refused at payload.schema."""
    assert (
        refusal(["type", "object"])
        == 'payload.schema: must be a JSON object, got ["type","object"]'
    )
    assert refusal("object").startswith("payload.schema: must be a JSON object")
    assert refusal(None).startswith("payload.schema: must be a JSON object")


def test_top_level_type_must_be_object() -> None:
    """``type`` is required and must be "object"."""
    assert refusal({"properties": {}}) == "payload.schema.type: must be 'object' (it is required)"
    assert (
        refusal({"type": "array", "properties": {}})
        == "payload.schema.type: must be 'object', got 'array'"
    )
    assert refusal({"type": ["object"], "properties": {}}).startswith("payload.schema.type: ")


def test_properties_are_required_and_an_object() -> None:
    """``properties`` is required and must be an object of property schemas."""
    assert refusal({"type": "object"}).startswith("payload.schema.properties: is required")
    assert refusal({"type": "object", "properties": []}).startswith(
        "payload.schema.properties: must be a JSON object"
    )


@pytest.mark.parametrize(
    "keyword", ["additionalProperties", "$schema", "$ref", "oneOf", "items", "definitions", "enum"]
)
def test_unknown_top_level_keyword_is_refused_by_name(keyword: str) -> None:
    """Any keyword beyond type, properties, required, title and description is refused, named."""
    message = refusal({"type": "object", "properties": {}, keyword: False})
    assert message.startswith(f"payload.schema.{keyword}: is not a supported keyword")


@pytest.mark.parametrize("keyword", ["title", "description"])
def test_top_level_title_and_description_must_be_strings(keyword: str) -> None:
    """``title`` and ``description`` at the top level must be strings."""
    message = refusal({"type": "object", "properties": {}, keyword: 3})
    assert message == f"payload.schema.{keyword}: must be a string, got 3"


def test_too_many_properties_are_refused() -> None:
    """More than MAX_PROPERTIES (64) properties are refused before any of them is looked at."""
    schema = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string"} for i in range(MAX_PROPERTIES + 1)},
    }
    assert refusal(schema) == "payload.schema.properties: may list at most 64 properties, got 65"


@pytest.mark.parametrize(
    ("required", "expected"),
    [
        ("name", "payload.schema.required: must be a list of property names, got 'name'"),
        ([3], "payload.schema.required[0]: must be a property name, got 3"),
        (["name", "zip"], "payload.schema.required[1]: 'zip' is not one of the properties"),
        (["name", "name"], "payload.schema.required[1]: 'name' is listed twice"),
    ],
)
def test_required_must_be_unique_names_of_listed_properties(
    required: object, expected: str
) -> None:
    """``required`` is a list of unique strings, each naming a listed property."""
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": required}
    assert refusal(schema) == expected


# --- check_schema: properties ------------------------------------------------------------------


def test_property_must_be_an_object() -> None:
    """Each property's schema must be a JSON object."""
    assert (
        refusal(with_property("string"))
        == "payload.schema.properties.p: must be a JSON object, got 'string'"
    )


@pytest.mark.parametrize(
    ("kind", "shown"),
    [
        ("array", "'array'"),
        ("object", "'object'"),
        ("null", "'null'"),
        (["string", "null"], '["string","null"]'),
    ],
)
def test_property_type_outside_the_four_is_refused(kind: object, shown: str) -> None:
    """A property's type must be string, number, integer or boolean; the message shows what was sent."""
    assert refusal(with_property({"type": kind}, name="age")) == (
        "payload.schema.properties.age.type: must be 'string', 'number', 'integer' or 'boolean', "
        f"got {shown}"
    )


def test_property_type_is_required() -> None:
    """A property without ``type`` is refused."""
    assert refusal(with_property({"title": "Age"})) == (
        "payload.schema.properties.p.type: must be 'string', 'number', 'integer' or 'boolean' "
        "(it is required)"
    )


@pytest.mark.parametrize(
    "keyword",
    [
        "pattern",
        "items",
        "$ref",
        "additionalProperties",
        "oneOf",
        "anyOf",
        "const",
        "exclusiveMinimum",
        "multipleOf",
        "properties",
        "enumNames",
    ],
)
def test_unknown_property_keyword_is_refused_by_name(keyword: str) -> None:
    """Any property keyword outside the contract's list is refused, naming it."""
    message = refusal(with_property({"type": "string", keyword: "x"}, name="nick"))
    assert message.startswith(
        f"payload.schema.properties.nick.{keyword}: is not a supported keyword"
    )


@pytest.mark.parametrize("keyword", ["title", "description"])
def test_property_title_and_description_must_be_strings(keyword: str) -> None:
    """A property's ``title`` and ``description`` must be strings."""
    message = refusal(with_property({"type": "string", keyword: ["x"]}))
    assert message == f'payload.schema.properties.p.{keyword}: must be a string, got ["x"]'


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "string", "enum": []}, "enum: must be a non-empty list of string values, got []"),
        (
            {"type": "string", "enum": "red"},
            "enum: must be a non-empty list of string values, got 'red'",
        ),
        ({"type": "string", "enum": ["red", 1]}, "enum[1]: must be a string, got 1"),
        ({"type": "string", "enum": ["red", "red"]}, "enum[1]: 'red' is listed twice"),
        ({"type": "number", "enum": [1, True]}, "enum[1]: must be a number, got true"),
        ({"type": "number", "enum": [1, 1.0]}, "enum[1]: 1.0 is listed twice"),
        ({"type": "integer", "enum": [1, 1.5]}, "enum[1]: must be an integer, got 1.5"),
        ({"type": "boolean", "enum": [True, 1]}, "enum[1]: must be a boolean, got 1"),
        ({"type": "boolean", "enum": [False, False]}, "enum[1]: false is listed twice"),
    ],
)
def test_enum_must_be_unique_values_of_the_property_type(
    spec: dict[str, Any], expected: str
) -> None:
    """``enum`` is a non-empty list of unique values of the property's type."""
    assert refusal(with_property(spec)) == f"payload.schema.properties.p.{expected}"


def test_enum_is_limited_in_size() -> None:
    """An ``enum`` of more than MAX_ENUM (256) values is refused."""
    spec = {"type": "string", "enum": [str(i) for i in range(MAX_ENUM + 1)]}
    assert (
        refusal(with_property(spec))
        == "payload.schema.properties.p.enum: may list at most 256 values, got 257"
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"type": "string", "minimum": 1},
            "minimum: applies only to number and integer properties",
        ),
        (
            {"type": "boolean", "maximum": 1},
            "maximum: applies only to number and integer properties",
        ),
        ({"type": "number", "minimum": "1"}, "minimum: must be a number, got '1'"),
        ({"type": "number", "maximum": True}, "maximum: must be a number, got true"),
        ({"type": "integer", "minimum": None}, "minimum: must be a number, got null"),
        ({"type": "number", "minimum": float("nan")}, "minimum: must be a number, got NaN"),
        ({"type": "number", "minimum": 5, "maximum": 4}, "minimum: 5 is greater than maximum 4"),
        ({"type": "integer", "minLength": 1}, "minLength: applies only to string properties"),
        ({"type": "number", "maxLength": 1}, "maxLength: applies only to string properties"),
        ({"type": "string", "minLength": -1}, "minLength: must be a non-negative integer, got -1"),
        (
            {"type": "string", "maxLength": 2.5},
            "maxLength: must be a non-negative integer, got 2.5",
        ),
        (
            {"type": "string", "maxLength": False},
            "maxLength: must be a non-negative integer, got false",
        ),
        (
            {"type": "string", "minLength": 3, "maxLength": 2},
            "minLength: 3 is greater than maxLength 2",
        ),
    ],
)
def test_bounds_and_lengths_apply_to_their_types_and_are_ordered(
    spec: dict[str, Any], expected: str
) -> None:
    """minimum/maximum are numbers for number and integer; minLength/maxLength non-negative integers
    for string; the lower bound is at most the upper."""
    assert refusal(with_property(spec)) == f"payload.schema.properties.p.{expected}"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "integer", "format": "date"}, "format: applies only to string properties"),
        (
            {"type": "string", "format": "ipv4"},
            "format: must be 'email', 'uri', 'date' or 'date-time', got 'ipv4'",
        ),
        (
            {"type": "string", "format": "Email"},
            "format: must be 'email', 'uri', 'date' or 'date-time', got 'Email'",
        ),
        (
            {"type": "string", "format": 1},
            "format: must be 'email', 'uri', 'date' or 'date-time', got 1",
        ),
    ],
)
def test_format_is_one_of_four_and_only_for_strings(spec: dict[str, Any], expected: str) -> None:
    """``format`` is email, uri, date or date-time, and only on string properties."""
    assert refusal(with_property(spec)) == f"payload.schema.properties.p.{expected}"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "integer", "default": "3"}, "must be an integer, got '3'"),
        ({"type": "integer", "default": 3.5}, "must be an integer, got 3.5"),
        ({"type": "number", "default": True}, "must be a number, got true"),
        ({"type": "boolean", "default": 0}, "must be a boolean, got 0"),
        ({"type": "string", "default": None}, "must be a string, got null"),
        ({"type": "string", "enum": ["a", "b"], "default": "c"}, "'c' is not one of 'a', 'b'"),
        ({"type": "number", "maximum": 10, "default": 11}, "11 is greater than the maximum of 10"),
        ({"type": "number", "minimum": 10, "default": 9.5}, "9.5 is less than the minimum of 10"),
        (
            {"type": "string", "maxLength": 2, "default": "abc"},
            "must be at most 2 characters long, got 3",
        ),
        (
            {"type": "string", "format": "date", "default": "tomorrow"},
            "must be a date such as 2026-11-25",
        ),
    ],
)
def test_default_must_be_valid_for_its_property(spec: dict[str, Any], expected: str) -> None:
    """A property's ``default`` is checked like a value: type, enum, bounds, lengths and format."""
    assert (
        refusal(with_property(spec, name="x")) == f"payload.schema.properties.x.default: {expected}"
    )


def test_non_finite_default_is_refused() -> None:
    """A NaN or infinite default (only a Python caller can send one) is refused."""
    message = refusal(with_property({"type": "number", "default": float("inf")}))
    assert message == "payload.schema.properties.p.default: must be a finite number, got Infinity"


def test_first_property_in_document_order_decides() -> None:
    """Properties are checked in the order they were sent; the first failure is the one reported."""
    schema = with_property({"type": "string"}, name="ok")
    schema["properties"]["bad1"] = {"type": "array"}
    schema["properties"]["bad2"] = {"type": "string", "pattern": "x"}
    assert refusal(schema).startswith("payload.schema.properties.bad1.type:")


def test_refusals_are_one_line_and_short_whatever_the_names() -> None:
    """Names and values quoted in a refusal have control characters escaped and are clipped."""
    name = "line\nbreak" + "x" * 500
    message = refusal(with_property({"type": "string", "pattern": "."}, name=name))
    assert message.startswith("payload.schema.properties.line\\u000abreakxxx")
    assert len(message) < 300
    message = refusal(with_property({"type": "string", "enum": ["a\u2028b" * 100, 1]}))
    assert "\u2028" not in message


def test_non_string_keys_are_refused() -> None:
    """A Python caller's dict with non-string keys is refused rather than crashing."""
    assert refusal({"type": "object", "properties": {1: {"type": "string"}}}).startswith(
        "payload.schema.properties: must be a JSON object"
    )


# --- validate_value ----------------------------------------------------------------------------


def test_valid_value_is_accepted() -> None:
    """A value with every required property and valid optional ones passes."""
    validate_value(BOOKING, VALID_BOOKING)
    validate_value(
        BOOKING,
        booking(
            age=42,
            budget=12.25,
            agree=True,
            room="blue",
            homepage="https://example.org/a?b=c#d",
            day="2026-11-25",
            start="2026-11-25T10:00:00Z",
        ),
    )


def test_value_against_an_empty_schema() -> None:
    """With no properties, only the empty object is valid."""
    empty = {"type": "object", "properties": {}}
    validate_value(empty, {})
    assert value_refusal({"a": 1}, empty) == (
        "payload.value.a: is not a property of the question's schema"
    )


@pytest.mark.parametrize("value", [None, [], "{}", 3, True, [{"name": "Ada"}]])
def test_value_must_be_an_object(value: object) -> None:
    """A value that is not a JSON object is refused at payload.value."""
    assert value_refusal(value) == "payload.value: must be an object"


def test_missing_required_property_is_named() -> None:
    """A missing required property is reported under its own name."""
    assert value_refusal({"name": "Ada"}) == "payload.value.email: is required"
    assert value_refusal({}) == "payload.value.email: is required"


def test_extra_property_is_refused_by_name() -> None:
    """A property the schema does not list is refused, even if otherwise harmless."""
    assert value_refusal(booking(nickname="A")) == (
        "payload.value.nickname: is not a property of the question's schema"
    )


def test_first_failing_field_in_sorted_order_is_reported() -> None:
    """Of several failures, the one on the alphabetically first field is reported, whatever its kind."""
    value = {"name": "A", "zzz": 1, "age": "old"}
    assert value_refusal(value) == "payload.value.age: must be an integer, got 'old'"
    value = {"name": "A", "zzz": 1}
    assert value_refusal(value) == "payload.value.email: is required"
    value = {"email": "a@b.org", "name": "A", "zzz": 1}
    assert value_refusal(value) == "payload.value.name: must be at least 2 characters long, got 1"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("budget", True, "must be a number, got true"),
        ("budget", "3", "must be a number, got '3'"),
        ("age", "3", "must be an integer, got '3'"),
        ("age", 30.5, "must be an integer, got 30.5"),
        ("age", False, "must be an integer, got false"),
        ("age", None, "must be an integer, got null"),
        ("agree", 1, "must be a boolean, got 1"),
        ("agree", "true", "must be a boolean, got 'true'"),
        ("name", 42, "must be a string, got 42"),
        ("name", ["Ada"], 'must be a string, got ["Ada"]'),
        ("name", {"first": "Ada"}, 'must be a string, got {"first":"Ada"}'),
    ],
)
def test_wrong_types_are_refused(field: str, value: object, expected: str) -> None:
    """Booleans are not numbers, strings are not numbers, and 30.5 is not an integer."""
    assert value_refusal(booking(**{field: value})) == f"payload.value.{field}: {expected}"


def test_integral_float_is_an_integer() -> None:
    """3.0 (here 30.0) is an integer, as the contract says."""
    validate_value(BOOKING, booking(age=30.0))
    validate_value(BOOKING, booking(budget=3))


def test_enum_miss_is_refused() -> None:
    """A value outside the enum is refused, listing the allowed values."""
    assert value_refusal(booking(room="Red")) == (
        "payload.value.room: 'Red' is not one of 'red', 'blue', 'green'"
    )


def test_long_enum_is_abbreviated_in_the_message() -> None:
    """A refusal lists only the first few of a long enum, with the count."""
    schema = with_property({"type": "string", "enum": [f"v{i}" for i in range(100)]})
    message = value_refusal({"p": "w"}, schema)
    assert message.endswith("'v7', … (100 in all)")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("age", 150, "150 is greater than the maximum of 120"),
        ("age", 17, "17 is less than the minimum of 18"),
        ("budget", 99.75, "99.75 is greater than the maximum of 99.5"),
        ("budget", -0.5, "-0.5 is less than the minimum of 0"),
    ],
)
def test_bounds_are_enforced(field: str, value: object, expected: str) -> None:
    """minimum and maximum are inclusive bounds."""
    assert value_refusal(booking(**{field: value})) == f"payload.value.{field}: {expected}"
    validate_value(BOOKING, booking(age=18, budget=99.5))
    validate_value(BOOKING, booking(age=120, budget=0))


def test_lengths_count_code_points() -> None:
    """minLength and maxLength count Unicode code points, not bytes or UTF-16 units."""
    validate_value(BOOKING, booking(name="日本"))
    validate_value(BOOKING, booking(name="😀😀😀😀😀"))
    assert value_refusal(booking(name="😀")) == (
        "payload.value.name: must be at least 2 characters long, got 1"
    )
    assert value_refusal(booking(name="Adelaide")) == (
        "payload.value.name: must be at most 5 characters long, got 8"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "ada@example.org"),
        ("email", "first.last+tag@mail.example.co.uk"),
        ("email", "ünï@bücher.de"),
        ("homepage", "https://example.org/"),
        ("homepage", "mailto:x@y.org"),
        ("homepage", "urn:isbn:0451450523"),
        ("homepage", "http://[::1]:8080/a%20b"),
        ("homepage", "file:///etc/hosts"),
        ("day", "2026-11-25"),
        ("day", "2024-02-29"),
        ("day", "0000-01-01"),
        ("start", "2026-11-25T10:00:00Z"),
        ("start", "2026-11-25T10:00:00.5+05:30"),
    ],
)
def test_formats_accept_valid_values(field: str, value: str) -> None:
    """email, uri, date and date-time accept well-formed values."""
    validate_value(BOOKING, booking(**{field: value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "a@b"),
        ("email", "@example.org"),
        ("email", "ada@@example.org"),
        ("email", "ada@example..org"),
        ("email", "ada@example.org."),
        ("email", "ada lovelace@example.org"),
        ("email", "ada@exa\tmple.org"),
        ("email", "ada"),
        ("homepage", "not a uri"),
        ("homepage", "example.org"),
        ("homepage", "/relative/path"),
        ("homepage", "https:"),
        ("homepage", "1http://example.org"),
        ("homepage", "https://example.org/a b"),
        ("homepage", "https://example.org/\u00e9"),
        ("homepage", "https://example.org/%zz"),
        ("homepage", "http://[::1/"),
        ("homepage", "http://example.org:port/"),
        ("day", "2026-02-30"),
        ("day", "2026-13-01"),
        ("day", "2026-1-01"),
        ("day", "26-11-25"),
        ("day", "2026-11-25T10:00:00Z"),
        ("day", "\uff12\uff10\uff12\uff16-11-25"),  # full-width digits
        ("start", "2026-11-25"),
        ("start", "2026-11-25 10:00:00Z"),
        ("start", "2026-11-25T10:00:00"),
        ("start", "2026-02-30T10:00:00Z"),
    ],
)
def test_formats_refuse_invalid_values(field: str, value: str) -> None:
    """Formats are enforced, not just annotations."""
    message = value_refusal(booking(**{field: value}))
    assert message.startswith(f"payload.value.{field}: must be a")


def test_format_messages_say_what_is_expected() -> None:
    """Each format refusal gives an example of the expected form."""
    assert value_refusal(booking(email="a@b")) == (
        "payload.value.email: must be an email address such as name@example.org"
    )
    assert value_refusal(booking(homepage="not a uri")) == (
        "payload.value.homepage: must be an absolute URI such as https://example.org/"
    )
    assert value_refusal(booking(day="2026-02-30")) == (
        "payload.value.day: must be a date such as 2026-11-25"
    )
    assert value_refusal(booking(start="soon")) == (
        "payload.value.start: must be an RFC 3339 date-time such as 2026-11-25T10:00:00Z"
    )


def test_a_wrong_type_on_a_formatted_property_reports_the_type() -> None:
    """A number where a formatted string is expected is a type error, not a format error."""
    assert (
        value_refusal(booking(day=20261125)) == "payload.value.day: must be a string, got 20261125"
    )


def test_format_helpers_directly() -> None:
    """The format checks are usable on their own."""
    assert is_date("2024-02-29") and not is_date("2023-02-29")
    assert is_email("x@y.org") and not is_email("x@y")
    assert is_uri("mailto:x@y.org") and not is_uri("not a uri")


def test_validation_is_repeatable() -> None:
    """Validating many times against the same (cached) schema gives the same answers."""
    for _ in range(3):
        validate_value(BOOKING, VALID_BOOKING)
        assert value_refusal(booking(age=150)).startswith("payload.value.age: 150")


def test_equal_schemas_sent_differently_behave_the_same() -> None:
    """The validator cache is keyed on the schema's content, not on object identity or key order."""
    reordered = json.loads(json.dumps(BOOKING))
    reordered["properties"] = dict(reversed(list(reordered["properties"].items())))
    validate_value(reordered, VALID_BOOKING)
    assert value_refusal(booking(room="x"), reordered).startswith("payload.value.room:")


# --- properties --------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
booking_keys = st.sampled_from([*BOOKING["properties"], "extra"]) | st.text(max_size=8)
booking_like = st.dictionaries(booking_keys, json_values, max_size=8)


@settings(max_examples=300, deadline=None)
@given(json_values | booking_like)
def test_any_json_value_is_accepted_or_refused_cleanly(value: object) -> None:
    """Whatever JSON value an answer carries, validate_value returns or raises ValueRefused."""
    try:
        validate_value(BOOKING, value)
    except ValueRefused as refused:
        assert refused.message.startswith("payload.value")
        assert "\n" not in refused.message


property_keywords = st.fixed_dictionaries(
    {"type": st.sampled_from(["string", "number", "integer", "boolean", "array"])},
    optional={
        "enum": st.lists(json_scalars, max_size=4),
        "minimum": json_scalars,
        "maximum": json_scalars,
        "minLength": json_scalars,
        "maxLength": json_scalars,
        "format": st.sampled_from(["email", "uri", "date", "date-time", "ipv4"]),
        "default": json_scalars,
        "title": json_scalars,
        "pattern": st.just("x"),
    },
)
near_schemas = st.fixed_dictionaries(
    {
        "type": st.just("object"),
        "properties": st.dictionaries(st.sampled_from("abcde"), property_keywords, max_size=4),
    },
    optional={"required": st.lists(st.sampled_from("abcdef"), max_size=3)},
)


@settings(max_examples=300, deadline=None)
@given(json_values | near_schemas, json_values | booking_like)
def test_any_schema_is_accepted_or_refused_and_then_validates_cleanly(
    schema: object, value: object
) -> None:
    """check_schema returns or raises SchemaRefused; a schema it accepts validates any JSON value
    with nothing but success or ValueRefused."""
    try:
        check_schema(schema)
    except SchemaRefused as refused:
        assert refused.message.startswith("payload.schema")
        return
    assert isinstance(schema, dict)
    try:
        validate_value(schema, value)
    except ValueRefused as refused:
        assert refused.message.startswith("payload.value")
