"""Benchmark harnesses shipped as a feature: extraction quality, LoCoMo, PrefEval, latency, compliance."""
