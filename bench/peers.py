"""The servers of the benchmark: nginx backends, and the proxies under test.

Why: each proxy must be started the same way (fresh, pinned to its CPU, on a free loopback
port, with its own temp directory for config/pid/logs) so the comparison is fair, and must be
described by argv + config alone so the orchestrator can stop it by pid. Peer configs (HAProxy,
nginx) live as string.Template files in conf/ so they can be read and reviewed as configs.
"""

from __future__ import annotations

import http.client
import os
import resource
import shutil
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from bench.proc import Managed, ProcessRegistry
from bench.tls import TlsFiles, certificate

__all__ = [
    "BACKEND_NAMES",
    "CONF_DIR",
    "PROXIES",
    "REPO_ROOT",
    "Backends",
    "ProxySpec",
    "StartError",
    "fastlb_toml",
    "find_binary",
    "free_ports",
    "haproxy_maxconn",
    "raise_fd_limit",
    "render_template",
    "start_backends",
    "wait_http_ok",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
BACKEND_NAMES = ("b1", "b2", "b3")
# Access-log flush interval of the backends; counts are read after twice this.
LOG_FLUSH_MS = 100


class StartError(RuntimeError):
    """A server did not come up; the message says why (with its log tail)."""


def find_binary(name: str) -> str | None:
    """Find a server binary; Debian puts nginx/haproxy in /usr/sbin, not on a user's PATH."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/usr/local/sbin:/sbin"
    return shutil.which(name, path=path)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together while picking, so none repeats)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def render_template(name: str, **values: object) -> str:
    """Fill conf/NAME with string.Template; a missing value is an error, not a blank."""
    text = (CONF_DIR / name).read_text()
    return Template(text).substitute({k: str(v) for k, v in values.items()})


def pin(cpu: str | None, argv: Sequence[str]) -> list[str]:
    return list(argv) if cpu is None else ["taskset", "-c", cpu, *argv]


def wait_http_ok(
    port: int,
    managed: Managed,
    timeout: float,
    path: str = "/bench/ready",
    tls: TlsFiles | None = None,
) -> dict[str, str]:
    """Poll GET path until it answers 200; return its headers (lower-case names). With `tls`,
    over HTTPS, the chain verified against its CA (the proxy serves what it was given).

    Fails fast, with the server's log tail, if the process exits while we wait.
    """
    context = None if tls is None else ssl.create_default_context(cafile=str(tls.ca))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not managed.alive():
            code = managed.popen.returncode
            tail = managed.log_tail(lines=2)
            raise StartError(f"{managed.name} exited with {code}" + (f": {tail}" if tail else ""))
        conn = (
            http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
            if context is None
            else http.client.HTTPSConnection("127.0.0.1", port, timeout=1.0, context=context)
        )
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return {k.lower(): v for k, v in resp.getheaders()}
            last = f"HTTP {resp.status}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        time.sleep(0.05)
    tail = managed.log_tail(lines=2)
    raise StartError(
        f"{managed.name} not answering 200 on 127.0.0.1:{port} after {timeout:g}s ({last})"
        + (f"; log: {tail}" if tail else "")
    )


@dataclass(slots=True)
class Backends:
    """The three nginx backends (one nginx, three server blocks) and their access logs."""

    managed: Managed
    ports: dict[str, int]
    logs: dict[str, Path]

    def offsets(self) -> dict[str, int]:
        """Current size of each access log; counts are taken between two of these."""
        time.sleep(2 * LOG_FLUSH_MS / 1000)  # let nginx flush its log buffers
        return {
            name: path.stat().st_size if path.exists() else 0 for name, path in self.logs.items()
        }

    def counts_since(self, before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
        """Requests each backend served between two offsets (one log line per request)."""
        counts: dict[str, int] = {}
        for name, path in self.logs.items():
            start, end = before.get(name, 0), after.get(name, 0)
            if end <= start:
                counts[name] = 0
                continue
            with path.open("rb") as f:
                f.seek(start)
                counts[name] = f.read(end - start).count(b"\n")
        return counts


def start_backends(
    reg: ProcessRegistry, workdir: Path, *, cpu: str | None, timeout: float = 10.0
) -> Backends:
    """Start one nginx serving b1..b3 and wait until each answers as itself."""
    nginx = find_binary("nginx")
    if nginx is None:
        raise StartError("nginx not found (apt-get install nginx-light)")
    prefix = workdir / "backends"
    prefix.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(BACKEND_NAMES, free_ports(len(BACKEND_NAMES)), strict=True))
    conf = prefix / "nginx.conf"
    conf.write_text(
        render_template(
            "nginx-backends.conf.tmpl",
            prefix=prefix,
            flush_ms=LOG_FLUSH_MS,
            **{f"{name}_port": port for name, port in ports.items()},
        )
    )
    argv = pin(cpu, [nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")])
    managed = reg.start("nginx-backends", argv, prefix / "stdout.log")
    for name, port in ports.items():
        headers = wait_http_ok(port, managed, timeout)
        served = headers.get("x-served-by")
        if served != name:
            raise StartError(f"backend on port {port} says X-Served-By {served!r}, not {name!r}")
    logs = {name: prefix / f"{name}.access.log" for name in BACKEND_NAMES}
    return Backends(managed=managed, ports=ports, logs=logs)


def fastlb_toml(
    port: int,
    http_impl: str,
    backend_ports: dict[str, int],
    access_log: Path | None = None,
    tls: TlsFiles | None = None,
    workers: int = 1,
) -> str:
    """fastlb's config for the bench: static replicas, route by path, forward every path, a
    replica connection pool the size of nginx's; with `access_log`, the access log on (to
    measure what it costs); with `tls`, HTTPS with that certificate."""
    lines = [
        "[proxy]",
        f'listen = "127.0.0.1:{port}"',
        f'http = "{http_impl}"',
        "replica_paths = []",
        # As many idle replica connections as nginx keeps (keepalive 1024; HAProxy keeps all):
        # with the default 64, 256 clients over 3 replicas would open and close the rest.
        "pool_size = 1024",
    ]
    if tls is not None:
        lines += [f'tls_cert = "{tls.cert}"', f'tls_key = "{tls.key}"']
    if workers != 1:
        lines.append(f"workers = {workers}")
    lines += [
        "",
        "[routing]",
        'key = "path"',
        "",
        "[replicas]",
        'provider = "static"',
    ]
    for name, bport in backend_ports.items():
        lines += ["", "[[replicas.static]]", f'name = "{name}"', f'address = "127.0.0.1:{bport}"']
    if access_log is not None:
        lines += ["", "[log]", "access = true", f'access_file = "{access_log}"']
    return "\n".join(lines) + "\n"


# Builds (argv, config text, config file name) for a proxy in its temp dir.
Builder = Callable[[Path, int, dict[str, int]], tuple[list[str], str, str]]


def bench_certificate(prefix: Path) -> TlsFiles:
    """The one certificate of a benchmark run, for the proxy whose temp dir is `prefix`: made
    beside the proxies' dirs (in the run's temp dir) by the first TLS proxy started, found
    there by the others, so HAProxy and fastlb serve the same one."""
    return certificate(prefix.parent / "tls")


def raise_fd_limit() -> int:
    """Lift our soft open-files limit to the hard one (children inherit it); return it.

    256 client connections plus their upstream ones need more than a common soft limit of 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def haproxy_maxconn() -> int:
    """HAProxy refuses to start if maxconn needs more fds than it may open (about 2 per
    connection): size it from our limit, which it inherits."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 65536 if soft == resource.RLIM_INFINITY else soft
    return max(512, min(4096, (limit - 64) // 2))


def haproxy_bind_tls(tls: TlsFiles | None) -> str:
    """The `bind` options of conf/haproxy.cfg.tmpl's ${bind_tls}: fastlb's TLS settings
    (fastlb/tls.py), TLS 1.2 at least and ALPN http/1.1, with HAProxy's default ciphers."""
    if tls is None:
        return ""
    return f" ssl crt {tls.combined} alpn http/1.1 ssl-min-ver TLSv1.2"


