"""Client errors: every bad request becomes a 4xx with a JSON body that says what was wrong.

``CATALOGUE`` declares each error code once: its HTTP status, its gRPC status and what it
means. Raise sites name the code (``RequestError("invalid_shape", ...)``) and the catalogue
gives the status; gRPC aborts with the code's gRPC status, OpenAPI documents each status with
its codes, and the README's error table is checked against it (``tests/service``). An
undeclared code is a programming error (``ValueError``), found by the fast tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Code:
    """One error code: ``status`` (HTTP), ``grpc`` (a ``grpc.StatusCode`` name) and what it
    means, in one line for the README and OpenAPI."""

    status: int
    grpc: str
    meaning: str


_ARG, _FOUND, _BIG, _GONE = "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAVAILABLE"
_LATE, _NO = "DEADLINE_EXCEEDED", "UNIMPLEMENTED"
# Grouped by HTTP status. A code's status is declared here only: raise sites name the code.
# Where a protocol's clients expect another status, ``PROTOCOL_STATUS`` says so by name.
CATALOGUE: dict[str, Code] = {
    # 400
    "invalid_json": Code(400, _ARG, "the body is not JSON (NaN and Infinity literals included)"),
    "empty_body": Code(400, _ARG, "the request has no body"),
    "invalid_multipart": Code(400, _ARG, "a multipart body that cannot be read"),
    "invalid_request": Code(
        400, _ARG, "a V2, TF Serving, gRPC or repository request of the wrong structure"
    ),
    "invalid_http": Code(400, _ARG, "malformed HTTP"),
    "bad_framing": Code(400, _ARG, "a malformed request body framing (see Limits)"),
    "too_deeply_nested": Code(400, _ARG, "JSON lists nested deeper than any tensor"),
    "load_failed": Code(400, _ARG, "the repository API could not load the model (reason given)"),
    "unsupported_parameter": Code(400, _ARG, "a repository API parameter that is not served"),
    "invalid_routing": Code(
        400, _ARG, "a repository API routing call (labels, traffic) that cannot apply"
    ),
    # 401, 403, 429
    "unauthorized": Code(401, "UNAUTHENTICATED", "no credential, or one the service does not know"),
    "forbidden": Code(403, "PERMISSION_DENIED", "a known caller asking for what it may not"),
    "admin_disabled": Code(403, "PERMISSION_DENIED", "the repository API is off (no admin token)"),
    "quota_exceeded": Code(429, _BIG, "a caller over its quota (`Retry-After`)"),
    # 404, 405, 406
    "not_found": Code(404, _FOUND, "no such route, or no such file of a model"),
    "unknown_model": Code(404, _FOUND, "no model of that name"),
    "unknown_version": Code(
        404, _FOUND, "the model does not serve that version (those served given)"
    ),
    "unknown_signature": Code(404, _FOUND, "the model has no signature of that name"),
    "no_reference": Code(404, _FOUND, "the version has no reference data to compare with"),
    "method_not_allowed": Code(405, _NO, "a method the route does not take (`Allow` given)"),
    "not_acceptable": Code(406, _ARG, "an `Accept` the endpoint cannot produce"),
    # 408
    "header_timeout": Code(408, _LATE, "request headers did not arrive in time"),
    "body_timeout": Code(408, _LATE, "the body did not arrive in time"),
    # 413
    "body_too_large": Code(413, _BIG, "a body over `max_body_bytes`"),
    "too_many_items": Code(413, _BIG, "more items than `max_items_per_request`"),
    "too_many_values": Code(413, _BIG, "a JSON body with more values than any request can hold"),
    "image_too_large": Code(
        413, _BIG, "an image over the pixel limit, read from its header (decompression bombs)"
    ),
    "request_too_large": Code(413, _BIG, "the pixels of all images of a request over the limit"),
    # 415
    "not_an_image": Code(415, _ARG, "not PNG or JPEG (GIF, WebP, BMP... are refused)"),
    # 422
    "invalid_shape": Code(422, _ARG, "a tensor or record of the wrong shape"),
    "invalid_dtype": Code(422, _ARG, "values of the wrong type for the tensor"),
    "invalid_type": Code(422, _ARG, "a field of the wrong JSON type"),
    "invalid_value": Code(
        422, _ARG, "a record value the dataset does not have (those it has given)"
    ),
    "not_finite": Code(422, _ARG, "NaN or infinity in a tensor"),
    "out_of_range": Code(422, _ARG, "values outside the model's input range"),
    "missing_field": Code(422, _ARG, "a required field or input is missing"),
    "unknown_field": Code(
        422, _ARG, "a field the model does not take (a typo must not become a default)"
    ),
    "missing_input": Code(422, _ARG, "a V2 or TF Serving request without one of the inputs"),
    "unknown_input": Code(422, _ARG, "a V2 input the model does not have"),
    "duplicate_input": Code(422, _ARG, "a V2 input named twice"),
    "unknown_output": Code(422, _ARG, "an output the model does not have"),
    "invalid_parameter": Code(422, _ARG, "a query or request parameter with a wrong value"),
    "empty_batch": Code(422, _ARG, "a request with no items"),
    "empty_image": Code(422, _ARG, "an image of no bytes"),
    "image_too_small": Code(422, _ARG, "an image under 8 px a side"),
    "corrupt_image": Code(422, _ARG, "an image file that cannot be decoded (truncated)"),
    "animated_image": Code(422, _ARG, "an image of several frames"),
    "no_finite_answer": Code(422, _ARG, "the model's output for a valid input is not finite"),
    # 431
    "headers_too_large": Code(431, _BIG, "request line and headers (or trailers) too large"),
    "too_many_headers": Code(431, _BIG, "more header fields than the limit"),
    # 500, 501
    "internal": Code(
        500, "INTERNAL", "a fault of the service (logged; no path or traceback answered)"
    ),
    "unsupported_transfer_coding": Code(501, _NO, "a `Transfer-Encoding` other than `chunked`"),
    # 503
    "model_loading": Code(503, _GONE, "the model or the service is starting (`Retry-After: 5`)"),
    "model_unavailable": Code(503, _GONE, "refused at load (reason given), or unloaded"),
    "overloaded": Code(503, _GONE, "the queue or the worker is full (`Retry-After: 1`)"),
    "too_many_connections": Code(503, _GONE, "over the connection limit (`Retry-After: 1`)"),
    "file_integrity": Code(
        503,
        _GONE,
        "a card or plot file that no longer matches its manifest's sha256, or is no regular file",
    ),
    "repository_unreachable": Code(503, _GONE, "the model repository cannot be read now"),
    "not_ready": Code(503, _GONE, "`/v2/health/ready`: not every model is ready"),
    "model_not_ready": Code(503, _GONE, "`/v2/models/{name}/ready`: the model is not ready"),
    # 504
    "request_timeout": Code(504, _LATE, "no answer within `request_timeout_s`"),
}


# What V2 and TF Serving answer instead of the catalogue's status, as their own servers do
# (applied by ``protocols.common.protocol_errors``; gRPC keeps the code's gRPC status). Both
# answer 400 for 406, 415 and 422 (their clients know 400 and 404), and TF Serving answers
# an unknown ``signature_name`` 400: its server reports it INVALID_ARGUMENT, a field of the
# request's body that is wrong, where the native and V2 routes, which name the signature in
# the URL, answer 404.
FOLDED_TO_400 = (406, 415, 422)
PROTOCOL_STATUS: dict[str, dict[str, int]] = {"tfserving": {"unknown_signature": 400}}


def protocol_status(code: str, protocol: str) -> int:
    """The HTTP status a client of ``protocol`` (``v2``, ``tfserving``) gets for ``code``."""
    status = PROTOCOL_STATUS.get(protocol, {}).get(code, CATALOGUE[code].status)
    return 400 if status in FOLDED_TO_400 else status


def readme_table() -> str:
    """The README's error table (section Bad input), one row per code, from ``CATALOGUE``."""
    rows = ["| status | code | gRPC | meaning |", "|---|---|---|---|"]
    for name, code in sorted(CATALOGUE.items(), key=lambda item: item[1].status):
        rows.append(f"| {code.status} | `{name}` | {code.grpc} | {code.meaning} |")
    return "\n".join(rows)


