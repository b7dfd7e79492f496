"""fastlb's own error types: each message says what was wrong and what to do about it."""

from __future__ import annotations

import errno
from typing import Final

#: A socket(2), connect(2), fork or pipe that fails with one of these says that fastlb itself
#: ran out of something (file descriptors, kernel buffers, memory, local ports), nothing about
#: the replica it was for: neither the data path nor a heartbeat may charge the replica with it.
OWN_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL}
)


def own_resource_error(exc: BaseException | None) -> bool:
    """Whether `exc` is fastlb's own want of a resource (EMFILE and the like, OWN_ERRNOS)."""
    return isinstance(exc, OSError) and exc.errno in OWN_ERRNOS


class FastlbError(Exception):
    """Base of every error fastlb raises on purpose."""


class ConfigError(FastlbError):
    """A configuration value is missing, unknown or invalid.

    The message names the file, the table and the key, so the user can fix it without reading code.
    """


class ReplicaError(FastlbError):
    """A replica could not be started, reached or stopped."""


class TableError(FastlbError):
    """A routing table cannot be built from the given members (none, duplicates, bad weights)."""
