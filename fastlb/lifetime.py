"""Child processes that cannot outlive fastlb, however fastlb ends.

A clean exit, SIGINT, SIGTERM or an exception stops fastlb's children through its own code;
SIGKILL runs none of it. So every child asks the kernel to kill it when its parent dies
(PR_SET_PDEATHSIG): replicas between fork and exec, the table worker as it starts.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Run in a child of `parent` (the pid it was forked from): SIGKILL it when that dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
