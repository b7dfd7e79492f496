"""The certificate of the benchmark's HTTPS round: one throwaway CA and server certificate per
run, made with Debian's `openssl`, served by every TLS proxy under test.

Why one for all: the comparison is of the proxies, not of their keys; an ECDSA P-256 key (what
a current ACME client issues by default) signs a handshake at the same cost for HAProxy and
fastlb, which both use the system's OpenSSL. wrk does not verify the chain; the readiness check
does (bench/peers.py), against this CA.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsFiles", "certificate"]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files: the CA, the server's certificate and key, and both in one (HAProxy's crt)."""

    ca: Path
    cert: Path
    key: Path
    combined: Path


def _openssl(directory: Path, *args: str) -> None:
    binary = shutil.which("openssl") or "/usr/bin/openssl"
    subprocess.run([binary, *args], cwd=directory, check=True, capture_output=True, timeout=30)


def certificate(directory: Path) -> TlsFiles:
    """The files in `directory`, made there on first use (later calls find them)."""
    files = TlsFiles(
        directory / "ca.pem", directory / "server.pem", directory / "server.key",
        directory / "combined.pem",
    )  # fmt: skip
    if files.combined.exists():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        directory, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=fastlb bench CA",
    )  # fmt: skip
    _openssl(
        directory, "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost",
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n"
    )
    _openssl(
        directory, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", "1", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
    )  # fmt: skip
    combined = files.cert.read_bytes() + files.key.read_bytes()
    partial = directory / "combined.pem.part"
    partial.write_bytes(combined)
    partial.rename(files.combined)  # last: its presence says the set is whole
    return files
