"""TLS termination: the `ssl.SSLContext` the listener serves HTTPS with, from [proxy] tls_cert
and tls_key.

Kept apart from the listener so that the settings and every way a file can be wrong are
unit-tested without a socket (tests/test_tls.py). Python's own `ssl` (OpenSSL) does the
protocol, on the uvloop transport (`connect_accepted_socket(ssl=...)` in
fastlb/proxy/server.py): no dependency, and the bytes fastlb's relay sees are the same
plaintext as on a plain listener.

The settings follow Mozilla's "intermediate" server profile, which is what Python's defaults
already are for a server context apart from the protocol floor: TLS 1.2 at least (RFC 8996
deprecates 1.0 and 1.1), OpenSSL's default cipher list as Python narrows it (forward-secret
AEAD suites first; no RC4, 3DES, MD5 or SHA-1 MACs), the server's cipher order, no TLS-level
compression (CRIME), and session tickets as Python leaves them (on, keys rotated by OpenSSL
per context, so a reload that makes a new context also starts new ticket keys). ALPN offers
`http/1.1` only: fastlb speaks HTTP/1.1, and a client that asks for h2 alone must learn at the
handshake that it cannot have it, not by a parse error after it.

A bad file names the config file, the table, the key, the file and what is wrong with it,
like every other config error (fastlb/config.py): at `fastlb --check`, at start, and on
SIGHUP, where the old context is kept (fastlb/app.py).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Final

from fastlb.config import Config
from fastlb.errors import ConfigError

__all__ = [
    "ALPN",
    "MINIMUM_VERSION",
    "context_for",
    "new_context",
    "quiet_transport_noise",
    "server_context",
]

#: The protocols offered by ALPN (RFC 7301), in preference order.
ALPN: Final = ("http/1.1",)
#: The oldest protocol version accepted.
MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2

_CERT_MARK: Final = b"-----BEGIN CERTIFICATE-----"
_KEY_MARK: Final = b"PRIVATE KEY-----"  # BEGIN PRIVATE KEY, BEGIN EC/RSA PRIVATE KEY, ...
#: load_cert_chain's errors that mean "this key is not the certificate's": the key values
#: differ (same algorithm), or no certificate is there for the key's algorithm (an RSA key
#: with an EC certificate, as OpenSSL 3 reports it).
_MISMATCH: Final = frozenset({"KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"})
#: What uvloop's TLS transport logs (on the "asyncio" logger, at WARNING) for each write made
#: to a TLS connection its client has already closed or reset, past the fifth: the relay
#: learns of the loss a loop round later (connection_lost is scheduled, not called), and a
#: replica's response streaming meanwhile would make one line per read. The bytes are dropped
#: either way (a plain transport's are too, counted in fastlb_dropped_writes); a client can
#: cause this at will, so it is not logged.
_TRANSPORT_NOISE: Final = frozenset({"SSL connection is closed"})

#: Makes the error for (key name, file, what is wrong).
_ErrorFactory = Callable[[str, str, str], ConfigError]


class _Encrypted(Exception):
    """Raised from the password callback: a key with a passphrase, which fastlb cannot ask
    for (without the callback, OpenSSL would prompt on the terminal, or hang as a service)."""


def _no_passphrase() -> str:
    raise _Encrypted


def new_context() -> ssl.SSLContext:
    """A server context with fastlb's settings and no certificate yet (pure: no file read)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(list(ALPN))
    return context


def server_context(cert: str, key: str, where: str = "[proxy]") -> ssl.SSLContext:
    """The context serving the certificate chain in the PEM file `cert` with the private key
    in `key` (the same path for a file holding both). Raises ConfigError naming the key
    (tls_cert or tls_key) and the file that is wrong, prefixed with `where`."""

    def error(name: str, path: str, what: str) -> ConfigError:
        return ConfigError(f"{where} {name}: {path}: {what}")

    cert_pem = _read(cert, error, "tls_cert")
    key_pem = _read(key, error, "tls_key")
    if _CERT_MARK not in cert_pem:
        raise error(
            "tls_cert", cert, f"no PEM certificate in it (expected a {_CERT_MARK.decode()} block)"
        )
    if _KEY_MARK not in key_pem:
        raise error(
            "tls_key",
            key,
            "no PEM private key in it (expected a -----BEGIN PRIVATE KEY----- block)",
        )
    context = new_context()
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _Encrypted:
        raise error(
            "tls_key",
            key,
            "the key is encrypted with a passphrase, which fastlb cannot ask for: write it "
            "out unencrypted (openssl pkey -in KEY -out PLAIN), readable by fastlb's user only",
        ) from None
    except ssl.SSLError as exc:
        if exc.reason in _MISMATCH:
            raise error(
                "tls_key", key, f"does not match the certificate in tls_cert ({cert})"
            ) from None
        bad_cert = _certificate_problem(cert_pem)
        if bad_cert:
            raise error(
                "tls_cert", cert, f"not a valid PEM certificate chain ({bad_cert})"
            ) from None
        raise error("tls_key", key, f"not a valid PEM private key ({_reason(exc)})") from None
    except OSError as exc:  # the file went away between the read and the load
        raise error("tls_cert", cert, f"cannot read: {exc.strerror or exc}") from None
    return context


def context_for(config: Config) -> ssl.SSLContext | None:
    """The context for `config`'s [proxy] listener, or None when it serves plain HTTP."""
    proxy = config.proxy
    if not proxy.tls_cert:
        return None
    return server_context(proxy.tls_cert, proxy.tls_key, f"{config.source}: [proxy]")


def _read(path: str, error: _ErrorFactory, name: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise error(name, path, f"cannot read: {exc.strerror or exc}") from None


def _certificate_problem(pem: bytes) -> str:
    """Why OpenSSL cannot parse the certificates in `pem` ("" if it can): loaded as trust
    anchors into a scratch context, which parses every certificate block in it."""
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        scratch.load_verify_locations(cadata=pem.decode("latin-1"))
    except (ssl.SSLError, ValueError) as exc:
        return _reason(exc)
    return ""


def _reason(exc: Exception) -> str:
    """OpenSSL's reason code in words ("bad base64 decode"), where it gives one; its other
    messages ("[SSL] PEM lib", "no start line: cadata ...") would say nothing to the user."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return "OpenSSL: " + reason.replace("_", " ").lower()
    return "OpenSSL could not decode it"


class _DropTransportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in _TRANSPORT_NOISE


_NOISE_FILTER: Final = _DropTransportNoise()


def quiet_transport_noise() -> None:
    """Drop uvloop's per-write "SSL connection is closed" warnings (_TRANSPORT_NOISE) from the
    asyncio logger; its other records pass. Idempotent; called when a listener serves TLS."""
    logger = logging.getLogger("asyncio")
    if _NOISE_FILTER not in logger.filters:
        logger.addFilter(_NOISE_FILTER)
