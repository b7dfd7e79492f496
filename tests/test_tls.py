"""TLS termination (fastlb/tls.py, the listener's TLS branch): real certificates made by Debian's
`openssl` for each test, a real fastlb in front of tests/backends.py's echo, and real clients:
curl, Python's ssl and http.client, `openssl s_client`.

Every test's certificates come from a throwaway CA made in its tmp_path, for the names
localhost and 127.0.0.1, and clients verify against that CA only: a test passes only if fastlb
served that very chain.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastlb import tls
from fastlb.cli import main
from fastlb.errors import ConfigError
from tests.conftest import (
    PY,
    Backend,
    Processes,
    free_port,
    http_get,
    static_config,
    wait_for,
    wait_port,
)

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
CURL = shutil.which("curl") or "/usr/bin/curl"

pytestmark = pytest.mark.skipif(
    not Path(OPENSSL).exists(), reason="openssl (Debian package openssl) is not installed"
)


# --------------------------------------------------------------------------- certificates
def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@dataclass
class Pki:
    """A throwaway CA in `dir`, and server certificates it signs."""

    dir: Path
    ca: Path

    def issue(self, name: str, serial: int) -> tuple[Path, Path]:
        """A certificate (EC P-256, for localhost and 127.0.0.1) and its key: NAME.pem, NAME.key."""
        key, csr, cert = (self.dir / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        ext = self.dir / f"{name}.ext"
        ext.write_text(
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid\n"
        )
        openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
            cwd=self.dir,
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", "ca.key",
            "-set_serial", str(serial), "-days", "2", "-extfile", str(ext), "-out", str(cert),
            cwd=self.dir,
        )  # fmt: skip
        return cert, key


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=fastlb test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return Pki(directory, directory / "ca.pem")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def client_context(pki: Pki) -> ssl.SSLContext:
    """A client that trusts the test CA only and checks the name, as curl does."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.set_alpn_protocols(["http/1.1"])
    return context


# ---------------------------------------------------------------- the context, without sockets
def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, name: str = "localhost"
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A whole handshake between the two contexts in memory (BIO pairs), no socket."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=name)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for side, obj in (("c", c), ("s", s)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done["c"] and done["s"]:
            return c, s
    raise AssertionError("the handshake did not end")


def test_the_context_speaks_tls_1_2_and_up_with_alpn_http_1_1(pki: Pki) -> None:
    cert, key = pki.issue("server", 1)
    server = tls.server_context(str(cert), str(key))
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.options & ssl.OP_NO_COMPRESSION
    assert server.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert not server.options & ssl.OP_NO_TICKET  # session tickets: Python's default, on
    assert server.verify_mode == ssl.CERT_NONE  # no client certificates asked for
    c, s = handshake(server, client_context(pki))
    assert (c.version(), s.version()) == ("TLSv1.3", "TLSv1.3")
    assert (c.selected_alpn_protocol(), s.selected_alpn_protocol()) == ("http/1.1", "http/1.1")
    assert c.compression() is None
    peer = c.getpeercert()
    assert peer is not None and peer["serialNumber"] == "01"
    # TLS 1.2 still served, with a forward-secret AEAD suite.
    client = client_context(pki)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    c, s = handshake(server, client)
    assert c.version() == "TLSv1.2" and c.selected_alpn_protocol() == "http/1.1"
    name, _, _ = c.cipher() or ("", "", 0)
    assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
    # A client that offers only h2 gets no protocol agreed, not a pretence of h2.
    client = client_context(pki)
    client.set_alpn_protocols(["h2"])
    c, _ = handshake(server, client)
    assert c.selected_alpn_protocol() is None


def test_tls_1_1_is_refused(pki: Pki) -> None:
    cert, key = pki.issue("server", 1)
    server = tls.server_context(str(cert), str(key))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(str(pki.ca))
    with pytest.warns(DeprecationWarning):
        client.minimum_version = ssl.TLSVersion.TLSv1
        client.maximum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that it is the server that refuses
    with pytest.raises(ssl.SSLError) as info:
        handshake(server, client)
    # The server's own refusal (the alert it sends is not flushed in memory here).
    assert info.value.reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION"), info.value


