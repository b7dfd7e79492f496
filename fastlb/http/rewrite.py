"""The edits a proxy makes to a head on its way through, done on the raw bytes.

The common request (no hop-by-hop header, no X-Forwarded-* of its own) is forwarded as received
with the X-Forwarded-* lines spliced in before the blank line: one concatenation. Anything else
takes the line-by-line path, which drops hop-by-hop headers (and those the Connection header
names, RFC 9110 §7.6.1, except those that frame or route the message: `KEPT`) and extends
X-Forwarded-For rather than trusting a client's X-Forwarded-Proto. A WebSocket upgrade request
(`RequestHead.upgrade`) keeps exactly `Connection: upgrade` and `Upgrade: websocket`, written
anew after the others are dropped: no other protocol an Upgrade listed (h2c) and no other
Connection option reaches the replica. The Sec-WebSocket-* fields are end-to-end, kept as any.
"""

from __future__ import annotations

from typing import Final

from fastlb.http.head import HOP_BY_HOP, RequestHead, comma_tokens


def forwarded_lines(client_ip: str, proto: str = "http") -> bytes:
    """The X-Forwarded-* lines for one client connection, built once per connection."""
    return f"X-Forwarded-For: {client_ip}\r\nX-Forwarded-Proto: {proto}\r\n".encode("latin-1")


def request_head_out(head: RequestHead, client_ip: bytes, forwarded: bool, xff: bytes) -> bytes:
    """The head to send to the replica. `xff` is `forwarded_lines(client_ip, scheme)`."""
    raw = head.raw
    if not head.rewrite:
        return raw[:-2] + xff + b"\r\n" if forwarded else raw
    return rewrite_head(raw, forwarded, client_ip, xff, head.upgrade)


#: What the Connection header can never remove (RFC 9110 §7.6.1): the fields that frame or
#: route the message. Dropping Content-Length while forwarding the body it counts would make
#: the replica read that body as a second request (issue 11); HAProxy and nginx keep them too.
KEPT: Final = frozenset({b"content-length", b"transfer-encoding", b"host"})


def _connection_tokens(lines: list[bytes]) -> set[bytes]:
    values = []
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"connection":
            values.append(value)
    return comma_tokens(values) - KEPT


#: The hop-by-hop fields a WebSocket upgrade request is forwarded with (RFC 6455 §4.1).
UPGRADE_LINES: Final = b"Connection: upgrade\r\nUpgrade: websocket\r\n"


def rewrite_head(
    raw: bytes, forwarded: bool, client_ip: bytes, xff: bytes, upgrade: bool = False
) -> bytes:
    """Drop hop-by-hop fields and set X-Forwarded-*; the request/status line is kept as is.
    With `upgrade`, the head asks the replica for the WebSocket upgrade (`UPGRADE_LINES`)."""
    lines = raw[:-4].split(b"\r\n")
    drop = HOP_BY_HOP | _connection_tokens(lines[1:])
    if forwarded:
        drop = drop | {b"x-forwarded-proto"}
    out = [lines[0]]
    prior_xff: list[bytes] = []
    dropping = False
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):  # obs-fold continuation goes with its field
            if not dropping:
                out.append(line)
            continue
        name = line.partition(b":")[0].strip().lower()
        dropping = name in drop or (forwarded and name == b"x-forwarded-for")
        if forwarded and name == b"x-forwarded-for":
            prior_xff.append(line.partition(b":")[2].strip())
        if not dropping:
            out.append(line)
    out.append(b"")
    head = b"\r\n".join(out)
    if upgrade:
        head += UPGRADE_LINES
    if forwarded:
        if prior_xff:
            chain = b", ".join([*prior_xff, client_ip])
            # xff's second line is this connection's X-Forwarded-Proto (http or https).
            head += b"X-Forwarded-For: " + chain + b"\r\n" + xff.partition(b"\r\n")[2]
        else:
            head += xff
    return head + b"\r\n"
