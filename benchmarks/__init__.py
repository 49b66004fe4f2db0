"""Repeatable measurements of bananaflow against the quota ceiling and against its peers.

``python -m benchmarks [--quick]`` is the one entry point (see ``suite.py``). Results are
written (JSON + markdown), never asserted: timings belong here, not in the tests.
"""
