"""Peers in one run: other model servers and ours on the same ONNX graph and V2 request.

``python -m benchmarks.peers --repository models --data-dir ../shared/datasets`` installs each
peer into its own cached venv, starts it on a loopback port around the digits ONNX graph,
checks its answer against ONNX Runtime in-process, drives it with ``hey`` at each
concurrency, and does the same for our service and two floors (a bare ASGI app: the HTTP
floor; ONNX Runtime in-process: the model floor). One module per job:

- ``catalog``: the peers (pinned packages, how each is started, what it speaks);
  ``apps/``: the serving glue each peer runs, copied into a temporary folder at run time;
- ``venvs``: the cached per-peer venvs;
- ``request``: the V2 body and the in-process reference answer;
- ``report``: the Markdown table, JSON and PNG;
- ``run``: the command line, putting the rest together.

Shared with ``benchmarks.serve_bench``, one level up: ``benchmarks.processes`` (a server as a
process group on a free port, stopped cleanly), ``benchmarks.hey`` (the load generator and its
output parser), ``benchmarks.floors`` (the HTTP floor app and the in-process ONNX Runtime
floor) and ``benchmarks.answers`` (the answer check).
"""
