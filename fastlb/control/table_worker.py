"""The table worker: `python -m fastlb.control.table_worker PARENT_PID`, which
fastlb.control.tables.TableBuilder starts and talks to.

It reads (routing config, members) requests from stdin and answers each on stdout with
(True, table) or (False, the error that refused the members), one framed pickle each
(tables.frame), until stdin ends.
"""

from __future__ import annotations

import pickle
import sys
from typing import BinaryIO

from fastlb.build import build_table
from fastlb.control.tables import LENGTH_BYTES, frame
from fastlb.errors import FastlbError
from fastlb.lifetime import die_with_parent


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    while len(head := requests.read(LENGTH_BYTES)) == LENGTH_BYTES:
        routing, members = pickle.loads(requests.read(int.from_bytes(head, "big")))
        try:
            reply: tuple[bool, object] = (True, build_table(routing, members))
        except FastlbError as exc:
            reply = (False, exc)
        replies.write(frame(reply))
        replies.flush()
    # Input ended: fastlb is done with us.


def main(argv: list[str]) -> int:
    die_with_parent(int(argv[1]))
    serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
