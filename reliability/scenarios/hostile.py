"""The hostile corpus, request by request, each followed by a valid request that must still
get the right answer; the service must be live and ready at the end."""

from __future__ import annotations

import http.client
import json
from collections import Counter
from typing import Any

import numpy as np

from benchmarks.servers import Server
from reliability import framing
from reliability.corpus import REFUSED, Hostile
from reliability.report import ScenarioResult
from reliability.traffic import Exchange, answer_is_correct
from service.errors import CATALOGUE, protocol_status
from service.metrics import protocol_of


def send(
    server: Server, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """Exactly these bytes and this path (no client-side normalisation of ``..``)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    except (ConnectionError, http.client.HTTPException) as error:
        return 0, {}, type(error).__name__.encode()
    finally:
        connection.close()


def _numbers_and_words(value: Any) -> tuple[list[float], list[str]]:
    if isinstance(value, dict):
        value = [value[k] for k in sorted(value) if k != "version"]
    if isinstance(value, list):
        numbers, words = [], []
        for item in value:
            n, w = _numbers_and_words(item)
            numbers += n
            words += w
        return numbers, words
    if isinstance(value, bool | str):
        return [], [str(value)]
    return [float(value)], []


def same_answer(first: bytes, second: bytes) -> bool:
    a_numbers, a_words = _numbers_and_words(json.loads(first))
    b_numbers, b_words = _numbers_and_words(json.loads(second))
    return a_words == b_words and np.allclose(a_numbers, b_numbers, atol=1e-4)


def refusal_fault(path: str, status: int, code: Any) -> str | None:
    """None when ``code`` is in the error catalogue and ``status`` is what the catalogue
    answers for it: its own status, or the one the path's protocol answers instead (V2 and
    TF Serving, ``errors.protocol_status``: their refusals carry the same ``code`` field; a
    refusal before any protocol reads the request, at the connection or the route table,
    keeps the catalogue's)."""
    if code not in CATALOGUE:
        return f"code {code!r} is not in the error catalogue"
    protocol = protocol_of(path)
    allowed = {CATALOGUE[code].status}
    if protocol != "native":
        allowed.add(protocol_status(code, protocol))
    if status not in allowed:
        return f"status {status} for {code!r}, the catalogue says {sorted(allowed)}"
    return None


def check_case(server: Server, case: Hostile) -> str | None:
    """None when the case got the answer it must get; else what went wrong."""
    status, headers, body = send(server, case.method, case.path, case.body, case.headers)
    if case.expect == REFUSED:
        if not 400 <= status < 500:
            return f"status {status}"
        if not headers.get("content-type", "").startswith("application/json"):
            return f"content type {headers.get('content-type')}"
        try:
            error = json.loads(body)
            message, code = error["error"], error["code"]
        except (ValueError, KeyError, TypeError):
            return "no JSON error body with its code"
        if not isinstance(message, str) or not message:
            return "empty error"
        return refusal_fault(case.path, status, code)
    twin_status, _, twin_body = send(server, case.method, case.path, *case.twin)
    if status != 200 or twin_status != 200:
        return f"statuses {status} and {twin_status} (twin)"
    return None if same_answer(body, twin_body) else "answer differs from its ordinary twin"


def run_hostile(server: Server, cases: list[Hostile], probe: Exchange) -> ScenarioResult:
    result = ScenarioResult(
        "hostile corpus",
        "every hostile request a 4xx JSON error (odd-but-valid images answered like their "
        "twin); each RFC 9112 framing case its exact answer (reliability/framing.py); a "
        "valid request after each still right; service healthy after",
    )
    statuses: Counter[str] = Counter()
    probes_wrong = 0
    for case in cases:
        problem = check_case(server, case)
        if problem:
            result.failures.append(f"{case.name}: {problem}")
        status, _, body = send(
            server, "POST", probe.path, probe.payload.body,
            {"content-type": probe.payload.content_type},
        )  # fmt: skip
        if not answer_is_correct(probe, status, body):
            probes_wrong += 1
            result.failures.append(f"valid request after {case.name}: status {status}")
        statuses[case.expect] += 1
    # Framing (RFC 9112) on raw sockets: what http.client cannot send.
    framing_exchanges, framing_failures = framing.run(server.port)
    result.failures += [f"framing: {failure}" for failure in framing_failures]
    live, _, _ = send(server, "GET", "/livez", b"", {})
    ready, _, _ = send(server, "GET", "/readyz", b"", {})
    result.figures = {
        "cases": len(cases),
        "refused_cases": statuses[REFUSED],
        "accepted_odd_images": len(cases) - statuses[REFUSED],
        "cases_wrong": len(result.failures) - probes_wrong - len(framing_failures),
        "valid_after_each_wrong": probes_wrong,
        "framing_cases": len(framing.cases()),
        "framing_exchanges": framing_exchanges,
        "framing_wrong": len(framing_failures),
        "live_after": live,
        "ready_after": ready,
    }
    result.require(live == 200 and ready == 200, f"after the corpus: livez {live}, readyz {ready}")
    result.require(len(cases) >= 100, f"only {len(cases)} cases")
    return result
