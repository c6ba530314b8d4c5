"""Client errors: every bad request becomes a 4xx with a JSON body that says what was wrong."""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """A request the service will not run, with the HTTP status and the facts a client needs.

    ``code`` is stable and machine-readable (it also labels the validation-error metric);
    ``field``, ``item`` and ``expected`` point at the exact part of the request at fault.
    """

    status = 422

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        item: int | None = None,
        expected: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.item = item
        self.expected = expected
        self.headers = headers or {}
        if status is not None:
            self.status = status

    def text(self) -> str:
        """The whole reason in one line: the message, then the item and what was expected.
        Clients that show only the message (tritonclient prints the ``error`` string and
        nothing else of the body) still see why; the structured fields stay beside it."""
        text = self.message
        if self.field is not None and repr(self.field) not in text and self.field not in text:
            text += f" (field {self.field!r})"
        if self.item is not None:
            text += f" at item {self.item}"
        if self.expected is not None:
            text += f"; expected {self.expected}"
        return text

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        for key in ("field", "item", "expected"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body


class BadRequest(RequestError):
    """The body cannot be parsed at all (not JSON, not multipart)."""

    status = 400


class Unauthorized(RequestError):
    """No credential, or one the service does not know (with ``WWW-Authenticate``)."""

    status = 401


class Forbidden(RequestError):
    """A known caller asking for what it may not (another model, the repository API)."""

    status = 403


class TooManyRequests(RequestError):
    """A caller past its quota (with ``Retry-After``)."""

    status = 429


class NotFound(RequestError):
    status = 404


class NotAcceptable(RequestError):
    status = 406


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class Unavailable(RequestError):
    """The model exists but cannot take work now (loading, refused, or overloaded)."""

    status = 503