def haproxy_cfg(
    prefix: Path | str,
    port: int,
    backends: dict[str, int],
    maxconn: int,
    tls: TlsFiles | None = None,
) -> str:
    """conf/haproxy.cfg.tmpl filled in: over TLS with `tls`, plain HTTP without."""
    return render_template(
        "haproxy.cfg.tmpl",
        prefix=prefix,
        port=port,
        maxconn=maxconn,
        bind_tls=haproxy_bind_tls(tls),
        proto="http" if tls is None else "https",
        **{f"{name}_port": p for name, p in backends.items()},
    )


def _haproxy(
    prefix: Path, port: int, backends: dict[str, int], tls: bool = False, threads: int = 1
) -> tuple[list[str], str, str]:
    binary = find_binary("haproxy")
    if binary is None:
        raise StartError("haproxy not found (apt-get install haproxy)")
    files = bench_certificate(prefix) if tls else None
    conf = haproxy_cfg(prefix, port, backends, haproxy_maxconn(), files)
    if threads != 1:
        if "\n    nbthread 1\n" not in conf:
            raise StartError("conf/haproxy.cfg.tmpl has no `nbthread 1` to change")
        conf = conf.replace("\n    nbthread 1\n", f"\n    nbthread {threads}\n")
    # -db: stay in the foreground, one process, so the pid we started is the proxy.
    return [binary, "-db", "-f", str(prefix / "haproxy.cfg")], conf, "haproxy.cfg"


def _haproxy_tls(prefix: Path, port: int, backends: dict[str, int]) -> tuple[list[str], str, str]:
    return _haproxy(prefix, port, backends, tls=True)


def _haproxy_2t(prefix: Path, port: int, backends: dict[str, int]) -> tuple[list[str], str, str]:
    return _haproxy(prefix, port, backends, threads=2)


