"""What authentication adds to a request: one single-digit V2 infer request at c=1 and c=32
against two servers started by this run, one open and one with API keys (and JWTs) on, in
alternating rounds; plus the check itself, timed in-process. Prints and writes JSON.

    python -m benchmarks.auth_cost --repository models --seconds 5 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
import timeit
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from benchmarks import hey
from benchmarks.payloads import v2_json
from benchmarks.servers import Server

KEY = "bench-key-0123456789abcdef"
PATH = "/v2/models/digits/infer"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians kept")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser.parse_args()


def keys_file(folder: Path) -> Path:
    path = folder / "keys.yaml"
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    path.write_text(f"keys:\n  - {{id: bench, sha256: {digest}, models: [digits]}}\n")
    return path


def in_process(keys: Path) -> dict[str, float]:
    """Microseconds per check: a key (sha256, lookup, compare, counts), a cached JWT."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from service.auth import Guard
    from service.config import load_config

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = keys.parent / "jwks.json"
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k", "alg": "RS256"}]}))
    guard = Guard(
        load_config(
            {
                "SERVING_API_KEYS_FILE": str(keys),
                "SERVING_JWT_KEYS_FILE": str(jwks),
                "SERVING_JWT_ISSUER": "bench",
                "SERVING_JWT_AUDIENCE": "bench",
            }
        )
    )
    now = int(time.time())
    claims = {"iss": "bench", "aud": "bench", "exp": now + 3600, "models": ["digits"]}
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k"})
    key_headers = {"x-api-key": KEY}
    jwt_headers = {"authorization": f"Bearer {token}"}
    n = 200_000
    key_us = min(timeit.repeat(lambda: guard.check(key_headers, "digits"), number=n, repeat=3))
    guard.check(jwt_headers, "digits")
    jwt_us = min(timeit.repeat(lambda: guard.check(jwt_headers, "digits"), number=n, repeat=3))
    verifier = guard.jwt
    assert verifier is not None

    def first_time() -> None:
        verifier._cache.clear()
        guard.check(jwt_headers, "digits")

    verify_us = timeit.timeit(first_time, number=200) / 200 * 1e6
    return {
        "api_key_check_us": round(key_us / n * 1e6, 2),
        "jwt_check_cached_us": round(jwt_us / n * 1e6, 2),
        "jwt_first_verify_us": round(verify_us, 1),
    }


def _median(values: Iterable[float | None]) -> float | None:
    """The median of the values hey printed (it leaves out percentiles of short runs)."""
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def main() -> None:
    args = parse_args()
    hey.require()
    scratch = Path(tempfile.mkdtemp(prefix="auth-cost-"))
    keys = keys_file(scratch)
    body = scratch / "body.json"
    body.write_bytes(v2_json(np.zeros((1, 28, 28), dtype=np.float32)).body)
    base = {"MODEL_REPOSITORY": str(args.repository.resolve()), "SERVING_WORKERS": "1"}
    servers = {
        "open": Server(env=base, log=scratch / "open.log"),
        "keys": Server(env={**base, "SERVING_API_KEYS_FILE": str(keys)}, log=scratch / "keys.log"),
    }
    figures: dict[str, dict[int, list[dict]]] = {name: {1: [], 32: []} for name in servers}
    with servers["open"], servers["keys"]:
        for server in servers.values():
            server.wait_until("/readyz", timeout=900)
        headers = {"open": {}, "keys": {"x-api-key": KEY}}
        for name, server in servers.items():  # warm-up, and a check that the key works
            warm = hey.run(server.url + PATH, body, 4, 2.0, headers=headers[name])
            assert warm.failed == 0, (name, warm.summary())
        for round_number in range(args.rounds):
            # Which server goes first alternates: on a shared machine, load from elsewhere
            # drifts within a round, and a fixed order would bias one side.
            order = list(servers.items())[:: -1 if round_number % 2 else 1]
            for concurrency in (1, 32):
                for name, server in order:
                    found = hey.run(
                        server.url + PATH, body, concurrency, args.seconds, headers=headers[name]
                    )
                    figures[name][concurrency].append(found.summary())
                    print(
                        f"{name:5} c={concurrency:<3} {found.requests_per_s:8.0f} req/s  "
                        f"p50 {found.percentiles_ms.get(50)} ms  p99 "
                        f"{found.percentiles_ms.get(99)} ms  failed {found.failed}",
                        flush=True,
                    )
    result: dict[str, object] = {"seconds": args.seconds, "rounds": args.rounds}
    for concurrency in (1, 32):
        row = {}
        for name in servers:
            runs = figures[name][concurrency]
            row[name] = {
                "requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
                **{key: _median(r[key] for r in runs) for key in ("p50_ms", "p99_ms")},
                "failed": sum(r["failed"] for r in runs),
            }
        open_rps, keys_rps = row["open"]["requests_per_s"], row["keys"]["requests_per_s"]
        # Per request, from throughput: at c=1 the added latency, at c=32 the added CPU.
        row["added_us_per_request"] = round((1 / keys_rps - 1 / open_rps) * 1e6, 1)
        result[f"c{concurrency}"] = row
    result["in_process"] = in_process(keys)
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "auth_cost.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'auth_cost.json'}")


if __name__ == "__main__":
    main()
