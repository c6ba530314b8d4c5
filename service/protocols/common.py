"""What V2 and TF Serving share: version numbers from URLs, and errors their clients read."""

from __future__ import annotations

from service.errors import NotFound, RequestError
from service.http import Reply
from service.inference import error_reply
from service.inputs.numbers import ascii_int


def version_number(text: str | None) -> int | None:
    """A version from a URL or ``?version=``, or None when not given; anything but ASCII
    digits (an empty value too) is an unknown version (404)."""
    if text is None:
        return None
    number = ascii_int(text)
    if number is None:
        raise NotFound("unknown_version", f"no version {text[:40]!r}", field="version")
    return number


def protocol_errors(error: RequestError) -> Reply:
    """V2 and TF Serving clients know 400 and 404 (with ``{"error": ...}``); 408, 413, 503 and
    504 keep their status (and Retry-After), as both protocols' own servers do."""
    reply = error_reply(error)
    if reply.status in (406, 415, 422):
        reply.status = 400
    return reply
