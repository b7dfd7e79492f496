"""Benchmark harness for fastlb against HAProxy and nginx (`python -m bench.run`).

A package so the harness's pure parts (wrk output, /proc parsing, the report) can be imported
and unit-tested by tests/test_bench.py.
"""
