"""JSON bodies whose number lists simdjson reads straight into NumPy, with no Python float
made for any element, and no boolean to search for (simdjson refuses ``true`` where it reads
numbers). Used by the V2 reader for a body whose every input is a float tensor with flat
data (``v2_codec.float_data_read``) and by the native route of an image signature for
``{"inputs": nested numbers}`` (``tensor`` below); every other body is orjson's.

Measured here on make bench's digit (784 FP32 numbers, 5.8 KB): orjson, then ``np.array``
and the search for booleans, 29 us; simdjson 8 us (14 us with the V2 document around it).
On 64 digits (1 MB): 2.3 ms against 1.05 ms.

Each reader gives exactly the document orjson would, with arrays for number lists, or None
whenever it cannot be sure of that; the caller then parses with orjson
(``inputs.body.parse_json``), which also words every error. Without pysimdjson (a wheel
the serve extra pins) every body takes that path."""

from __future__ import annotations

import re
from math import prod
from typing import Any

import numpy as np
import orjson

try:
    import simdjson
except ImportError:  # pragma: no cover - orjson alone still reads every body
    simdjson = None

BYTE_ORDER_MARK = b"\xef\xbb\xbf"  # simdjson skips one; orjson refuses the body
# simdjson reads a number of more than 19 significant digits the slow way, holding the GIL:
# 2 MB of 100-digit numbers took 14-15 ms (orjson 2) in process, 4 MB 29-31 ms, and 154 ms a
# request on a busy server. Past this size a body goes to orjson, which bounds that case;
# 64 digits in V2 JSON (1 MB) still take the fast read.
FAST_READ_BYTES = 2 * 1024 * 1024
ESCAPED_BRACKET = re.compile(rb"\\u005[bB]")
# Integers from here on round twice read as float64 (then to float32), once from orjson's
# int64 array: 2**60 + 2**36 + 1 became 2**60 in float32, not 2**60 + 2**37. A native tensor
# of integers only (no "." in the body: one float makes orjson's array float64 too) holding
# such magnitudes is left to orjson; the "." is found in 0.25 us on a digit, the magnitudes
# in 2.6. V2 data needs no check: NumPy reads Python ints through float64 for a given dtype.
EXACT = 2.0**53


def parse(body: bytes) -> Any:
    """simdjson's lazy document, or None: not JSON, or numbers simdjson does not take (past
    64 bits, past a double), a byte order mark, or a body over ``FAST_READ_BYTES``."""
    if (
        simdjson is None
        or not body
        or len(body) > FAST_READ_BYTES
        or body.startswith(BYTE_ORDER_MARK)
    ):
        return None
    try:
        # A parser per body: as fast as reusing one (0.3 us), and a parser may not be reused
        # while any element it gave is alive, nor shared by the decoding threads.
        return simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):
        return None


def is_object(element: Any) -> bool:
    return simdjson is not None and isinstance(element, simdjson.Object)


def is_array(element: Any) -> bool:
    return simdjson is not None and isinstance(element, simdjson.Array)


def numbers(element: Any) -> np.ndarray | None:
    """A list of numbers as float64, or None (not a list; booleans, strings or null in it).
    A list holding lists comes back flattened: ``same_brackets`` finds it."""
    if not is_array(element):
        return None
    try:
        return np.frombuffer(element.as_buffer(of_type="d"), dtype=np.float64)
    except TypeError:
        return None


def keys(element: Any) -> list[str] | None:
    """An object's keys, or None when one repeats (orjson keeps the last value, simdjson's
    lookup finds the first) or holds a NUL (``"\\u0000"``): pysimdjson looks a key up by its
    C string, so ``element["a\\x00"]`` raised KeyError (a 500) or found ``"a"``."""
    found = list(element.keys())
    if len(set(found)) != len(found) or "\x00" in "".join(found):
        return None
    return found


def python(element: Any) -> Any:
    """An element as orjson gives it."""
    if is_object(element):
        return element.as_dict()
    if is_array(element):
        return element.as_list()
    return element


def same_brackets(body: bytes, document: Any, lists: int = 0) -> bool:
    """True when every "[" in the body opens a list the document holds (an array counts one,
    and ``lists`` more for the lists inside it) or is in one of its strings: so no array was
    flattened from lists nested deeper than it has dimensions. orjson writes the document in
    0.35 us; a walk in Python took 2.6. An escaped "[" (``"\\u005b"``), which orjson writes
    as "[", would make up for a list hidden in data: such a body is left to orjson (the
    backslash is looked for first: 0.25 us on a 15 KB body, the escape itself 4 us)."""
    if b"\\" in body and ESCAPED_BRACKET.search(body):
        return False
    try:
        written = orjson.dumps(document, default=_empty)  # an array is written as []
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels)
        return False
    return body.count(b"[") == written.count(b"[") + lists


def _empty(_: Any) -> tuple:
    return ()


def tensor(body: bytes, field: str) -> dict[str, np.ndarray] | None:
    """``{field: numbers}`` as a float64 array of their shape, for a body that is that one
    key and a list of numbers nested evenly (every list at a level as long as the others);
    otherwise None."""
    root = parse(body)
    if not is_object(root) or keys(root) != [field]:
        return None
    value = root[field]
    flat = numbers(value)
    shape = _shape(value)
    if flat is None or shape is None or flat.size != prod(shape):
        return None
    if b"." not in body and np.abs(flat).max() >= EXACT:
        return None
    lists = _even(value, shape)
    if lists is None:
        return None
    try:
        found = {field: flat.reshape(shape)}
    except ValueError:  # more dimensions than NumPy takes (64): ValueError was a 500
        return None
    return found if same_brackets(body, found, lists) else None


def _shape(value: Any) -> list[int] | None:
    """The lengths down the first items: the shape, if the lists are even; None for an
    empty list (orjson's path words what an empty tensor lacks)."""
    shape = []
    while is_array(value):
        if len(value) == 0:
            return None
        shape.append(len(value))
        value = value[0]
    return shape


def _even(value: Any, shape: list[int]) -> int | None:
    """How many lists ``value`` holds below itself, when every one at each level has that
    level's length (a ragged tensor, which NumPy refuses, can have the right count of
    numbers); None otherwise. 29 lists below a [1, 28, 28] digit, 1,856 below 64 of them."""
    level, held = [value], 0
    for length in shape[1:]:
        below = []
        for parent in level:
            for child in parent:
                if not is_array(child) or len(child) != length:
                    return None
                below.append(child)
        held += len(below)
        level = below
    return held
