"""Whole numbers written as text by a client: URL segments, query options and headers.

``str.isdigit`` accepts superscripts and other Unicode digits that ``int`` refuses, and
``int`` refuses digit strings past Python's length limit: both once turned a bad version or
``top_k`` into a 500. Here only ASCII digits count, and only as many as a 64-bit number has.
"""

from __future__ import annotations

MAX_DIGITS = 18  # below 2**63: every count, size and version fits


def ascii_int(text: str | None) -> int | None:
    """The number ``text`` spells in ASCII digits (no sign, no spaces), else None."""
    if not text or len(text) > MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)
