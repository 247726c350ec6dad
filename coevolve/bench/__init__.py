"""Benchmarks behind `coevolve bench`: each returns a JSON-able dict of measured figures."""
