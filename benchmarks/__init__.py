"""Benchmarks: drive a running service over HTTP and report throughput and latency."""
