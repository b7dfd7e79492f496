"""fastlb's request-acceptance policy: which request heads it forwards, which it refuses.

One policy for both head parsers (/work/coord/policy.md, fastlb issue 11). A parser (llhttp
or h11) is the first gate; the rules below are applied to the same raw bytes whichever parser
ran, so the two modes give the same outcome for every input: a request is FORWARDed (possibly
normalised) or REJECTed with a status, a one-line reason, `Connection: close`, and a close.
Nothing of a rejected request reaches a replica.

=====================================  ==================  ===================================
rule                                   RFC                 outcome
=====================================  ==================  ===================================
bare LF ending a line of the head      RFC 9112 §2.2       400 at once (fastlb relays the head
                                                           raw: it will not guess how the
                                                           replica splits lines)
bare CR (not followed by LF)           RFC 9112 §2.2       400
empty lines (CRLF) before the request  RFC 9112 §2.2       ignored (the I/O shell drops them)
HTTP/0.9 simple request (no version)   RFC 9112 §3         400, answered in HTTP/1.1
request line not exactly               RFC 9112 §3         400 (no lenient parsing of extra
`method SP target SP version`                              whitespace)
method not a token                     RFC 9110 §9.1       400; any token is forwarded, case
                                                           kept (`get`, `M-SEARCH`, ...)
method CONNECT                         RFC 9110 §9.3.6     405: fastlb is not a tunnel
version HTTP/1.0 or HTTP/1.1           RFC 9112 §2.3       forwarded
other well-formed HTTP/D.D             RFC 9110 §15.6.6    505
malformed version                      RFC 9112 §2.3       400
origin-form target                     RFC 9112 §3.2.1     forwarded as is
absolute-form http(s)://authority...   RFC 9112 §3.2.2     forwarded in origin-form, Host set
                                                           to the authority
absolute-form with userinfo            RFC 9110 §4.2.4     400
absolute-form, other scheme or         RFC 9112 §3.2.2     400
empty host
asterisk-form `*`                      RFC 9112 §3.2.4     forwarded with OPTIONS, else 400
authority-form                         RFC 9112 §3.2.3     400 (only for CONNECT, refused)
target byte outside RFC 3986 (`#`,     RFC 9112 §3.2,      400
`\\`, `%zz`, CTL, SP, non-ASCII, ...)  RFC 3986 §2
field name not a token, empty, or      RFC 9112 §5.1       400
whitespace before the colon
field value with a CTL other than      RFC 9110 §5.5       400 (obs-text 0x80-0xFF is kept)
HTAB (NUL, CR, LF, DEL, ...)
obs-fold (line starting SP or HTAB)    RFC 9112 §5.2       400
more than max_header_fields fields,    RFC 6585 §5         431
or a head over max_header_bytes
HTTP/1.1 without Host                  RFC 9112 §3.2       400 (HTTP/1.0 without: forwarded)
more than one Host field               RFC 9112 §3.2       400, same value or not
Host not uri-host [":" port]           RFC 9110 §7.2,      400 (`a, b`, `a b`, `a/b`, `u@a`,
                                       RFC 3986 §3.2.2     `a:b`); an empty value is forwarded
Host differs from the absolute-form    RFC 9112 §3.2.2     400 (host compared without case,
authority, or is missing with it                           a missing port is the default)
Content-Length with Transfer-Encoding  RFC 9112 §6.3 (3)   400
Content-Length not 1*DIGIT (at most    RFC 9110 §8.6       400
18 digits), a list, or repeated
Transfer-Encoding in HTTP/1.0          RFC 9112 §6.1       400
Transfer-Encoding not ending in one    RFC 9112 §6.3 (4)   400
chunked (or chunked twice, or empty)
codings before a final chunked         RFC 9112 §6.1       501 (not understood)
Expect: 100-continue                   RFC 9110 §10.1.1    forwarded in HTTP/1.1, dropped in
                                                           HTTP/1.0 (MUST ignore)
any other expectation                  RFC 9110 §10.1.1    417
Connection naming Content-Length,      RFC 9110 §7.6.1     those are kept: the Connection
Transfer-Encoding or Host                                  header never removes what frames or
                                                           routes a message (rewrite.py)
chunked body lines                     RFC 9112 §7.1       validated before forwarding,
                                                           re-encoded (framing.py)
Connection: upgrade + Upgrade:         RFC 6455 §4.1,      forwarded with exactly those two
websocket on a GET in HTTP/1.1         RFC 9110 §7.8       fields (a 101 makes a tunnel)
that upgrade request with a body       RFC 6455 §4.1       400 (its bytes would be read two
                                                           ways once the tunnel opens)
any other Upgrade (h2c, websocket on   RFC 9110 §7.8       dropped with Connection (h2c is a
a POST or in HTTP/1.0)                                     smuggling vector)
=====================================  ==================  ===================================

The functions here are the slow, exhaustive reading: `check_head` runs the whole head
against the grammar (h11 mode before h11, httptools mode to name the fault llhttp found).
The per-request path (`head.read_request_head`) checks only what neither parser checks, with
one regular expression per concern, and falls back to these functions for anything unusual.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from fastlb.http.errors import HttpError

#: RFC 9110 §5.6.2 tchar.
TCHAR: Final = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN: Final = rb"[" + TCHAR + rb"]+"
TOKEN_RE: Final = re.compile(_TOKEN)
#: RFC 3986 §2.2, §2.3: unreserved and sub-delims.
_UNRESERVED_SUB: Final = rb"A-Za-z0-9\-._~!$&'()*+,;="
_PCT: Final = rb"%[0-9A-Fa-f]{2}"
#: The characters of an origin-form target other than pct-encoding, and of a reg-name (a comma
#: is left out of Host: a recipient may join field lines with commas, RFC 9110 §5.3, so
#: `Host: a,b` reads as two Host values).
ORIGIN_CHARS: Final = _UNRESERVED_SUB + rb":@/?"
REG_NAME_CHARS: Final = rb"A-Za-z0-9\-._~!$&'()*+;="
#: origin-form (RFC 9112 §3.2.1): absolute-path [ "?" query ]; query's characters include
#: every path character, "/" and "?", so one repetition reads both.
_ORIGIN: Final = rb"/(?:[" + _UNRESERVED_SUB + rb":@/?]|" + _PCT + rb")*"
ORIGIN_RE: Final = re.compile(_ORIGIN)
_REG_NAME: Final = rb"(?:[" + REG_NAME_CHARS + rb"]|" + _PCT + rb")*"
#: IP-literal (RFC 3986 §3.2.2): an IPv6 address (checked by `ipaddress` after the shape) or
#: IPvFuture.
_IP_LITERAL: Final = (
    rb"\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[" + _UNRESERVED_SUB + rb":]+)\]"
)
_HOST_RE: Final = re.compile(
    rb"(?P<host>" + _IP_LITERAL + rb"|" + _REG_NAME + rb")(?::(?P<port>[0-9]*))?"
)
_ABSOLUTE_RE: Final = re.compile(
    rb"(?P<scheme>[Hh][Tt][Tt][Pp][Ss]?)://(?P<authority>[^/?#]*)"
    rb"(?P<path>(?:/(?:[" + _UNRESERVED_SUB + rb":@]|" + _PCT + rb")*)*)"
    rb"(?P<query>\?(?:[" + _UNRESERVED_SUB + rb":@/?]|" + _PCT + rb")*)?"
)
_VERSION_RE: Final = re.compile(rb"HTTP/([0-9])\.([0-9])")
#: A field line (RFC 9112 §5.1, RFC 9110 §5.5): token ":" OWS value OWS, where the value has
#: no CTL but HTAB; obs-text (0x80-0xFF) is allowed.
FIELD_RE: Final = re.compile(_TOKEN + rb":[\t\x20-\x7e\x80-\xff]*")
_CTL_RE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: What a request line may hold before its CRLF arrived: nothing but printable ASCII and SP.
_LINE_PREFIX_RE: Final = re.compile(rb"[\x21-\x7e ]*\r?")

DEFAULT_PORTS: Final = {b"http": b"80", b"https": b"443"}


def _shown(value: bytes, limit: int = 60) -> str:
    return repr(value[:limit].decode("latin-1"))


def check_line_ends(raw: bytes) -> None:
    """Every line of the head ends in CRLF; no bare LF, no bare CR (RFC 9112 §2.2).

    `raw` may be an incomplete head: a CR at its very end waits for its LF."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf:
        raise HttpError(400, "malformed request: a line ends in a bare LF (RFC 9112 §2.2)")
    if raw.count(b"\r") != crlf + (1 if raw.endswith(b"\r") else 0):
        raise HttpError(400, "malformed request: a bare CR in the head (RFC 9112 §2.2)")


