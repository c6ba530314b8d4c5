"""Structured logs: every line a request handler writes carries that request's id, and no
string a client chose can end a record or reach the operator's terminal as a control code.

Client strings reach log lines by many roads: a model name decoded from the URL (``%0A`` is a
newline), ``x-request-id``, a path that falls through to BentoML's or uvicorn's access log,
an exception message quoting a field. Escaping at each call would miss the next road, so the
escaping is done once, where every record of the process is made (``install``): each string
argument, and any other object's ``str``/``repr``, has its control characters written as
``\\n``, ``\\x1b``... before any handler or formatter (ours, BentoML's, uvicorn's) sees it.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import re
import traceback
from contextvars import ContextVar
from typing import Any

request_id: ContextVar[str] = ContextVar("request_id", default="-")

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything that can
# end a line or steer a terminal. Tracebacks keep their own line breaks (``_CONTROL_BUT_NL``).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_PLAIN = (numbers.Number, type(None))  # numpy's too: %d and %.2f keep working
# A client's x-request-id is echoed in answers and logs: taken as is only when it is 1-128
# printable ASCII characters without spaces (W3C trace ids, UUIDs); otherwise a fresh one.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_match(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape(text: str) -> str:
    """``text`` on one line, its control characters written out (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escape_match, text) if _CONTROL.search(text) else text


class _Escaped:
    """An argument that is neither a number nor a string (an exception, a path...): its
    ``str`` and ``repr`` come out escaped, whatever format code the message uses."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape(str(self.value))

    def __repr__(self) -> str:
        return escape(repr(self.value))

    def __format__(self, spec: str) -> str:
        return escape(format(self.value, spec))


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, tuple):  # uvicorn's access log unpacks its args as a tuple
        return tuple(_safe(v) for v in value)
    return _Escaped(value)


def _exception_text(exc_info: Any) -> str:
    """A traceback whose exception messages (where client strings turn up) are one line
    each; the frames' own lines are the server's code and keep their line breaks."""
    formatted = traceback.TracebackException(*exc_info)
    seen = set()
    pending = [formatted]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current._str = escape(str(current._str))  # the message format_exception_only writes
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    text = "".join(formatted.format()).rstrip("\n")
    return _CONTROL_BUT_NL.sub(_escape_match, text)


def install() -> None:
    """Every log record made in this process from now on has its client strings escaped
    (BentoML's, uvicorn's and gRPC's loggers included). Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_escapes", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = escape(record.msg)
        elif not isinstance(record.msg, dict):  # a dict: fields of a JSON line (or its repr)
            record.msg = _Escaped(record.msg)
        if isinstance(record.args, dict):
            record.args = {k: _safe(v) for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(_safe(v) for v in record.args)
        if record.exc_info and record.exc_info[0] is not None:
            with contextlib.suppress(Exception):  # never lose the record over its traceback
                record.exc_text = _exception_text(record.exc_info)
        return record

    make_record._escapes = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


def client_request_id(given: str | None) -> str:
    """The request id a client sent, when it is a safe token; a fresh one otherwise."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(12).hex()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(json_lines: bool) -> None:
    """The ``service`` loggers write to stderr, as JSON lines when asked (for log shippers)."""
    logger = logging.getLogger("service")
    if getattr(logger, "_configured", False):
        return
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if json_lines:
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger._configured = True  # type: ignore[attr-defined]