def test_a_bad_file_names_the_key_the_file_and_what_is_wrong(pki: Pki, tmp_path: Path) -> None:
    cert, key = pki.issue("server", 1)
    other_cert, other_key = pki.issue("other", 2)
    text = key.read_text()
    encrypted = tmp_path / "encrypted.key"
    openssl("pkey", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out",
            str(encrypted), cwd=tmp_path)  # fmt: skip
    truncated_key = tmp_path / "truncated.key"
    truncated_key.write_text(text[: len(text) // 2] + "\n-----END PRIVATE KEY-----\n")
    pem = cert.read_text()
    truncated_cert = tmp_path / "truncated.pem"
    truncated_cert.write_text(pem[: len(pem) // 2] + "\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "missing.pem"
    cases = [
        (missing, key, f"[proxy] tls_cert: {missing}: cannot read: No such file or directory"),
        (cert, missing, f"[proxy] tls_key: {missing}: cannot read: No such file or directory"),
        (key, key, f"[proxy] tls_cert: {key}: no PEM certificate in it (expected a "
                   "-----BEGIN CERTIFICATE----- block)"),
        (cert, cert, f"[proxy] tls_key: {cert}: no PEM private key in it"),
        (cert, other_key, f"[proxy] tls_key: {other_key}: does not match the certificate in "
                          f"tls_cert ({cert})"),
        (other_cert, key, f"[proxy] tls_key: {key}: does not match the certificate in "
                          f"tls_cert ({other_cert})"),
        (cert, pki.dir / "ca.key", f"[proxy] tls_key: {pki.dir / 'ca.key'}: does not match"),
        (cert, encrypted, f"[proxy] tls_key: {encrypted}: the key is encrypted with a "
                          "passphrase, which fastlb cannot ask for"),
        (cert, truncated_key, f"[proxy] tls_key: {truncated_key}: not a valid PEM private key"),
        (truncated_cert, key, f"[proxy] tls_cert: {truncated_cert}: not a valid PEM "
                              "certificate chain"),
        (tmp_path, key, f"[proxy] tls_cert: {tmp_path}: cannot read: Is a directory"),
    ]  # fmt: skip
    for cert_path, key_path, message in cases:
        with pytest.raises(ConfigError) as info:
            tls.server_context(str(cert_path), str(key_path))
        assert str(info.value).startswith(message), (str(info.value), message)
    # One file holding the chain and the key, as HAProxy's crt takes it.
    both = tmp_path / "both.pem"
    both.write_text(pem + text)
    assert tls.server_context(str(both), str(both)).minimum_version == ssl.TLSVersion.TLSv1_2


def test_check_reads_the_files(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fastlb --check` reads the certificate and the key as a start would."""
    cert, key = pki.issue("server", 1)
    _, other_key = pki.issue("other", 2)
    path = tmp_path / "lb.toml"
    path.write_text(f'[proxy]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    assert main(["--check", "--config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok\n"
    path.write_text(f'[proxy]\ntls_cert = "{cert}"\ntls_key = "{other_key}"\n')
    assert main(["--check", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"fastlb: {path}: [proxy] tls_key: {other_key}: does not match the certificate in "
        f"tls_cert ({cert})\n"
    )


# ------------------------------------------------------------------------ a real fastlb
@dataclass
class TlsLb:
    proc: subprocess.Popen[bytes]
    port: int  # HTTPS
    admin: int  # the plain admin listener: /metrics
    config: Path
    log: Path
    cert: Path
    key: Path

    def failures(self) -> float:
        status, _, body = http_get(self.admin, "/metrics")
        assert status == 200
        found = re.search(rb"^fastlb_tls_handshake_failures_total (\S+)$", body, re.M)
        assert found, body
        return float(found.group(1))

    def logged(self) -> str:
        return self.log.read_text()


@pytest.fixture
def tls_lb(
    procs: Processes, tmp_path: Path, pki: Pki, start_backend: Callable[..., Backend]
) -> Iterator[Callable[..., TlsLb]]:
    """fastlb serving HTTPS over one echo backend (static provider), its admin routes on a
    plain listener of their own; its log in a file."""

    def start(header_timeout: float = 10.0, mode: str = "echo", size: int = 1000) -> TlsLb:
        backend = start_backend(mode, name="echo", size=size)
        cert, key = pki.issue("server", 1)
        port, admin = free_port(), free_port()
        proxy = f'tls_cert = "{cert}"\ntls_key = "{key}"\nheader_timeout = {header_timeout}\n'
        text = static_config(port, [("echo", backend.port)], proxy=proxy)
        text += f'[admin]\non_data_port = false\nlisten = "127.0.0.1:{admin}"\n'
        config = tmp_path / "lb.toml"
        config.write_text(text)
        log = tmp_path / "fastlb.log"
        with log.open("wb") as out:
            proc = procs.spawn(
                [PY, "-m", "fastlb", "--config", str(config), "--log-level", "debug"],
                stderr=out,
            )
        wait_port(admin, 30.0, proc)
        wait_for(lambda: "listening on" in log.read_text(), 10.0, "fastlb listening")
        return TlsLb(proc, port, admin, config, log, cert, key)

    yield start


def https_get(
    lb: TlsLb, pki: Pki, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object], dict[str, str]]:
    """One GET over a fresh TLS connection: (status, echoed request, peer certificate)."""
    conn = http.client.HTTPSConnection("localhost", lb.port, timeout=10, context=client_context(pki))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        assert conn.sock is not None
        peer = conn.sock.getpeercert()
        assert peer is not None
        return resp.status, json.loads(body), {"serial": str(peer["serialNumber"])}
    finally:
        conn.close()


def forwarded(echo: dict[str, object]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    headers = echo["headers"]
    assert isinstance(headers, list)
    for name, value in headers:
        fields.setdefault(name.lower(), []).append(value)
    return fields


def test_curl_gets_https_and_the_replica_sees_x_forwarded_proto_https(
    tls_lb: Callable[..., TlsLb], pki: Pki
) -> None:
    lb = tls_lb()
    for host in ("localhost", "127.0.0.1"):
        result = subprocess.run(
            [CURL, "-sS", "--fail", "--cacert", str(pki.ca), "-H", "X-Forwarded-Proto: http",
             "-w", "\n%{http_version} %{ssl_verify_result}", f"https://{host}:{lb.port}/echo"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        body, _, trailer = result.stdout.rpartition("\n")
        assert trailer == "1.1 0"  # HTTP/1.1 over ALPN, the chain verified against the CA
        fields = forwarded(json.loads(body))
        # The client's own X-Forwarded-Proto never passes: the connection's scheme does.
        assert fields["x-forwarded-proto"] == ["https"], fields
        assert fields["x-forwarded-for"] == ["127.0.0.1"]
    # Plain HTTP on the admin listener: it stays plain.
    assert http_get(lb.admin, "/metrics")[0] == 200


def test_python_client_keeps_a_tls_connection_alive(tls_lb: Callable[..., TlsLb], pki: Pki) -> None:
    lb = tls_lb()
    conn = http.client.HTTPSConnection("localhost", lb.port, timeout=10, context=client_context(pki))
    try:
        seen = []
        for i in range(20):
            conn.request("GET", f"/k{i}", headers={"X-Forwarded-For": "10.9.8.7"})
            resp = conn.getresponse()
            echo = json.loads(resp.read())
            assert resp.status == 200
            fields = forwarded(echo)
            # A client's X-Forwarded-For is extended (the line-by-line path), proto still https.
            assert fields["x-forwarded-for"] == ["10.9.8.7, 127.0.0.1"], fields
            assert fields["x-forwarded-proto"] == ["https"], fields
            seen.append(echo["conn"])
        assert len(set(seen)) <= 2  # replica connections pooled, one client connection
        assert conn.sock is not None
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert conn.sock.selected_alpn_protocol() == "http/1.1"
    finally:
        conn.close()


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args],
        input="", capture_output=True, text=True, timeout=20,
    )  # fmt: skip


def test_openssl_s_client_sees_alpn_http_1_1_and_tls_1_1_refused(
    tls_lb: Callable[..., TlsLb], pki: Pki
) -> None:
    lb = tls_lb()
    out = s_client(lb.port, "-alpn", "http/1.1", "-CAfile", str(pki.ca), "-verify_return_error")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ALPN protocol: http/1.1" in out.stdout
    assert "Verify return code: 0 (ok)" in out.stdout
    assert re.search(r"^New, TLSv1\.3, Cipher is TLS_", out.stdout, re.M), out.stdout
    out = s_client(lb.port, "-tls1_2", "-alpn", "http/1.1", "-CAfile", str(pki.ca))
    assert out.returncode == 0 and "Protocol  : TLSv1.2" in out.stdout, out.stdout
    assert "ALPN protocol: http/1.1" in out.stdout
    before = lb.failures()
    # TLS 1.1, with the client's own floor lowered so that it is fastlb that refuses.
    out = s_client(lb.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert out.returncode != 0
    assert "New, (NONE), Cipher is (NONE)" in out.stdout, out.stdout  # no session at all
    assert "no peer certificate available" in out.stdout, out.stdout
    wait_for(lambda: lb.failures() == before + 1, 5.0, "the refused handshake counted")


def closed_without_answer(
    port: int, data: bytes, timeout: float = 5.0, leave: bool = False
) -> tuple[bytes, float]:
    """Send `data` on a fresh TCP connection (then end the sending side, with `leave`); what
    came back, and the seconds until fastlb closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.monotonic()
        if data:
            sock.sendall(data)
        if leave:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received, time.monotonic() - started


def test_plain_http_or_garbage_on_the_tls_port_is_closed_counted_and_not_logged(
    tls_lb: Callable[..., TlsLb], pki: Pki
) -> None:
    lb = tls_lb()
    before = lb.failures()
    plain, _ = closed_without_answer(lb.port, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert not plain.startswith(b"HTTP/")  # no plain answer (at most a TLS alert record)
    garbage, _ = closed_without_answer(lb.port, bytes(range(256)) * 64)
    assert not garbage.startswith(b"HTTP/")
    # A ClientHello cut off by the client's leaving.
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    assert closed_without_answer(lb.port, hello, leave=True)[0] == b""
    wait_for(lambda: lb.failures() == before + 3, 5.0, "three failed handshakes counted")
    # fastlb keeps serving.
    status, echo, _ = https_get(lb, pki, "/after")
    assert status == 200 and echo["target"] == "/after"
    # Above debug, nothing was logged for them: the debug lines only.
    lines = [line for line in lb.logged().splitlines() if "SSL" in line or "handshake" in line]
    assert lines, "the failures are there at debug"
    lb.proc.send_signal(signal.SIGTERM)
    lb.proc.wait(10)
    for line in lb.logged().splitlines():
        if "SSL" in line or "handshake" in line or "Traceback" in line:
            # "<UTC time> DEBUG fastlb: ...": at debug, and only that line.
            assert line.split(" ", 1)[1].startswith(
                "DEBUG fastlb: a client connection failed to set up"
            ), line


def tls_by_hand(port: int, pki: Pki) -> tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO]:
    """A TLS client over a plain socket, by memory BIOs: its records can be sent, withheld or
    mixed with other bytes. Returns (socket, TLS object, its outgoing BIO), handshake done."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_obj = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            tls_obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
    sock.sendall(outgoing.read())
    return sock, tls_obj, outgoing


def test_a_client_that_sends_close_notify_after_its_request_is_not_logged(
    tls_lb: Callable[..., TlsLb], pki: Pki
) -> None:
    """close_notify (the TLS end of a client's sending side) while its request is in flight:
    asyncio's TLS has no half-close, so the connection ends; nothing is logged for it (uvloop
    warns when a protocol asks to stay open, which the plain-TCP half-close rule does)."""
    lb = tls_lb()
    for _ in range(3):
        sock, tls_obj, outgoing = tls_by_hand(lb.port, pki)
        with sock:
            tls_obj.write(b"GET /half HTTP/1.1\r\nHost: localhost\r\n\r\n")
            with contextlib.suppress(ssl.SSLWantReadError):
                tls_obj.unwrap()  # queues close_notify
            sock.sendall(outgoing.read())
            while sock.recv(65536):
                pass
    assert https_get(lb, pki, "/after")[1]["target"] == "/after"
    lb.proc.send_signal(signal.SIGTERM)
    lb.proc.wait(10)
    assert "eof_received" not in lb.logged(), lb.logged()


def test_close_notify_in_the_middle_of_a_large_response_is_not_logged(
    tls_lb: Callable[..., TlsLb], pki: Pki
) -> None:
    """The replica's bytes that still arrive for a TLS connection its client closed (by
    close_notify, then by leaving in the middle of a second download) are dropped without a
    log line each: uvloop warns at every write past the fifth to a closed TLS transport, and
    fastlb stops reading the replica at a close_notify and filters those warnings out."""
    lb = tls_lb(mode="big", size=64 * 1024 * 1024)
    sock, tls_obj, outgoing = tls_by_hand(lb.port, pki)
    with sock:
        tls_obj.write(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        sock.sendall(outgoing.read())
        received = 0
        while received < 1024 * 1024:
            received += len(sock.recv(65536))
        with contextlib.suppress(ssl.SSLWantReadError):
            tls_obj.unwrap()
        sock.sendall(outgoing.read())
        while sock.recv(65536):
            pass
    conn = http.client.HTTPSConnection("localhost", lb.port, timeout=30, context=client_context(pki))
    conn.request("GET", "/after")
    response = conn.getresponse()
    assert response.status == 200 and len(response.read(65536)) == 65536
    conn.close()
    lb.proc.send_signal(signal.SIGTERM)
    lb.proc.wait(10)
    assert "SSL connection is closed" not in lb.logged(), lb.logged()


def test_garbage_after_the_handshake_closes_that_connection_only(
    tls_lb: Callable[..., TlsLb], pki: Pki
) -> None:
    """Bytes that are not TLS records after a good handshake (a broken or hostile client) end
    that connection, logged at debug only; the handshake counted nothing."""
    lb = tls_lb()
    before = lb.failures()
    sock, tls_obj, _ = tls_by_hand(lb.port, pki)
    with sock:
        assert tls_obj.selected_alpn_protocol() == "http/1.1"
        sock.sendall(b"\x17\x03\x03\x00\x10" + b"\x00" * 16 + b"GET / HTTP/1.1\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert b"HTTP/" not in received  # nothing answered in the clear
    assert https_get(lb, pki, "/still")[1]["target"] == "/still"
    assert lb.failures() == before
    lb.proc.send_signal(signal.SIGTERM)
    lb.proc.wait(10)
    for line in lb.logged().splitlines():
        assert "Traceback" not in line and "Fatal" not in line and "rror" not in line, line


def test_a_handshake_that_never_ends_is_closed_within_the_header_timeout(
    tls_lb: Callable[..., TlsLb], pki: Pki
) -> None:
    lb = tls_lb(header_timeout=1.0)
    before = lb.failures()
    # Nothing sent at all, then a ClientHello's first bytes and nothing more (a slowloris).
    for data in (b"", b"\x16\x03\x01\x02\x00\x01"):
        received, took = closed_without_answer(lb.port, data, timeout=10.0)
        assert received == b""
        assert 0.9 <= took <= 2.5, took
    wait_for(lambda: lb.failures() == before + 2, 5.0, "both timed-out handshakes counted")
    assert https_get(lb, pki)[0] == 200


def wait_logged(lb: TlsLb, text: str, after: int) -> str:
    wait_for(lambda: text in lb.logged()[after:], 15.0, f"{text!r} in fastlb's log")
    return lb.logged()[after:]


def test_sighup_serves_a_renewed_certificate_and_keeps_it_when_the_new_key_is_bad(
    tls_lb: Callable[..., TlsLb], pki: Pki
) -> None:
    lb = tls_lb()
    assert https_get(lb, pki)[2]["serial"] == "01"
    # A connection kept open across the reloads keeps its session.
    kept = http.client.HTTPSConnection("localhost", lb.port, timeout=10, context=client_context(pki))
    kept.request("GET", "/kept")
    assert kept.getresponse().read()

    # Renewed: a new certificate and key in the same files (written whole, then moved in).
    renewed_cert, renewed_key = pki.issue("renewed", 2)
    shutil.copy(renewed_cert, lb.cert)
    shutil.copy(renewed_key, lb.key)
    mark = len(lb.logged())
    lb.proc.send_signal(signal.SIGHUP)
    logged = wait_logged(lb, "SIGHUP: reloaded", mark)
    assert "TLS certificate and key read again" in logged
    assert https_get(lb, pki)[2]["serial"] == "02"

    # A key that is not the certificate's: the renewed one stays in use, and the log says why.
    _, stray_key = pki.issue("stray", 3)
    shutil.copy(stray_key, lb.key)
    mark = len(lb.logged())
    lb.proc.send_signal(signal.SIGHUP)
    logged = wait_logged(lb, "SIGHUP: reloaded", mark)
    why = (
        f"kept the TLS certificate in use: {lb.config}: [proxy] tls_key: {lb.key}: does not "
        f"match the certificate in tls_cert ({lb.cert})"
    )
    assert f"fastlb: reload: {why}" in logged  # the error line
    assert re.search(r"SIGHUP: reloaded .*; " + re.escape(why), logged), logged  # the summary
    assert https_get(lb, pki)[2]["serial"] == "02"

    # A key file that is not there any more, likewise.
    lb.key.unlink()
    mark = len(lb.logged())
    lb.proc.send_signal(signal.SIGHUP)
    logged = wait_logged(lb, "SIGHUP: reloaded", mark)
    assert f"tls_key: {lb.key}: cannot read: No such file or directory" in logged
    assert https_get(lb, pki)[2]["serial"] == "02"

    kept.request("GET", "/kept-again")
    assert json.loads(kept.getresponse().read())["target"] == "/kept-again"
    kept.close()

    # TLS turned off in the file: what the port speaks needs a restart, as its address does.
    lb.config.write_text(re.sub(r"(?m)^tls_(cert|key) = .*$", "", lb.config.read_text()))
    mark = len(lb.logged())
    lb.proc.send_signal(signal.SIGHUP)
    logged = wait_logged(lb, "SIGHUP: reloaded", mark)
    assert "[proxy] tls_cert changed on or off; restart fastlb for that (HTTPS kept)" in logged
    assert https_get(lb, pki)[2]["serial"] == "02"


def test_a_bad_key_stops_the_start_with_the_reason(
    procs: Processes, tmp_path: Path, pki: Pki
) -> None:
    cert, _ = pki.issue("server", 1)
    _, other_key = pki.issue("other", 2)
    config = tmp_path / "lb.toml"
    config.write_text(
        static_config(free_port(), [("echo", free_port())],
                      proxy=f'tls_cert = "{cert}"\ntls_key = "{other_key}"')
    )  # fmt: skip
    result = subprocess.run(
        [PY, "-m", "fastlb", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"fastlb: {config}: [proxy] tls_key: {other_key}: does not match the certificate in "
        f"tls_cert ({cert})"
    )
