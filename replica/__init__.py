"""The demo backend fastlb balances: the classic /home and /heartbeat, plus NASA-shaped /neo, /apod.

It exists so that the balancer has something real to start, kill, heal and measure: a small, fast,
dependency-light HTTP/1.1 server whose answers say which replica served them.
"""

__all__ = ["__version__"]

__version__ = "1.0.0"