def check_method(method: bytes) -> None:
    if TOKEN_RE.fullmatch(method) is None:
        raise HttpError(400, f"malformed request: method {_shown(method)} is not a token")
    if method == b"CONNECT":
        raise HttpError(405, "CONNECT is not supported by this proxy")


def check_version(version: bytes) -> bool:
    """True for HTTP/1.1, False for HTTP/1.0; HttpError(505) or (400) otherwise."""
    if version == b"HTTP/1.1":
        return True
    if version == b"HTTP/1.0":
        return False
    if _VERSION_RE.fullmatch(version) is not None:
        raise HttpError(505, f"HTTP version {_shown(version)} is not supported")
    raise HttpError(400, f"malformed request: invalid HTTP version {_shown(version)}")


def request_line(line: bytes) -> tuple[bytes, bytes, bool, bytes | None]:
    """(method, origin-form target, http11, authority or None) of a request line (without its
    CRLF), or HttpError with the policy's status. `authority` is set for an absolute-form
    target: the request is then forwarded in origin-form with that Host."""
    parts = line.split(b" ")
    if len(parts) == 2 and parts[0] and parts[1][:1] == b"/":
        raise HttpError(400, "malformed request: an HTTP/0.9 request (no version)")
    if len(parts) != 3 or not all(parts):
        raise HttpError(
            400, f"malformed request line {_shown(line)}: want method SP target SP version"
        )
    method, target, version = parts
    check_method(method)
    http11 = check_version(version)
    origin, authority = request_target(method, target)
    return method, origin, http11, authority


