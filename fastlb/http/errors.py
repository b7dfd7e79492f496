"""The error a malformed or unacceptable HTTP message raises."""

from fastlb.errors import FastlbError


class HttpError(FastlbError):
    """A message fastlb refuses; `status` is what the client gets (4xx) or 502 for a replica.

    Raised by the pure parsing code; the I/O shell turns it into a response and a close, so
    no byte of a refused request ever reaches a replica.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
