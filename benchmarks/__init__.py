"""Benchmarks that drive a real chatsite process (daphne) against the fake upstream.

See ``benchmarks/README.md``; results go to ``docs/benchmarks.md``.
"""
