"""Our service, the peers and the floors in one run, on the same graph and the same V2 body.

    python -m benchmarks.peers --repository models --data-dir ../shared/datasets

For each server, one line of progress per step (installing, starting, measuring, done): it
is started on a free loopback port, asked once for its answer (checked against ONNX Runtime
in-process), warmed with hey, then driven by hey for ``--seconds`` at each ``--concurrency``,
and stopped with its whole process group. A peer that fails to install or start, answers
wrongly or fails requests is a row saying so, not the end of the run. Results: a Markdown
table on stdout, ``peers.json`` and ``peers.png`` in ``--out``, server logs beside them.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import floors, hey
from benchmarks.answers import check, outputs_of
from benchmarks.peers import catalog, report, venvs
from benchmarks.peers.catalog import ROUTE, Launch, Peer
from benchmarks.peers.request import Request, build
from benchmarks.processes import ServerExited, ServerProcess, post, stop_servers_on_sigterm
from benchmarks.servers import ROOT, Server, free_port, ood_off_config
from modelspec import repository
from service.backends.cpus import available_cpus

Row = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--data-dir", type=Path, help="for a real MNIST digit as the input")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of hey before each")
    parser.add_argument(
        "--peers", nargs="*", choices=list(catalog.PEERS), default=list(catalog.PEERS)
    )
    # Measured: every peer served within 30 s here (Ray the slowest); a broken one waits this long.
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds per server")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--checkout",
        type=Path,
        help="also serve another checkout of this repository (same venv) as a row of ours, "
        "to compare commits in the same run",
    )
    parser.add_argument(
        "--no-model-only",
        dest="model_only",
        action="store_false",
        help="leave out the row of ours with the OOD flag off (the classifier alone)",
    )
    return parser.parse_args(argv)


def progress(label: str, step: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {label}: {step}", flush=True)


def drive(
    url: str, request: Request, body_file: Path, args: argparse.Namespace, verify: bool = True
) -> Row:
    """Check the answer once, warm up, then hey at each concurrency: the row's measured part."""
    status, answer = post(url, request.body)
    problem = f"HTTP {status}" if status != 200 else None
    if verify and not problem:
        problem = check(answer, request.expected)
    hey.run(url, body_file, max(args.concurrency), args.warmup)
    runs = []
    for level in args.concurrency:
        result = hey.run(url, body_file, level, args.seconds)
        runs.append({"concurrency": level, **result.summary()})
    failed = sum(r["failed"] for r in runs)
    statuses = [problem] if problem else []
    if failed:
        statuses.append(f"{failed} failed requests")
    return {"runs": runs, "status": "; ".join(statuses) or "ok", "outputs": output_names(answer)}


def output_names(answer: bytes) -> list[str] | None:
    """The names of the outputs the server answered (ours adds the OOD flag's by default)."""
    try:
        return [str(t.get("name")) for t in outputs_of(json.loads(answer))]
    except (ValueError, AttributeError):
        return None


def done_line(row: Row) -> str:
    top = max(row.get("runs", []), key=lambda r: r["concurrency"], default=None)
    measured = f", {top['requests_per_s']:,.0f} req/s at c={top['concurrency']}" if top else ""
    reason = f": {row['reason']}" if row.get("reason") else ""
    return f"done ({row['status']}{measured}){reason}"


def measure_http_floor(request: Request, body_file: Path, args: argparse.Namespace) -> Row:
    row: Row = {"server": "HTTP floor (bare uvicorn+httptools)", "kind": "http floor"}
    row.update(native_v2=None, batching="-", notes="reads the body, answers a fixed JSON")
    label = row["server"]
    port = free_port()
    progress(label, "starting")
    log = args.out / "peers-logs" / "http-floor.log"
    try:
        with ServerProcess(floors.http_floor_command(port), floors.ROOT, {}, log, port) as server:
            row["startup_s"] = round(server.wait_ready(ROUTE, request.body, args.ready_timeout), 1)
            progress(label, "measuring")
            # Its answer is fixed: whether it answered counts, not what.
            row.update(drive(server.url + ROUTE, request, body_file, args, verify=False))
    except (ServerExited, TimeoutError) as error:
        row.update(status="start failed", reason=str(error))
    except RuntimeError as error:
        row.update(status="error", reason=str(error))
    progress(label, done_line(row))
    return row


def measure_ours(
    request: Request,
    body_file: Path,
    args: argparse.Namespace,
    checkout: Path | None = None,
    model_only: bool = False,
) -> Row:
    name = "ours (ONNX backend)" + (f", {checkout}" if checkout else "")
    kind = "ours" if checkout is None else "ours, other checkout"
    env = {"MODEL_REPOSITORY": str(args.repository.resolve())}
    log_name = "ours" if checkout is None else "ours-checkout"
    if model_only:
        name, kind = f"{name}, OOD flag off (the classifier alone)", "ours, model only"
        log_name = "ours-model-only"
        env["SERVING_CONFIG"] = str(ood_off_config(args.out / "peers-logs"))
    row: Row = {"server": name, "kind": kind}
    row["native_v2"] = True
    row.update(batching=f"adaptive, max {catalog.MAX_BATCH}, {catalog.MAX_WAIT_MS:g} ms")
    label = row["server"]
    progress(label, "starting")
    log = args.out / "peers-logs" / f"{log_name}.log"
    with Server(env=env, log=log, cwd=checkout or ROOT) as server:
        try:
            row["startup_s"] = round(server.wait_until("/readyz", timeout=args.ready_timeout), 1)
        except (RuntimeError, TimeoutError) as error:
            row.update(status="start failed", reason=f"{error} (log: {log})")
        else:
            progress(label, "measuring")
            row.update(drive(server.url + ROUTE, request, body_file, args))
    progress(label, done_line(row))
    return row


