"""The compiled data path (fastlb/_native.py): it runs when built and fresh, never when stale."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fastlb._native import MODULES, compiled_path, source_path
from tests.conftest import PY, ROOT

BUILT = all(compiled_path(m) is not None for m in MODULES)
needs_build = pytest.mark.skipif(not BUILT, reason="the data path is not compiled (make compile)")


def mode_in(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """What `fastlb._native.mode()` says in a fresh interpreter importing fastlb from `root`."""
    environ = {k: v for k, v in os.environ.items() if k != "FASTLB_PURE"}
    environ.update(env, PYTHONPATH=str(root))
    return subprocess.run(
        [PY, "-W", "always", "-c", "import fastlb._native as n; print(n.mode())"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env=environ,
        check=True,
    )


def test_source_when_asked() -> None:
    assert mode_in(ROOT, FASTLB_PURE="1").stdout.strip() == "pure"


@needs_build
def test_compiled_when_built() -> None:
    result = mode_in(ROOT)
    assert result.stdout.strip() == "compiled"
    assert "RuntimeWarning" not in result.stderr


@needs_build
def test_builds_are_exactly_the_listed_modules() -> None:
    # An extension beside a source that is not in MODULES would run unchecked for staleness.
    built = {p for p in (ROOT / "fastlb").rglob("*.so") if "__mypyc" not in p.name}
    assert built == {compiled_path(m) for m in MODULES}


@needs_build
def test_a_stale_build_runs_from_source(tmp_path: Path) -> None:
    copy = tmp_path / "fastlb"
    shutil.copytree(ROOT / "fastlb", copy, ignore=shutil.ignore_patterns("__pycache__"))
    edited = tmp_path / source_path(MODULES[0]).relative_to(ROOT)
    later = time.time() + 60
    os.utime(edited, (later, later))
    result = mode_in(tmp_path)
    assert result.stdout.strip() == "pure"
    assert f"{MODULES[0]} changed since compiled" in result.stderr


@needs_build
def test_a_partial_build_runs_from_source(tmp_path: Path) -> None:
    copy = tmp_path / "fastlb"
    shutil.copytree(ROOT / "fastlb", copy, ignore=shutil.ignore_patterns("__pycache__"))
    missing = compiled_path(MODULES[-1])
    assert missing is not None
    (tmp_path / missing.relative_to(ROOT)).unlink()
    result = mode_in(tmp_path)
    assert result.stdout.strip() == "pure"
    assert f"{MODULES[-1]} not compiled" in result.stderr
