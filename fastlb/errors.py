"""fastlb's own error types: each message says what was wrong and what to do about it."""


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
