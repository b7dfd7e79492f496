"""fastlb: a consistent-hashing HTTP/1.1 load balancer that runs and heals its replicas."""

__version__ = "0.1.0"

from fastlb._native import activate as _activate_native

# Before anything imports the data path: a stale compiled build must not run (see _native).
_activate_native()
