"""Seeing what fastlb does: Prometheus metrics, the live status page, the access log.

Each observer reads the plain-int counters of the data path and the cluster's state when asked
(a scrape, a page refresh), never on the request path.
"""