class RequestError(Exception):
    """A request the service will not run, with the HTTP status and the facts a client needs.

    ``code`` is stable and machine-readable (it also labels the validation-error metric) and
    declared in ``CATALOGUE``, which alone gives the HTTP and gRPC statuses (a protocol that
    answers another does so in ``protocol_status``); ``field``, ``item`` and ``expected``
    point at the exact part of the request at fault.
    """

    status = 422
    grpc = _ARG

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        item: int | None = None,
        expected: str | None = None,
        headers: dict[str, str] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        declared = CATALOGUE.get(code)
        if declared is None:
            raise ValueError(f"error code {code!r} is not declared in service.errors.CATALOGUE")
        self.status = declared.status
        self.grpc = declared.grpc
        self.code = code
        self.message = message
        self.field = field
        self.item = item
        self.expected = expected
        self.headers = headers or {}
        self.request_id = request_id  # answered with ``internal``: the log line to look for

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
        for key in ("field", "item", "expected", "request_id"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body


# Kinds of refusal, for ``except`` clauses and readers; the code decides the status.


class BadRequest(RequestError):
    """The body cannot be parsed at all (not JSON, not multipart)."""


class Unauthorized(RequestError):
    """No credential, or one the service does not know (with ``WWW-Authenticate``)."""


class Forbidden(RequestError):
    """A known caller asking for what it may not (another model, the repository API)."""


class TooManyRequests(RequestError):
    """A caller past its quota (with ``Retry-After``)."""


class NotFound(RequestError):
    pass


class NotAcceptable(RequestError):
    pass


class PayloadTooLarge(RequestError):
    pass


class UnsupportedMediaType(RequestError):
    pass


class Unavailable(RequestError):
    """The model exists but cannot take work now (loading, refused, or overloaded)."""


if __name__ == "__main__":
    print(readme_table())  # the README's error table (section Bad input)
