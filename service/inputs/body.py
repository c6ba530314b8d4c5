"""The body read: content types, JSON and multipart parsing (reading it off the connection,
within its size limit, is ``service.http``'s)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from python_multipart.multipart import parse_options_header

from service.errors import BadRequest

MULTIPART = "multipart/form-data"
IMAGE_TYPES = ("image/png", "image/jpeg", "application/octet-stream")
# One rule on every protocol: a JSON body is read as JSON whatever content type it declares
# (none, curl -d's application/x-www-form-urlencoded, text/plain...), as Triton and TF
# Serving read theirs. Only routes that take image files read a body declared as one of
# these as files instead.
UPLOAD_TYPES = (MULTIPART, *IMAGE_TYPES)


@dataclass(frozen=True)
class Upload:
    """One uploaded file; ``name`` is the form field (or ``body`` for a raw upload)."""

    name: str
    data: bytes


def media_type_of(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_json(body: bytes, content_type: str = "") -> Any:
    """The JSON document of a body; ``content_type``, when given and not JSON, is named in
    the error, since it is the likeliest reason a body is not JSON."""
    if not body:
        raise BadRequest("empty_body", "request body is empty", expected="a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        kind = media_type_of(content_type)
        declared = f" (declared content type {kind[:60]!r})" if kind and "json" not in kind else ""
        raise BadRequest(
            "invalid_json",
            f"body is not valid JSON{declared}: {error}",
            expected="a JSON document (content-type: application/json)" if declared else None,
        ) from None


def parse_multipart(body: bytes, content_type: str) -> list[Upload]:
    """Every file part of a multipart/form-data body, in order."""
    from python_multipart.multipart import MultipartParser

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("invalid_multipart", "multipart body without a boundary")
    uploads: list[Upload] = []
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        state.update(headers={}, data=[], header_name=b"", header_value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header_name"].lower()] = state["header_value"]
        state.update(header_name=b"", header_value=b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"].append(data[start:end])

    def on_part_end() -> None:
        disposition, options = parse_options_header(state["headers"].get(b"content-disposition"))
        part_type = state["headers"].get(b"content-type", b"")
        is_file = b"filename" in options or part_type.startswith(b"image/")
        if disposition != b"form-data" or not is_file:
            return  # plain form fields carry no image; options travel in the query
        name = options.get(b"name", b"file").decode("utf-8", "replace")
        uploads.append(Upload(name, b"".join(state["data"])))

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:  # the parser refuses some boundaries (over 70 bytes...) when it is built
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except Exception as error:
        raise BadRequest("invalid_multipart", f"malformed multipart body: {error}") from None
    return uploads


def image_uploads(body: bytes, content_type: str) -> list[Upload]:
    """Images from a multipart form (one or many files) or a raw image body (any other
    declared type: a body that is not JSON is read as files, ``Incoming.is_json``; a
    declared content type is never refused by itself, README)."""
    if media_type_of(content_type) == MULTIPART:
        uploads = parse_multipart(body, content_type)
    else:
        uploads = [Upload("body", body)] if body else []
    if not uploads:
        raise BadRequest("empty_batch", "no image in the request", expected="at least one image")
    return uploads
