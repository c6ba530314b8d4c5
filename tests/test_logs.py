"""Log records escape client strings (``service.logs.install``), in the text and JSON forms the
service writes and in the argument shapes BentoML's and uvicorn's access logs use. The
end-to-end check against a real server is in tests/test_hostile.py."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from pythonjsonlogger.json import JsonFormatter

from service import logs

HOSTILE = ["x\nFAKE line", "x\r\nFAKE", "\x1b[2J\x1b[31mred", "a\u2028FAKE", "nul\x00", "\x85FAKE"]


@pytest.fixture
def captured():
    previous = logging.getLogRecordFactory()
    logs.install()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, handler, stream
    logger.removeHandler(handler)
    logging.setLogRecordFactory(previous)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_every_argument_shape_is_one_line(captured) -> None:
    logger, _, stream = captured
    for text in HOSTILE:
        logger.info("%s refused", text)  # our handlers' call.label
        logger.info("%s (%s) %.3fms", "1.2.3.4:5", f"path={text}", 1.5)  # BentoML access log
        logger.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/{text}", "1.1", 404)
        logger.info("error: %s", ValueError(text))  # an object's str
        logger.info("name %r", text)
        logger.info(f"pre-formatted {text}")  # a message that is client text
        logger.info("%(name)s", {"name": text})
    logger.info("%d items, %.1f ms", np.int64(3), np.float32(2.5))  # numbers stay numbers
    lines = _lines(stream)
    assert len(lines) == 7 * len(HOSTILE) + 1, lines
    for line in lines:
        assert not any(c in line for c in "\r\x1b\x00\u2028\x85"), repr(line)
        assert not line.startswith("FAKE"), line
    assert lines[-1] == "3 items, 2.5 ms"
    assert lines[0] == "x\\nFAKE line refused"


def test_tracebacks_keep_their_lines_but_not_the_clients(captured) -> None:
    logger, handler, stream = captured
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    try:
        raise KeyError("bad\nFAKE injected \x1b[31m")
    except KeyError:
        logger.exception("failed on %s", "x\nFAKE")
    lines = _lines(stream)
    assert lines[0] == "ERROR failed on x\\nFAKE"
    assert lines[1].startswith("Traceback")
    assert not any(line.startswith("FAKE") for line in lines), lines
    assert "\x1b" not in stream.getvalue()


def test_json_lines_stay_json(captured) -> None:
    logger, handler, stream = captured
    handler.setFormatter(JsonFormatter("%(levelname)s %(message)s"))
    for text in HOSTILE:
        logger.info("model %s refused", text)
    lines = _lines(stream)
    assert len(lines) == len(HOSTILE)
    assert json.loads(lines[0])["message"] == "model x\\nFAKE line refused"


def test_request_ids_are_safe_tokens_or_fresh() -> None:
    for safe in ("rid-42", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a" * 128):
        assert logs.client_request_id(safe) == safe
    for hostile in (None, "", "a b", "a\nb", "\x1b[31m", "é", "a" * 129, "a\tb"):
        fresh = logs.client_request_id(hostile)
        assert fresh != hostile and len(fresh) == 24 and fresh.isalnum()
