"""The answer schemas of protocol section 5: which ``schema`` a ``question`` may carry, and whether an
accepting answer's ``value`` is valid against it. Pure functions; a refusal is an exception whose
one-line message names the field, ready to become an ``invalid_message`` error.

A question's ``schema`` is the shape MCP's elicitation ``requestedSchema`` uses: a JSON Schema for an
object of flat properties, each of type string (optionally with ``enum``), number, integer or boolean.
:func:`check_schema` refuses anything outside that subset; :func:`validate_value` checks a value with
``jsonschema`` (Draft 2020-12), refusing properties the schema does not list and enforcing the four
formats the contract names (``email``, ``uri``, ``date``, ``date-time``).

A hostile schema must not be expensive to check or to validate against, so it may list at most
:data:`MAX_PROPERTIES` (64) properties and an ``enum`` at most :data:`MAX_ENUM` (256) values; every
keyword it may use is checked in time linear in its size.
"""

from __future__ import annotations

import functools
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from vibews.timestamps import is_rfc3339

MAX_PROPERTIES: Final = 64
MAX_ENUM: Final = 256

SCHEMA_FIELD: Final = "payload.schema"
VALUE_FIELD: Final = "payload.value"

PROPERTY_TYPES: Final = ("string", "number", "integer", "boolean")
FORMATS: Final = ("email", "uri", "date", "date-time")

# Keywords in the order they are checked (and listed in refusals).
_TOP_KEYWORDS: Final = ("type", "properties", "required", "title", "description")
_PROPERTY_KEYWORDS: Final = (
    "type",
    "title",
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "format",
    "default",
)

# How much of a client's text a refusal quotes.
_SHOW_LIMIT: Final = 64
_ENUM_SHOWN: Final = 8


class SchemaRefused(Exception):
    """A question's ``schema`` outside the subset the contract allows.

    ``str(err)`` (also ``err.message``) is one line naming where and why, e.g.
    ``"payload.schema.properties.age.type: must be 'string', 'number', 'integer' or 'boolean', got 'array'"``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValueRefused(Exception):
    """An answer's ``value`` that is not valid against the question's schema.

    ``str(err)`` (also ``err.message``) is one line naming the failing field, e.g.
    ``"payload.value.age: 150 is greater than the maximum of 120"``, ``"payload.value.email: is
    required"`` or ``"payload.value.nickname: is not a property of the question's schema"``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- Showing client text in a one-line message -------------------------------------------------

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _clip(text: str) -> str:
    text = _CONTROL.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
    return text if len(text) <= _SHOW_LIMIT else text[:_SHOW_LIMIT] + "…"


def _show(value: object) -> str:
    """A client's value as a refusal quotes it: strings in single quotes, the rest as JSON."""
    if isinstance(value, str):
        return f"'{_clip(value)}'"
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return _clip(text)


def _label(name: str) -> str:
    """A property name as it appears in a field path."""
    return _clip(name)


def _show_list(values: Iterable[object]) -> str:
    items = list(values)
    shown = ", ".join(_show(item) for item in items[:_ENUM_SHOWN])
    if len(items) > _ENUM_SHOWN:
        shown += f", … ({len(items)} in all)"
    return shown


def _or_list(words: Iterable[str]) -> str:
    quoted = [f"'{word}'" for word in words]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


# --- Checking a schema -------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    # An int is always finite (and may be too large for a float: math.isfinite would overflow).
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _is_integer(value: object) -> bool:
    # The contract: 3.0 is an integer (as in JSON Schema); booleans are not numbers.
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_TYPE_TESTS: Final[Mapping[str, Callable[[object], bool]]] = {
    "string": lambda value: isinstance(value, str),
    "number": _is_number,
    "integer": _is_integer,
    "boolean": lambda value: isinstance(value, bool),
}


def _refuse(field: str, reason: str) -> SchemaRefused:
    return SchemaRefused(f"{field}: {reason}")


