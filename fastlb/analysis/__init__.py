"""The spec's analysis (A-1..A-4), run against real fastlb balancers: `python -m fastlb.analyze`.

Split in parts that can be tested apart: `client` (a small asyncio HTTP/1.1 client, also used by
bench/dates.py), `progress` (the terminal progress line), `distribution` (pure-table arithmetic:
what a table does with a set of keys), `experiments` (balancers started in this process and
loaded), `plots` (matplotlib, imported only when drawing) and `render` (report.md).
"""
