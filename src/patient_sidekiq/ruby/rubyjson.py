"""JSON text exactly as Ruby's ``JSON.generate`` writes it, and parsing as ``JSON.parse`` reads it.

Ruby and Python processes compare, store and re-push each other's JSON strings (Sidekiq
removes a job from a list by its exact text), so the bytes must match: no spaces, keys in
insertion order, non-ASCII characters unescaped, and floats in Ruby's ``Float#to_s`` form.

The only place the two languages' output differs is float formatting: Ruby switches to
exponent notation from 1e15 upwards with 16 or fewer significant digits (Python waits
until 1e16) and always writes a fractional part in the mantissa (``1.0e+16`` where
Python writes ``1e+16``). ``dumps`` therefore takes the C encoder's output as is unless it
could contain such a float, and only then re-encodes with Ruby's float format.

On the per-job paths orjson does the work where its result is provably the json module's:
``loads`` (every fetched job) and ``dumps_native`` (every callback result); each falls
back to the json module for whatever orjson reads or writes differently.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson  # reads and writes JSON several times faster than the json module

from patient_sidekiq.errors import InvalidJsonError, NotJsonNativeError

__all__ = [
    "MAX_NESTING",
    "dumps",
    "dumps_float",
    "dumps_native",
    "dumps_string",
    "loads",
    "nesting_exceeds",
    "ruby_float_repr",
]

MAX_NESTING = 100
"""Ruby ``JSON.parse``'s default ``max_nesting``: deeper text raises ``JSON::NestingError``."""
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _not_serializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder JSONEncoder.encode builds anew on every call, built once (a fifth of the
# cost of encoding a callback job). No circular-reference markers: a cycle ends in
# RecursionError, which dumps reports like any value it cannot write.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode: Callable[[Any, int], Sequence[str]] | None = (
    _c_make_encoder(
        None, _not_serializable, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    if _c_make_encoder is not None
    else None
)
_encode_string = json.encoder.encode_basestring


def _may_need_ruby_floats(text: str) -> bool:
    """Whether ``text`` may hold a float that Ruby spells differently from Python.

    Those are exactly the floats whose repr has an exponent (``e+``/``e-``) or 16 digits
    before the point. An exponent counts only where it ends a number that starts after
    ``:``, ``,`` or ``[``: ids and dates in strings (a uuid's ``…5e-9c…``, in a quarter of
    them) then no longer send the job down the exact path, which costs four times the C
    encoder. A string that does look like such a number only costs that slower path.
    Substring scans keep this near 1 µs on a typical job (a regex took 12 µs, on the hot
    path of every push).
    """
    for sign in ("e-", "e+"):
        at = text.find(sign)
        while at != -1:
            start = at
            while start > 0 and text[start - 1] in _NUMBER_CHARS:
                start -= 1
            # start 0: the whole text is one number (dumps of a bare float)
            if start < at and (start == 0 or text[start - 1] in _BEFORE_NUMBER):
                return True
            at = text.find(sign, at + 2)
    point = text.find(".", 16)
    while point != -1:
        if text[point - 16 : point].isdigit():
            return True
        point = text.find(".", point + 1)
    return False


_NUMBER_CHARS = frozenset("0123456789.-")
_BEFORE_NUMBER = frozenset(":,[")


def ruby_float_repr(value: float) -> str:
    """Return ``value`` spelled as Ruby's ``Float#to_s`` spells it (finite values only)."""
    text = repr(value)
    if "e" not in text and abs(value) < 1e15:
        return text
    sign = "-" if text[0] == "-" else ""
    body = text.lstrip("-")
    if "e" in body:
        mantissa, exponent = body.split("e")
        decimal_point = int(exponent) + 1
        digits = mantissa.replace(".", "").rstrip("0") or "0"
    else:
        integer_part, fraction = body.split(".")
        decimal_point = len(integer_part)
        digits = (integer_part + fraction).rstrip("0")
    # Ruby prints fixed notation up to 16 integer digits only when fractional digits remain.
    if decimal_point > 0 and (decimal_point < 16 or (decimal_point == 16 and len(digits) > 16)):
        return text
    exp = decimal_point - 1
    return f"{sign}{digits[0]}.{digits[1:] or '0'}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"


def dumps(value: Any) -> str:
    """Serialize ``value`` to the exact text Ruby's ``JSON.generate`` produces.

    Raises :class:`NotJsonNativeError` for values Ruby could not receive unchanged:
    non-finite floats, non-JSON types, and strings that are not valid Unicode (lone
    surrogates cannot be written as UTF-8).
    """
    try:
        text = "".join(_c_encode(value, 0)) if _c_encode is not None else _encoder.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: too deep to write
        raise NotJsonNativeError(f"cannot write as JSON: {exc}") from exc
    if _may_need_ruby_floats(text):
        try:
            text = "".join(_encode_exact(value))
        except RecursionError as exc:
            raise NotJsonNativeError(f"cannot write as JSON: {exc}") from exc
    # isascii is O(1) on CPython's compact strings: ASCII text needs no UTF-8 check.
    return text if text.isascii() else _utf8_only(text)


# Every ASCII digit to "0": runs of digits are then found by one substring search.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_SIXTEEN_DIGITS = b"0" * 16 + b"."

# Subclasses, dataclasses and datetimes go to ``default``, which refuses them: the json
# module's path then decides, as for any value orjson cannot write.
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)


