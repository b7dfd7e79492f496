"""fastlb: a consistent-hashing HTTP/1.1 load balancer that runs and heals its replicas."""

__version__ = "0.1.0"