def _require_object(field: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refuse(field, f"must be a JSON object, got {_show(value)}")
    for key in value:
        if not isinstance(key, str):
            raise _refuse(field, "must be a JSON object (its keys must be strings)")
    return value


def _check_keywords(
    field: str, schema: Mapping[str, Any], allowed: tuple[str, ...], what: str
) -> None:
    for keyword in schema:
        if keyword not in allowed:
            raise _refuse(
                f"{field}.{_label(keyword)}",
                f"is not a supported keyword; {what} may use only {', '.join(allowed)}",
            )


def _check_text(field: str, schema: Mapping[str, Any], keyword: str) -> None:
    if keyword in schema and not isinstance(schema[keyword], str):
        raise _refuse(f"{field}.{keyword}", f"must be a string, got {_show(schema[keyword])}")


def check_schema(schema: object) -> None:
    """Refuse, with :class:`SchemaRefused`, a question's ``schema`` outside the contract's subset.

    The subset (MCP elicitation's ``requestedSchema``): an object with ``"type": "object"``,
    ``properties`` (an object, possibly empty, of at most 64 properties), an optional ``required``
    (unique names of listed properties) and optional ``title`` and ``description`` strings. Each
    property has ``type`` ``string``, ``number``, ``integer`` or ``boolean``, and may have ``title``,
    ``description``, ``enum`` (1 to 256 unique values of its type), ``minimum``/``maximum`` (numbers,
    for number and integer), ``minLength``/``maxLength`` (non-negative integers, for string),
    ``format`` (``email``, ``uri``, ``date`` or ``date-time``, for string) and ``default`` (itself
    valid for the property). Any other keyword is refused, naming it. Checks run in a fixed order and
    the first failure decides the message.
    """
    top = _require_object(SCHEMA_FIELD, schema)
    _check_keywords(SCHEMA_FIELD, top, _TOP_KEYWORDS, "the schema")
    if top.get("type") != "object":
        got = f", got {_show(top['type'])}" if "type" in top else " (it is required)"
        raise _refuse(f"{SCHEMA_FIELD}.type", f"must be 'object'{got}")
    if "properties" not in top:
        raise _refuse(f"{SCHEMA_FIELD}.properties", "is required (an object of properties)")
    properties = _require_object(f"{SCHEMA_FIELD}.properties", top["properties"])
    if len(properties) > MAX_PROPERTIES:
        raise _refuse(
            f"{SCHEMA_FIELD}.properties",
            f"may list at most {MAX_PROPERTIES} properties, got {len(properties)}",
        )
    _check_text(SCHEMA_FIELD, top, "title")
    _check_text(SCHEMA_FIELD, top, "description")
    for name, spec in properties.items():
        _check_property(f"{SCHEMA_FIELD}.properties.{_label(name)}", spec)
    if "required" in top:
        _check_required(top["required"], properties)


def _check_required(required: object, properties: Mapping[str, Any]) -> None:
    field = f"{SCHEMA_FIELD}.required"
    if not isinstance(required, list):
        raise _refuse(field, f"must be a list of property names, got {_show(required)}")
    seen: set[str] = set()
    for index, name in enumerate(required):
        if not isinstance(name, str):
            raise _refuse(f"{field}[{index}]", f"must be a property name, got {_show(name)}")
        if name not in properties:
            raise _refuse(f"{field}[{index}]", f"{_show(name)} is not one of the properties")
        if name in seen:
            raise _refuse(f"{field}[{index}]", f"{_show(name)} is listed twice")
        seen.add(name)


def _check_property(field: str, spec: object) -> None:
    prop = _require_object(field, spec)
    _check_keywords(field, prop, _PROPERTY_KEYWORDS, "a property")
    kind = prop.get("type")
    if not isinstance(kind, str) or kind not in PROPERTY_TYPES:
        got = f", got {_show(kind)}" if "type" in prop else " (it is required)"
        raise _refuse(f"{field}.type", f"must be {_or_list(PROPERTY_TYPES)}{got}")
    _check_text(field, prop, "title")
    _check_text(field, prop, "description")
    if "enum" in prop:
        _check_enum(f"{field}.enum", kind, prop["enum"])
    _check_bounds(field, kind, prop, "minimum", "maximum", ("number", "integer"), _is_number)
    _check_bounds(field, kind, prop, "minLength", "maxLength", ("string",), _is_count)
    if "format" in prop:
        fmt = prop["format"]
        if kind != "string":
            raise _refuse(f"{field}.format", "applies only to string properties")
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise _refuse(f"{field}.format", f"must be {_or_list(FORMATS)}, got {_show(fmt)}")
    if "default" in prop:
        _check_default(f"{field}.default", prop)


def _check_enum(field: str, kind: str, values: object) -> None:
    if not isinstance(values, list) or not values:
        raise _refuse(field, f"must be a non-empty list of {kind} values, got {_show(values)}")
    if len(values) > MAX_ENUM:
        raise _refuse(field, f"may list at most {MAX_ENUM} values, got {len(values)}")
    seen: set[object] = set()
    for index, value in enumerate(values):
        if not _TYPE_TESTS[kind](value):
            raise _refuse(f"{field}[{index}]", f"must be a{_n(kind)} {kind}, got {_show(value)}")
        # Every value that passed is a str, bool or finite number: hashable, and 1 == 1.0 here
        # exactly as JSON Schema's equality has it (bools never meet numbers in one enum).
        if value in seen:
            raise _refuse(f"{field}[{index}]", f"{_show(value)} is listed twice")
        seen.add(value)


def _n(word: str) -> str:
    return "n" if word[0] in "aeiou" else ""


def _check_bounds(
    field: str,
    kind: str,
    prop: Mapping[str, Any],
    low: str,
    high: str,
    kinds: tuple[str, ...],
    test: Callable[[object], bool],
) -> None:
    rule = "a number" if test is _is_number else "a non-negative integer"
    for keyword in (low, high):
        if keyword not in prop:
            continue
        if kind not in kinds:
            raise _refuse(f"{field}.{keyword}", f"applies only to {' and '.join(kinds)} properties")
        if not test(prop[keyword]):
            raise _refuse(f"{field}.{keyword}", f"must be {rule}, got {_show(prop[keyword])}")
    if low in prop and high in prop and prop[low] > prop[high]:
        raise _refuse(
            f"{field}.{low}", f"{_show(prop[low])} is greater than {high} {_show(prop[high])}"
        )


def _check_default(field: str, prop: Mapping[str, Any]) -> None:
    default = prop["default"]
    if isinstance(default, float) and not math.isfinite(default):
        # Strict JSON cannot carry these; a Python caller could, and jsonschema calls NaN a number.
        raise _refuse(field, f"must be a finite number, got {_show(default)}")
    without_default = {key: value for key, value in prop.items() if key != "default"}
    validator = Draft202012Validator(without_default, format_checker=_FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(default), key=_error_order)
    if errors:
        raise _refuse(field, _reason(errors[0]))


# --- Formats -----------------------------------------------------------------------------------

_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*", re.ASCII)
# RFC 3986 section 2: the characters a URI may hold (unreserved, reserved and "%" for escapes).
_URI_CHARS: Final = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*", re.ASCII)
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})", re.ASCII)
_EMAIL_BANNED: Final = re.compile(r"[\s\x00-\x1f\x7f]")


