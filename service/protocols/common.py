"""What V2 and TF Serving share: version numbers from URLs, and errors their clients read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.errors import NotFound, RequestError
from service.http import Reply, json_reply
from service.inputs.numbers import ascii_int

if TYPE_CHECKING:
    from service.registry.lookup import ServedModel


class NotAVersion(int):
    """A version that is not a number (``?version=v1``): no version has it, so the model's
    own lookup answers 404 ``unknown_version`` with the versions it serves; it prints as the
    client's text."""

    text: str

    def __new__(cls, text: str) -> NotAVersion:
        number = super().__new__(cls, -1)
        number.text = text[:40]
        return number

    def __repr__(self) -> str:
        return repr(self.text)

    __str__ = __repr__


def version_number(text: str | None) -> int | None:
    """A version from a URL or ``?version=``, or None when not given; anything but ASCII
    digits (an empty value too) is a ``NotAVersion``, refused where the model is known."""
    if text is None:
        return None
    number = ascii_int(text)
    if number is None:
        return NotAVersion(text)
    return number


def unknown_version(model: ServedModel, number: int) -> NotFound:
    """404 for a version the model does not serve, with the versions it does."""
    served = [v.number for v in model.ready_versions]
    return NotFound(
        "unknown_version",
        f"version {number} of model {model.name!r} is not served",
        field="version",
        expected=f"one of {served}" if served else "no version is served now",
    )


def protocol_errors(error: RequestError) -> Reply:
    """V2 and TF Serving clients know 400 and 404 (with ``{"error": ...}``); 408, 413, 503 and
    504 keep their status (and Retry-After), as both protocols' own servers do. Their clients
    show the ``error`` string alone, so it carries the whole reason (``RequestError.text``)."""
    reply = json_reply({**error.body(), "error": error.text()}, status=error.status)
    reply.headers.update(error.headers)
    reply.error = error
    if reply.status in (406, 415, 422):
        reply.status = 400
    return reply
