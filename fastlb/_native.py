"""Which modules mypyc compiles to C, and the guard that keeps a stale build from running.

Why compile: the data path takes a few dozen Python steps per request, and on one core the
interpreter's cost per step is much of what separates fastlb from HAProxy: `make bench` runs
both builds beside HAProxy (rows fastlb-httptools and fastlb-httptools-pure). mypyc compiles
the same typed modules, unchanged, to C extension modules (`make compile`): the source stays
the one truth, and fastlb runs from source wherever no compiler is at hand (the container
images do).

Why the guard: Python imports a module's compiled `.so` in preference to its `.py`, so after an
edit the old compiled code would run silently. At import, fastlb checks every compiled module;
if one is older than its source (or FASTLB_PURE=1 is set), all of them are imported from
source. All or none, because compiled modules call each other's C functions directly: a
compiled module next to a source one would still run the old code of the other.

Stdlib only: setup-free tools (the Makefile, bench) read MODULES from here without importing
fastlb's dependencies.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

#: The modules compiled by `make compile`: the per-request path and what it calls.
MODULES: Final = (
    "fastlb.maglev",
    "fastlb.ketama",
    "fastlb.routing",
    "fastlb.http.llhttp",
    "fastlb.http.accept",
    "fastlb.http.head",
    "fastlb.http.parsers",
    "fastlb.http.response",
    "fastlb.http.rewrite",
    "fastlb.http.framing",
    "fastlb.proxy.outbox",
    "fastlb.proxy.upstream",
    "fastlb.proxy.exchange",
    "fastlb.proxy.client",
    "fastlb.proxy.server",
)

_ROOT: Final = Path(__file__).resolve().parent.parent


def source_path(module: str) -> Path:
    return _ROOT.joinpath(*module.split(".")).with_suffix(".py")


def compiled_path(module: str) -> Path | None:
    """The module's compiled extension beside its source, if there is one."""
    source = source_path(module)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def stale(modules: Sequence[str] = MODULES) -> list[str]:
    """The compiled modules whose source changed after they were compiled."""
    out = []
    for module in modules:
        built = compiled_path(module)
        if built is not None and built.stat().st_mtime < source_path(module).stat().st_mtime:
            out.append(module)
    return out


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the listed modules' `.py` files, ahead of their compiled `.so`."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def mode() -> str:
    """'compiled' or 'pure', as this process runs the data path (after `activate`)."""
    from fastlb.proxy import client  # a compiled module is an extension, not a .py file

    return "pure" if (client.__file__ or "").endswith(".py") else "compiled"


def activate() -> None:
    """Make the imports of MODULES run from source when they must (see the module doc)."""
    if any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        return
    if os.environ.get("FASTLB_PURE", "") not in ("", "0"):
        sys.meta_path.insert(0, _SourceFinder(MODULES))
        return
    if not any(compiled_path(m) is not None for m in MODULES):
        return  # never compiled: the ordinary import finds the sources
    old = stale()
    missing = [m for m in MODULES if compiled_path(m) is None]
    if old or missing:
        why = f"{', '.join(old)} changed since" if old else f"{', '.join(missing)} not"
        warnings.warn(
            f"fastlb: {why} compiled; running every compiled module from source "
            "(`make compile` builds them again)",
            RuntimeWarning,
            stacklevel=2,
        )
        sys.meta_path.insert(0, _SourceFinder(MODULES))


def build() -> None:
    """Compile MODULES in place (beside their sources) with mypyc; `make compile` runs this."""
    from mypyc.build import mypycify  # a dev dependency (mypy ships mypyc)
    from setuptools import setup  # type: ignore[import-untyped]

    # Every old build goes first: a module dropped from MODULES must not keep one.
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for old in (_ROOT / "fastlb").rglob(f"*{suffix}"):
            old.unlink()
    paths = [str(source_path(m).relative_to(_ROOT)) for m in MODULES]
    os.chdir(_ROOT)
    # --force: every module again, so each build is newer than its source (see `stale`).
    build_ext = ["build_ext", "--inplace", "--force", "--build-temp", "build/mypyc-temp"]
    setup(
        name="fastlb-native",
        ext_modules=mypycify(
            paths, opt_level="3", group_name="fastlb._compiled", target_dir="build/mypyc"
        ),
        script_args=["--quiet", *build_ext],
    )
    fresh = [m for m in MODULES if compiled_path(m) is None] + stale()
    if fresh:
        raise SystemExit(f"fastlb: mypyc did not build {', '.join(fresh)}")