def request_target(method: bytes, target: bytes) -> tuple[bytes, bytes | None]:
    """(origin-form target, authority or None), or HttpError(400) (RFC 9112 §3.2)."""
    if target[:1] == b"/":
        if ORIGIN_RE.fullmatch(target) is None:
            raise HttpError(400, f"malformed request: invalid request-target {_shown(target)}")
        return target, None
    if target == b"*":
        if method != b"OPTIONS":
            raise HttpError(400, "malformed request: the target * is for OPTIONS only")
        return target, None
    m = _ABSOLUTE_RE.fullmatch(target)
    if m is None:
        raise HttpError(
            400,
            f"malformed request: request-target {_shown(target)} is neither origin-form "
            "nor an http(s) absolute-form URI",
        )
    authority = m.group("authority")
    if b"@" in authority:
        raise HttpError(400, "malformed request: userinfo in the request-target (RFC 9110 §4.2.4)")
    host = _valid_host(authority)
    if host is None or not host:
        raise HttpError(400, f"malformed request: invalid authority {_shown(authority)}")
    path = m.group("path") or b"/"
    query = m.group("query") or b""
    return path + query, authority


def _valid_host(value: bytes) -> bytes | None:
    """The host part of `uri-host [":" port]`, or None if `value` is not that."""
    m = _HOST_RE.fullmatch(value)
    if m is None:
        return None
    host = m.group("host")
    if host[:1] == b"[" and host[1:2] not in (b"v", b"V"):
        try:
            ipaddress.IPv6Address(host[1:-1].decode("ascii"))
        except ValueError:
            return None
    if not host and m.group("port") is not None:
        return None  # ":80": a port without a host
    return host


def host_value(value: bytes) -> bytes:
    """The Host field value without OWS, or HttpError(400) (RFC 9110 §7.2)."""
    value = value.strip(b" \t")
    if _valid_host(value) is None:
        raise HttpError(400, f"invalid Host {_shown(value)}: want host[:port] (RFC 9110 §7.2)")
    return value


def same_authority(host: bytes, authority: bytes, scheme_port: bytes) -> bool:
    """Whether a Host value names the absolute-form target's authority (RFC 9112 §3.2.2):
    hosts compared without case, a missing or empty port taken as the scheme's default."""
    return _host_port(host, scheme_port) == _host_port(authority, scheme_port)


def _host_port(value: bytes, default_port: bytes) -> tuple[bytes, bytes]:
    m = _HOST_RE.fullmatch(value)
    if m is None:
        return value.lower(), b""
    return m.group("host").lower(), m.group("port") or default_port


def scheme_port(target: bytes) -> bytes:
    return b"443" if target[4:5] in (b"s", b"S") else b"80"