def is_date(text: str) -> bool:
    """Whether ``text`` is an RFC 3339 ``full-date``: strict ``YYYY-MM-DD``, calendar-valid."""
    return _DATE.fullmatch(text) is not None and is_rfc3339(text + "T00:00:00Z")


def is_email(text: str) -> bool:
    """A sensible check, not RFC 5322: one ``@``, a non-empty local part of at most 64 characters,
    a domain of non-empty dot-separated labels with at least one dot, no spaces or control
    characters, at most 254 characters in all."""
    if len(text) > 254 or _EMAIL_BANNED.search(text) or text.count("@") != 1:
        return False
    local, _, domain = text.partition("@")
    labels = domain.split(".")
    return 0 < len(local) <= 64 and len(labels) >= 2 and all(labels)


def is_uri(text: str) -> bool:
    """Whether ``text`` is an absolute RFC 3986 URI: a scheme, ``:`` and something more, in the
    characters a URI may hold, with well-formed percent escapes and (if any) a numeric port."""
    scheme, colon, rest = text.partition(":")
    if not colon or not rest or _SCHEME.fullmatch(scheme) is None:
        return False
    if _URI_CHARS.fullmatch(text) is None or _BAD_ESCAPE.search(text):
        return False
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - parsing the port is the check (ValueError when malformed)
    except ValueError:
        return False
    return parts.scheme == scheme.lower()


