"""What each feature costs, in one run: the service with its defaults against the same
service with one setting changed, V2 JSON with one digit, ``hey`` at c=1 and c=32.

    python -m benchmarks.feature_cost --repository models --data-dir ../shared/datasets

The defaults are what a user gets: drift checks on, digits' out-of-distribution flag on (its
manifest names the autoencoder: one more batched inference), authentication off, tracing
off. Each other row changes one thing: drift off, OOD flags off, API keys on (every request
sends its key), tracing exporting OTLP/HTTP to a local sink (``benchmarks.otlp_sink``) at a
sampling ratio of 0.01 and 1.0, and a shadow (``config.yaml``: live traffic on digits version
1, a ``sample`` of it also run on version 2, an identical copy, and compared) at 0.1 and 1.0;
the shadow's servers get a copy of the repository with that second version.

Every server is started first and stays up (an idle one takes next to no CPU); each is checked
and warmed up, then measured in turn, ``--rounds`` times: within a round each concurrency
goes through every server, in an order reversed every other round, so that load from
elsewhere (2 cores, shared with hey and whatever else runs) drifting during a run falls on
every row alike. Measuring one server after another, each started and stopped in its turn,
gave the defaults 0.5x of themselves between rounds on a busy machine. Each row's ratio to the
defaults is taken within a round and level; the table gives its median and range. Prints a
Markdown table; writes ``feature_cost.json``.

    python -m benchmarks.feature_cost ... --only defaults "OOD flags off" --checkout ../before

``--only`` keeps the settings whose names start with one of its words (fewer servers on a
small machine); ``--checkout DIR`` also serves each kept setting from another checkout's
code (same venv, cwd ``DIR``), in the same rounds, its rows marked ``[DIR's name]`` and
taken as ratios to this checkout's defaults: an A/B of two commits, feature by feature.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks import hey, otlp_sink
from benchmarks.payloads import mnist_test, v2_json
from benchmarks.processes import ServerProcess, post
from benchmarks.servers import ROOT, Server, free_port, ood_off_config
from modelspec import digits

PATH = "/v2/models/digits/infer"
KEY = "feature-cost-key-0123456789abcdef"


@dataclass
class Setting:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT  # the checkout whose code is served


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--only", nargs="+", help="settings whose names start with these")
    parser.add_argument("--checkout", type=Path, help="also serve this checkout's code")
    return parser.parse_args(argv)


def shadow_repository(repository: Path, folder: Path, sample: float) -> Path:
    """``repository`` with digits version 1 copied as version 2 and shadowing it."""
    from tests import rollout_models

    copy = folder / f"shadow-{sample:g}"
    shutil.copytree(repository, copy)
    digits_folder = copy / "digits"
    for extra in [p for p in digits_folder.iterdir() if p.is_dir() and p.name != "1"]:
        shutil.rmtree(extra)
    rollout_models.same(digits_folder / "1", digits_folder / "2")
    config = "version_policy: {all: true}\ntraffic: {1: 1}\n"
    config += f"shadow: {{target: 2, sample: {sample:g}}}\n"
    (digits_folder / "config.yaml").write_text(config)
    return copy


def settings(folder: Path, sink_port: int, repository: Path) -> list[Setting]:
    keys = folder / "keys.yaml"
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    keys.write_text(f"keys:\n  - {{id: bench, sha256: {digest}, models: [digits]}}\n")

    def traced(ratio: float) -> dict[str, str]:
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}{otlp_sink.PATH}",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": f"{ratio:g}",
        }

    def shadowed(sample: float) -> dict[str, str]:
        return {"MODEL_REPOSITORY": str(shadow_repository(repository, folder, sample))}

    return [
        Setting("defaults (drift on, OOD flags on, auth off, tracing off)"),
        Setting("drift off", {"SERVING_DRIFT": "false"}),
        Setting("OOD flags off", {"SERVING_CONFIG": str(ood_off_config(folder))}),
        Setting("auth on (API key)", {"SERVING_API_KEYS_FILE": str(keys)}, {"x-api-key": KEY}),
        Setting("tracing on, sampled 0.01", traced(0.01)),
        Setting("tracing on, sampled 1.0", traced(1.0)),
        Setting("shadow on, sample 0.1", shadowed(0.1)),
        Setting("shadow on, sample 1.0", shadowed(1.0)),
    ]


def chosen(measured: list[Setting], only: list[str] | None, checkout: Path | None):
    """The settings ``--only`` keeps (the defaults first), each also from ``--checkout``."""
    kept = [s for s in measured if not only or any(s.name.startswith(o) for o in only)]
    if not kept or kept[0] is not measured[0]:
        kept.insert(0, measured[0])  # every ratio is to this checkout's defaults
    if checkout is None:
        return kept
    other = checkout.resolve()
    return kept + [replace(s, name=f"{s.name} [{other.name}]", cwd=other) for s in kept]


def server_for(setting: Setting, repository: Path, log: Path) -> Server:
    env = {"MODEL_REPOSITORY": str(repository), "SERVING_WORKERS": "1", **setting.env}
    return Server(env=env, log=log, cwd=setting.cwd)  # setting.env may name its repository


def ready(server: Server, setting: Setting, body: bytes, body_file: Path, args) -> str:
    server.wait_until("/readyz", timeout=600)
    url = server.url + PATH
    status, answer = post_with(url, body, setting.headers)
    if status != 200:
        raise RuntimeError(f"{setting.name}: HTTP {status} {answer[:200]!r}")
    hey.run(url, body_file, max(args.concurrency), args.warmup, headers=setting.headers)
    return url


def post_with(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    if not headers:
        return post(url, body)
    import httpx

    answer = httpx.post(url, content=body, headers={"content-type": "application/json", **headers})
    return answer.status_code, answer.content


def summarise(rounds: list[dict[str, dict[int, dict[str, Any]]]], names: list[str], levels):
    """Per row and level: median req/s and p50, and the ratio to the defaults within each
    round (median and range)."""
    base = names[0]
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for name in names:
        table[name] = {}
        for level in levels:
            runs = [r[name][level] for r in rounds if name in r]
            if not runs:
                continue
            ratios = [
                r[name][level]["requests_per_s"] / r[base][level]["requests_per_s"]
                for r in rounds
                if name in r and r[base][level]["requests_per_s"]
            ]
            p50s = [x["p50_ms"] for x in runs if x.get("p50_ms") is not None]
            table[name][level] = {
                "requests_per_s": statistics.median(x["requests_per_s"] for x in runs),
                "p50_ms": round(statistics.median(p50s), 2) if p50s else None,
                "vs_defaults": round(statistics.median(ratios), 3) if ratios else None,
                "vs_defaults_range": [round(min(ratios), 3), round(max(ratios), 3)]
                if ratios
                else None,
                "failed": sum(x["failed"] for x in runs),
                "runs": runs,
            }
    return table


def markdown(table: dict, levels: list[int]) -> str:
    head = "| setting | " + " | ".join(f"c={c} req/s (p50 ms) | vs defaults" for c in levels)
    lines = [head + " |", "|---|" + "---:|---:|" * len(levels)]
    for name, row in table.items():
        cells = []
        for level in levels:
            found = row.get(level)
            if not found:
                cells += ["-", "-"]
                continue
            low, high = found["vs_defaults_range"] or (None, None)
            spread = f" ({low:.2f}-{high:.2f})" if low is not None and low != high else ""
            p50 = f" ({found['p50_ms']})" if found["p50_ms"] is not None else ""
            cells += [
                f"{found['requests_per_s']:,.0f}{p50}",
                f"{found['vs_defaults']:.2f}x{spread}",
            ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    hey.require()
    repository = args.repository.resolve()
    images, _ = mnist_test(args.data_dir, 1)
    body = v2_json(digits.scale_pixels(images).astype("float32")).body
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "feature-cost-logs"
    logs.mkdir(exist_ok=True)
    rounds: list[dict[str, dict[int, dict[str, Any]]]] = []
    with tempfile.TemporaryDirectory(prefix="feature-cost-") as scratch, ExitStack() as stack:
        folder = Path(scratch)
        body_file = folder / "body.json"
        body_file.write_bytes(body)
        port = free_port()
        sink_command = [sys.executable, "-m", "benchmarks.otlp_sink", "--port", str(port)]
        sink = ServerProcess(sink_command, ROOT, {}, logs / "otlp-sink.log", port)
        stack.enter_context(sink)
        sink.wait_listening(60)
        measured = chosen(settings(folder, port, repository), args.only, args.checkout)
        servers = []
        for number, setting in enumerate(measured):
            log = logs / f"server-{number}.log"
            servers.append(stack.enter_context(server_for(setting, repository, log)))
        urls = [
            ready(server, setting, body, body_file, args)
            for server, setting in zip(servers, measured, strict=True)
        ]
        print(f"{time.strftime('%H:%M:%S')}  {len(servers)} servers ready", flush=True)
        pairs = list(zip(measured, urls, strict=True))
        for number in range(args.rounds):
            found: dict[str, dict[int, dict[str, Any]]] = {s.name: {} for s in measured}
            for level in args.concurrency:
                for setting, url in pairs if number % 2 == 0 else pairs[::-1]:
                    result = hey.run(url, body_file, level, args.seconds, headers=setting.headers)
                    found[setting.name][level] = result.summary()
                    print(
                        f"{time.strftime('%H:%M:%S')}  round {number + 1}, c={level}: "
                        f"{setting.name}: {result.requests_per_s:,.0f} req/s",
                        flush=True,
                    )
            rounds.append(found)
    names = [s.name for s in measured]
    table = summarise(rounds, names, args.concurrency)
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "table": {name: {str(k): v for k, v in row.items()} for name, row in table.items()},
    }
    (args.out / "feature_cost.json").write_text(json.dumps(result, indent=2))
    print()
    print(markdown(table, args.concurrency))
    print(f"\nwrote {args.out / 'feature_cost.json'}")


if __name__ == "__main__":
    main()