def _nginx_2w(prefix: Path, port: int, backends: dict[str, int]) -> tuple[list[str], str, str]:
    argv, conf, name = _nginx(prefix, port, backends)
    if "\nworker_processes 1;\n" not in conf:
        raise StartError("conf/nginx-proxy.conf.tmpl has no `worker_processes 1;` to change")
    return argv, conf.replace("\nworker_processes 1;\n", "\nworker_processes 2;\n"), name


def _nginx(prefix: Path, port: int, backends: dict[str, int]) -> tuple[list[str], str, str]:
    binary = find_binary("nginx")
    if binary is None:
        raise StartError("nginx not found (apt-get install nginx-light)")
    conf = render_template(
        "nginx-proxy.conf.tmpl",
        prefix=prefix,
        port=port,
        **{f"{name}_port": p for name, p in backends.items()},
    )
    argv = [
        binary,
        "-p",
        f"{prefix}/",
        "-c",
        str(prefix / "nginx.conf"),
        "-e",
        str(prefix / "error.log"),
    ]
    return argv, conf, "nginx.conf"


def _fastlb(
    http_impl: str, python: str, access_log: bool = False, tls: bool = False, workers: int = 1
) -> Builder:
    def build(prefix: Path, port: int, backends: dict[str, int]) -> tuple[list[str], str, str]:
        log = prefix / "access.log" if access_log else None
        files = bench_certificate(prefix) if tls else None
        conf = fastlb_toml(port, http_impl, backends, log, files, workers)
        return [python, "-m", "fastlb", "--config", str(prefix / "lb.toml")], conf, "lb.toml"

    return build


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """A proxy under test: how to build its command line and config, and its environment."""

    name: str
    build: Builder
    env: tuple[tuple[str, str], ...] = ()
    #: Serves HTTPS with the run's certificate (bench_certificate): wrk gets an https:// URL.
    tls: bool = False
    #: Pinned to the proxy CPU like the others (False: free to use every core, for the
    #: two-worker round).
    pinned: bool = True

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def start(
        self,
        reg: ProcessRegistry,
        workdir: Path,
        backends: Backends,
        *,
        cpu: str | None,
        timeout: float,
        ready_path: str = "/bench/ready",
    ) -> tuple[Managed, int]:
        """Start it fresh on a free port in workdir and wait until it forwards to a backend.

        `ready_path` is the path polled for a 200 through it: any path does for the nginx
        backends; the demo replica (bench/slowloris.py's backends) answers 200 on /home only.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        (port,) = free_ports(1)
        argv, conf_text, conf_name = self.build(workdir, port, backends.ports)
        (workdir / conf_name).write_text(conf_text)
        env = dict(os.environ)
        # fastlb runs from the working tree even when not pip-installed.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.pop("FASTLB_PURE", None)
        env.update(self.env)
        managed = reg.start(
            self.name,
            pin(cpu if self.pinned else None, argv),
            workdir / "stdout.log",
            cwd=REPO_ROOT,
            env=env,
        )
        files = bench_certificate(workdir) if self.tls else None
        try:
            headers = wait_http_ok(port, managed, timeout, ready_path, files)
        except StartError:
            reg.stop(managed)
            raise
        if headers.get("x-served-by") not in BACKEND_NAMES:
            reg.stop(managed)
            raise StartError(
                f"{self.name} answered 200 without a backend's X-Served-By header: {headers}"
            )
        return managed, port


def proxy_specs(python: str = sys.executable) -> dict[str, ProxySpec]:
    """All proxies, in the order they run within a round."""
    specs = [
        # fastlb as `make compile` built it (its data path compiled by mypyc, see
        # fastlb/_native.py), and the same code run by the interpreter (FASTLB_PURE=1).
        ProxySpec("fastlb-httptools", _fastlb("httptools", python)),
        ProxySpec("fastlb-httptools-pure", _fastlb("httptools", python), (("FASTLB_PURE", "1"),)),
        ProxySpec("fastlb-h11", _fastlb("h11", python)),
        # The same as fastlb-httptools with [log] access on: the access log's cost.
        ProxySpec("fastlb-httptools+accesslog", _fastlb("httptools", python, access_log=True)),
        ProxySpec("haproxy", _haproxy),
        ProxySpec("nginx", _nginx),
        # The two-core round (issue 14): two workers or threads each, unpinned, divided by
        # haproxy+2w (bench/report.py's reference_of).
        ProxySpec("fastlb-httptools+2w", _fastlb("httptools", python, workers=2), pinned=False),
        ProxySpec("haproxy+2w", _haproxy_2t, pinned=False),
        ProxySpec("nginx+2w", _nginx_2w, pinned=False),
        # The HTTPS round: the same two over TLS with one certificate (bench/tls.py), each
        # compared with the other (bench/report.py's reference_of).
        ProxySpec("fastlb-httptools+tls", _fastlb("httptools", python, tls=True), tls=True),
        ProxySpec("haproxy+tls", _haproxy_tls, tls=True),
    ]
    return {s.name: s for s in specs}


PROXIES = tuple(proxy_specs())