def _strings_only(check: Callable[[str], bool]) -> Callable[[object], bool]:
    # A format says nothing about values of other types (their "type" error reports them).
    return lambda value: not isinstance(value, str) or check(value)


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    checker.checks("date-time")(_strings_only(is_rfc3339))
    checker.checks("date")(_strings_only(is_date))
    checker.checks("email")(_strings_only(is_email))
    checker.checks("uri")(_strings_only(is_uri))
    return checker


_FORMAT_CHECKER: Final = _format_checker()

_FORMAT_RULES: Final = {
    "email": "must be an email address such as name@example.org",
    "uri": "must be an absolute URI such as https://example.org/",
    "date": "must be a date such as 2026-11-25",
    "date-time": "must be an RFC 3339 date-time such as 2026-11-25T10:00:00Z",
}


# --- Validating a value ------------------------------------------------------------------------

# Which of several failures on one field is reported: the most basic first.
_KEYWORD_ORDER: Final = {
    keyword: rank
    for rank, keyword in enumerate(
        (
            "required",
            "additionalProperties",
            "type",
            "enum",
            "format",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
        )
    )
}


def _error_order(error: ValidationError) -> tuple[tuple[str, ...], int, str]:
    keyword = str(error.validator)
    return (
        tuple(str(part) for part in error.path),
        _KEYWORD_ORDER.get(keyword, len(_KEYWORD_ORDER)),
        error.message,
    )


def _reason(error: ValidationError) -> str:
    """The failure of one keyword on one value, phrased with JSON values (no Python reprs)."""
    keyword = error.validator
    # Unset only on errors built by hand; these come from validating a value.
    limit: Any = error.validator_value
    instance: Any = error.instance
    if keyword == "type":
        return f"must be a{_n(str(limit))} {limit}, got {_show(instance)}"
    if keyword == "enum":
        return f"{_show(instance)} is not one of {_show_list(limit)}"
    if keyword == "format":
        return _FORMAT_RULES.get(str(limit), f"must be in the format {_show(limit)}")
    if keyword == "minimum":
        return f"{_show(instance)} is less than the minimum of {_show(limit)}"
    if keyword == "maximum":
        return f"{_show(instance)} is greater than the maximum of {_show(limit)}"
    if keyword == "minLength":
        return f"must be at least {limit} characters long, got {len(instance)}"
    if keyword == "maxLength":
        return f"must be at most {limit} characters long, got {len(instance)}"
    return _clip(error.message)  # pragma: no cover - the subset has no other keyword


# Keyed on the schema's canonical JSON; small, since a schema may be as large as a message.
@functools.lru_cache(maxsize=64)
def _validator(canonical: str) -> Draft202012Validator:
    schema = json.loads(canonical)
    schema["additionalProperties"] = False
    return Draft202012Validator(schema, format_checker=_FORMAT_CHECKER)


def validate_value(schema: Mapping[str, Any], value: object) -> None:
    """Refuse, with :class:`ValueRefused`, an answer's ``value`` not valid against ``schema``.

    ``schema`` must have passed :func:`check_schema`. ``value`` must be a JSON object whose
    properties are all listed in the schema, with every required one present and each valid for its
    property (type, enum, bounds, lengths in code points, format); ``3.0`` is an integer, booleans
    are not numbers. Of several failures, the one on the first field in sorted order is reported,
    as ``payload.value.<property>: <reason>``.
    """
    if not isinstance(value, dict):
        raise ValueRefused(f"{VALUE_FIELD}: must be an object")
    canonical = json.dumps(dict(schema), sort_keys=True, separators=(",", ":"), allow_nan=False)
    failures: list[tuple[str, int, str]] = []
    for error in _validator(canonical).iter_errors(value):
        rank = _KEYWORD_ORDER.get(str(error.validator), len(_KEYWORD_ORDER))
        if error.validator == "required":
            for name in error.validator_value:
                if name not in value:
                    failures.append((name, rank, "is required"))
        elif error.validator == "additionalProperties":
            for name in value:
                if name not in schema["properties"]:
                    failures.append((name, rank, "is not a property of the question's schema"))
        else:
            failures.append(("/".join(str(part) for part in error.path), rank, _reason(error)))
    if failures:
        name, _, reason = min(failures)
        raise ValueRefused(f"{VALUE_FIELD}.{_label(name)}: {reason}")
