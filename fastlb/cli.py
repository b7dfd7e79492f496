"""The `fastlb` command."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import uvloop

from fastlb import __version__
from fastlb.app import Balancer
from fastlb.config import Config, default, load
from fastlb.errors import ConfigError, FastlbError


def _version() -> str:
    """The version, and whether the data path runs compiled (fastlb/_native.py says why)."""
    from fastlb._native import mode

    how = "data path compiled by mypyc" if mode() == "compiled" else "pure Python"
    return f"fastlb {__version__} ({how})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastlb",
        description="A consistent-hashing HTTP/1.1 load balancer that runs its replicas.",
        epilog="fastlb ctl [--socket PATH | --config FILE] CMD...: run a command on a running "
        "fastlb (fastlb ctl --help); fastlb analyze [--out DIR]: the analysis report",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: embedded)")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--version", action="version", version=_version())
    return parser


#: Every log line: UTC time to the millisecond, level, message. UTC with a Z so that lines of
#: machines in other zones sort together; journald and docker add their own stamps, which agree.
LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s fastlb: %(message)s"
LOG_DATE = "%Y-%m-%dT%H:%M:%S"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(LOG_FORMAT, LOG_DATE)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler])


async def _serve(config: Config, path: str | None) -> int:
    return await Balancer(config, config_path=path).run()


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["ctl"]:
        from fastlb.ctl import main as ctl_main  # only `fastlb ctl` needs it

        return ctl_main(words[1:])
    if words[:1] == ["analyze"]:
        from fastlb.analyze import main as analyze_main  # only `fastlb analyze` needs it

        return analyze_main(words[1:])
    args = _parser().parse_args(words)
    try:
        config = load(args.config) if args.config else default()
    except ConfigError as exc:
        print(f"fastlb: {exc}", file=sys.stderr)
        return 2
    if args.check:
        from fastlb.tls import context_for

        try:
            context_for(config)  # the certificate and key are read as at start
        except ConfigError as exc:
            print(f"fastlb: {exc}", file=sys.stderr)
            return 2
        print(f"{config.source}: ok")
        return 0
    setup_logging(args.log_level)
    try:
        return uvloop.run(_serve(config, args.config))
    except FastlbError as exc:
        print(f"fastlb: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the loop's SIGINT handler is in place
        return 130