def prepare(peer: Peer, python: Path, workdir: Path, onnx: Path) -> Launch:
    """The peer's work folder: its glue from apps/ and its configuration files."""
    launch = Launch(
        python=python,
        workdir=workdir,
        port=free_port(),
        ports={name: free_port() for name in peer.extra_ports},
        onnx=onnx,
    )
    files = {peer.destination: (catalog.APPS / peer.app).read_text(), **peer.files(launch)}
    for name, text in files.items():
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(text)
    if peer.setup is not None:
        peer.setup(launch)
    return launch


def measure_peer(
    peer: Peer,
    request: Request,
    body_file: Path,
    onnx: Path,
    workspace: Path,
    args: argparse.Namespace,
) -> Row:
    row: Row = {"server": peer.label, "kind": "peer", "name": peer.name}
    row.update(native_v2=peer.native_v2, batching=peer.batching, notes=peer.notes)
    row["requirements"] = list(peer.requirements)
    try:
        if peer.requirements:
            if not venvs.current(peer.venv_name, peer.requirements):
                progress(peer.label, "installing " + " ".join(peer.requirements))
            venv = venvs.ensure(peer.venv_name, peer.requirements)
            row["install"] = {"reused": venv.reused, "seconds": venv.seconds, "mb": venv.size_mb}
            how = "venv reused" if venv.reused else f"installed in {venv.seconds:.0f} s"
            progress(peer.label, f"{how}, {venv.size_mb:,.0f} MB")
            python = venv.python
        else:
            python = catalog.own_python()
        progress(peer.label, "starting")
        launch = prepare(peer, python, workspace / peer.name, onnx)
        env = {**launch.env(), **peer.env(launch), "PYTHONUNBUFFERED": "1"}
        log = args.out / "peers-logs" / f"{peer.name}.log"
        with ServerProcess(peer.command(launch), launch.workdir, env, log, launch.port) as server:
            seconds = server.wait_ready(ROUTE, request.body, args.ready_timeout)
            row["startup_s"] = round(seconds, 1)
            progress(peer.label, f"serving after {seconds:.1f} s; measuring")
            row.update(drive(server.url + ROUTE, request, body_file, args))
        if server.strays:
            progress(
                peer.label,
                f"stopped {len(server.strays)} processes it had started outside its group",
            )
    except venvs.InstallFailed as error:
        row.update(status="install failed", reason=str(error))
    except (ServerExited, TimeoutError) as error:
        row.update(status="start failed", reason=str(error))
    except Exception as error:  # a peer's failure is a row, never the end of the run
        row.update(status="error", reason=f"{type(error).__name__}: {error}")
    progress(peer.label, done_line(row))
    return row


def onnx_file(repo: Path) -> Path:
    version = repository.latest_version(repo, "digits")
    return (repository.version_dir(repo, "digits", version) / "model.onnx").resolve()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stop_servers_on_sigterm()
    hey.require()
    (args.out / "peers-logs").mkdir(parents=True, exist_ok=True)
    onnx = onnx_file(args.repository)
    request = build(onnx, args.data_dir)
    # Short path: Ray puts unix sockets under its temp folder, and their paths are limited.
    workspace = Path(tempfile.mkdtemp(prefix="pr-"))
    body_file = workspace / "body.json"
    body_file.write_bytes(request.body)
    rows: list[Row] = []
    model_floor: dict[str, float] = {}
    interrupted = False
    try:
        progress("ONNX Runtime in-process", "measuring")
        model_floor = floors.onnx_in_process(onnx, request.image, min(args.seconds, 3.0))
        progress("ONNX Runtime in-process", "done (" + report.model_floor_line(model_floor) + ")")
        rows.append(measure_http_floor(request, body_file, args))
        if args.checkout:
            rows.append(measure_ours(request, body_file, args, args.checkout.resolve()))
        rows.append(measure_ours(request, body_file, args))
        if args.model_only:
            rows.append(measure_ours(request, body_file, args, model_only=True))
        for name in args.peers:
            peer = catalog.PEERS[name]
            rows.append(measure_peer(peer, request, body_file, onnx, workspace, args))
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: every server started was stopped; writing what was measured")
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    cpus = available_cpus()
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": cpus, "platform": platform.platform()},
        "onnx": str(onnx),
        "seconds_per_run": args.seconds,
        "concurrency": args.concurrency,
        "load_generator": "hey (keep-alive, same body file for every server)",
        "model_floor": model_floor,
        "rows": rows,
    }
    print()
    print(report.table(rows, args.concurrency))
    if model_floor:
        print()
        print(report.model_floor_line(model_floor))
    report.write_json(result, args.out / "peers.json")
    if rows:
        title = (
            f"Same ONNX digits graph, same V2 JSON body, one run: {cpus} CPUs shared by hey "
            "and the server"
        )
        if model_floor:
            title += "\n" + report.model_floor_line(model_floor)
        report.plot(rows, args.concurrency, args.out / "peers.png", title)
    print(f"\nwrote {args.out / 'peers.json'} and {args.out / 'peers.png'}")
    if interrupted:
        sys.exit(130)