def dumps_native(value: Any) -> str:
    """:func:`dumps` of a value made of JSON's own types only (dicts with string keys,
    lists, strings, integers, floats, booleans, None): the same text, written by orjson.

    orjson spells strings as the json module does (every code point), and floats the same
    unless it writes an exponent or a small number in full (``0.00001`` for ``1e-05``).
    Its text is kept only when it holds neither, nor any float Ruby spells differently,
    nor ``null`` (orjson writes NaN and the infinities as null, which :func:`dumps`
    refuses); otherwise, and for anything orjson refuses (integers beyond 64 bits,
    non-string keys, lone surrogates, subclasses), :func:`dumps` writes it. Not for other
    types: orjson writes enums and UUIDs, which :func:`dumps` refuses.
    """
    try:
        data = orjson.dumps(value, default=_not_serializable, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is one
        return dumps(value)
    text = data.decode("utf-8")
    if "null" in text or "0.0000" in text:
        return dumps(value)
    # Substring searches first: only text with an exponent-like "e-"/"e+" or 16 digits
    # before a point pays for the scan that tells floats apart from strings (dashed header
    # names have "e-": "same-origin"). find, not `in`, on bytes: bytes' `in` first tries
    # its operand as an integer, and raises and clears a TypeError each time.
    if (
        "e-" in text or "e+" in text or data.translate(_DIGITS_TO_ZERO).find(_SIXTEEN_DIGITS) != -1
    ) and _may_need_ruby_floats(text):
        return dumps(value)
    return text


def dumps_float(value: float) -> str:
    """:func:`dumps` of a single float, without the general encoder around it (the same
    text, and the same refusal of NaN and the infinities)."""
    if not math.isfinite(value):
        raise NotJsonNativeError(f"cannot write as JSON: {value!r} is not JSON compliant")
    return ruby_float_repr(value)


def dumps_string(value: str) -> str:
    """:func:`dumps` of a single string, without the general encoder around it (the same
    text, and the same refusal of lone surrogates)."""
    text = _encode_string(value)
    return text if text.isascii() else _utf8_only(text)


def _utf8_only(text: str) -> str:
    # Lone surrogates pass Python's encoders but cannot be written as UTF-8, nor read by Ruby.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotJsonNativeError(f"string is not valid Unicode: {exc.reason}") from exc
    return text


def _encode_exact(value: Any) -> list[str]:
    out: list[str] = []
    _write(value, out)
    return out


def _write(value: Any, out: list[str]) -> None:
    # bool before int: True is an int in Python.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_string(value))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(ruby_float_repr(value))
    elif isinstance(value, Mapping):
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(key if isinstance(key, str) else _encoder.encode(key)))
            out.append(":")
            _write(item, out)
        out.append("}")
    else:  # lists and tuples; anything else was refused by the C encoder already
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")


def nesting_exceeds(text: str, limit: int = MAX_NESTING) -> bool:
    """Whether JSON ``text`` nests arrays/objects deeper than ``limit``.

    Cheap for ordinary jobs: fewer than ``limit`` opening brackets cannot nest deeper, and
    that count runs at C speed. Only then are strings blanked and brackets followed.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise InvalidJsonError(f"{name} is not valid JSON")


# One decoder for every call: json.loads builds a new one whenever an option is passed.
_decoder = json.JSONDecoder(parse_constant=_refuse_constant)


# orjson reads an integer beyond 64 bits as a float; text with 19 digits or more in a row
# (in a string or not) is left to the json module, which keeps the integer. Found with a
# byte translation (_DIGITS_TO_ZERO) and one substring search: a regex took 8 us a job.
_LONG_DIGITS = b"0" * 19


def loads(text: str | bytes) -> Any:
    """Parse JSON as Ruby's ``JSON.parse`` does: NaN and Infinity are refused.

    Raises :class:`InvalidJsonError` for anything that is not JSON, including bytes that
    are not UTF-8 and numbers too long to parse.

    orjson reads it when it can: it accepts exactly the texts the json module accepts and
    gives the same values, except that it refuses some the json module reads (lone
    surrogates, numbers beyond a float's range, deep nesting, text that is not UTF-8) and
    reads integers beyond 64 bits as floats. Those texts go to the json module, so every
    text gives what it gave before (tests/ruby pins the two paths to each other).
    """
    data: bytes | None = None
    if type(text) is str:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: orjson refuses them
            data = None
    elif type(text) is bytes:  # exact bytes only: the json module refuses a bytearray
        data = text
    if data is not None and data.translate(_DIGITS_TO_ZERO).find(_LONG_DIGITS) == -1:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return _decoder.decode(text.decode("utf-8") if isinstance(text, bytes) else text)
    except InvalidJsonError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors.
        raise InvalidJsonError(f"not valid JSON: {exc}") from exc
