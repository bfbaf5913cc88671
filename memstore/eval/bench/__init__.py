"""Latency and throughput benchmarks behind ``memstore bench``: search, ingest, overhead, CLI start-up
(runs), server backends (backends) and the proxy (server)."""