def check_fields(lines: list[bytes], max_fields: int) -> None:
    """Field lines (without CRLF) against RFC 9112 §5 and RFC 9110 §5.5."""
    if len(lines) > max_fields:
        raise HttpError(431, f"more than {max_fields} header fields")
    for line in lines:
        if FIELD_RE.fullmatch(line) is not None:
            continue
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "malformed request: a field value is folded (obs-fold)")
        name, colon, _ = line.partition(b":")
        if not colon:
            raise HttpError(400, f"malformed request: field line {_shown(line)} has no colon")
        if not name:
            raise HttpError(400, "malformed request: a field with an empty name")
        if TOKEN_RE.fullmatch(name) is None:
            raise HttpError(
                400,
                f"malformed request: field name {_shown(name)} is not a token"
                + (" (whitespace before the colon)" if name[-1:] in (b" ", b"\t") else ""),
            )
        raise HttpError(400, f"malformed request: a control character in field {_shown(name)}")


def check_head(raw: bytes, max_fields: int) -> None:
    """The whole head (request line to the blank line) against the policy's syntax rules,
    or HttpError with the policy's status. The slow, exhaustive reading."""
    check_line_ends(raw)
    if not raw.endswith(b"\r\n\r\n"):
        raise HttpError(400, "malformed request: incomplete head")
    lines = raw[:-4].split(b"\r\n")
    request_line(lines[0])
    check_fields(lines[1:], max_fields)


def check_partial(data: bytes) -> None:
    """A head still incomplete: refuse at once what can never become a valid request (a
    bare LF or CR, a bad request line, HTTP/0.9), rather than wait for the header timeout."""
    check_line_ends(data)
    nl = data.find(b"\r\n")
    if nl < 0:
        if _LINE_PREFIX_RE.fullmatch(data) is None:
            raise HttpError(400, "malformed request: not an HTTP request line")
        return
    request_line(data[:nl])
    lines = data[nl + 2 :].split(b"\r\n")
    for line in lines[:-1]:  # the complete field lines; the last one is still arriving
        if line:
            check_fields([line], 1)


def content_length(values: list[bytes]) -> int:
    """The body length of a request's Content-Length fields (RFC 9110 §8.6): one field, one
    value of digits (OWS trimmed, leading zeros allowed, at most 18 digits)."""
    if len(values) != 1:
        raise HttpError(400, "more than one Content-Length field")
    value = values[0].strip(b" \t")
    if not value or len(value) > 18 or not value.isdigit():
        raise HttpError(400, f"invalid Content-Length {_shown(value)}")
    return int(value)


def transfer_coding_is_chunked(values: list[bytes]) -> None:
    """Transfer-Encoding must be exactly one `chunked` (RFC 9112 §6.3 rule 4, §6.1)."""
    codings = [c.strip(b" \t").lower() for value in values for c in value.split(b",")]
    shown = _shown(b", ".join(values))
    if b"" in codings:
        # RFC 9110 §5.6.1 lets a recipient skip empty list elements, but a replica that reads
        # an empty Transfer-Encoding field line as "no body" would frame this request
        # another way than fastlb: refused, as h11 and HAProxy refuse it.
        raise HttpError(400, f"Transfer-Encoding {shown} has an empty element")
    if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
        raise HttpError(400, f"Transfer-Encoding {shown} does not end in a single chunked")
    if len(codings) != 1:
        raise HttpError(501, f"Transfer-Encoding {shown}: only chunked is implemented")


def expect_drops(values: list[bytes], http11: bool) -> bool:
    """Whether the Expect field must be dropped (HTTP/1.0, RFC 9110 §10.1.1: MUST ignore
    100-continue there), or HttpError(417) for an expectation other than 100-continue."""
    members = [m.strip(b" \t").lower() for value in values for m in value.split(b",")]
    if not members or any(m != b"100-continue" for m in members):
        raise HttpError(417, f"expectation {_shown(b', '.join(values))} is not supported")
    return not http11


def normalise(
    raw: bytes,
    method: bytes,
    target: bytes,
    http11: bool,
    host: bytes | None,
    drop_expect: bool,
) -> bytes:
    """The head with its request line in origin-form and `Host: host` as its only Host (if
    `host` is set), and without Expect if `drop_expect`: the rare requests fastlb normalises."""
    lines = raw[:-4].split(b"\r\n")
    out = [method + b" " + target + (b" HTTP/1.1" if http11 else b" HTTP/1.0")]
    if host is not None:
        out.append(b"Host: " + host)
    for line in lines[1:]:
        name = line.partition(b":")[0].lower()
        if (host is not None and name == b"host") or (drop_expect and name == b"expect"):
            continue
        out.append(line)
    return b"\r\n".join(out) + b"\r\n\r\n"
