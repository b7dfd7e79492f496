"""The hostile-input corpus end to end: fastlb (each parser) in front of the strict recorder.

Why: fastlb's claim is that a malformed or ambiguous request gets its 4xx and a close with
nothing of it reaching a replica, and that a valid one arrives framed exactly as sent (issue
11, /work/coord/policy.md). Each case of tests/hostile/corpus.py goes on a fresh connection;
the test fails when a case to reject reaches the recorder, when the recorder frames a different
number of requests than the client got answers from it (a desync), when the client gets no
answer and no close within 2 s, when a status differs from the policy's, when fastlb stops
serving, or when the two parsers disagree. All failures are reported in one assertion.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PY, Fastlb, Processes, free_port, static_config, wait_port
from tests.hostile.corpus import CASES, CLASSES, JUDGEMENT_CALLS, Case
from tests.hostile.exchange import Observation, judge_policy, run_corpus

RECORDER = str(Path(__file__).resolve().parent / "recorder.py")
# A short header_timeout answers cut-off heads (408) well within the client's 2 s; a short
# backend_timeout bounds a cut-off body the replica keeps waiting for.
PROXY = "header_timeout = 1.0\nbackend_timeout = 1.5"
# HOSTILE_FAILURES=FILE: also write the failing cases there, grouped by class, as a list to
# route while fastlb is being fixed (off by default: a test writes nothing outside tmp_path).
FAILURES_FILE = os.environ.get("HOSTILE_FAILURES")

OUTCOMES: dict[str, dict[str, str]] = {}
FAILED: dict[str, dict[str, list[str]]] = {}


def start_recorder(procs: Processes, log: Path) -> int:
    port = free_port()
    proc = procs.spawn([PY, RECORDER, "--port", str(port), "--log", str(log)])
    wait_port(port, 10.0, proc)
    return port


def format_failures(parser: str, failed: dict[str, list[str]], cases: list[Case]) -> str:
    """Failing cases grouped by class, each with what happened: the whole picture at once."""
    by_name = {c.name: c for c in cases}
    lines = [f"fastlb-{parser}: {len(failed)} of {len(cases)} cases fail"]
    for cls in CLASSES:
        names = [n for n in failed if by_name[n].cls == cls]
        if not names:
            continue
        lines.append(f"[{cls}] {len(names)}")
        for name in names:
            lines.append(f"  {name} ({by_name[name].source}): " + "; ".join(failed[name]))
    return "\n".join(lines)


def write_failures_file() -> None:
    """The interim list for the helper fixing fastlb (best effort: the file is a courtesy)."""
    if not FAILURES_FILE:
        return
    parts = [format_failures(p, f, CASES) for p, f in FAILED.items()]
    parts.append(
        "Readings of policy.md this corpus takes:\n" + "\n".join(f"- {j}" for j in JUDGEMENT_CALLS)
    )
    with contextlib.suppress(OSError):
        Path(FAILURES_FILE).write_text("\n\n".join(parts) + "\n")


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_hostile_corpus(
    parser: str,
    procs: Processes,
    start_fastlb: Callable[[str], Fastlb],
    tmp_path: Path,
) -> None:
    log = tmp_path / "recorder.jsonl"
    rport = start_recorder(procs, log)
    lb = start_fastlb(
        static_config(0, [("recorder", rport)], http=parser, proxy=PROXY).replace(
            'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:{port}"'
        )
    )
    observed: dict[str, Observation] = run_corpus(lb.port, log, CASES)
    failed = {c.name: p for c in CASES if (p := judge_policy(c, observed[c.name]))}
    OUTCOMES[parser] = {name: obs.summary() for name, obs in observed.items()}
    FAILED[parser] = failed
    write_failures_file()
    assert lb.proc.poll() is None, "fastlb exited during the corpus"
    assert not failed, format_failures(parser, failed, CASES)


def test_parsers_agree() -> None:
    """Both parsers give the same outcome for every case (one policy after either parser)."""
    if len(OUTCOMES) < 2:
        pytest.skip("needs both test_hostile_corpus runs in this session")
    a, b = OUTCOMES["httptools"], OUTCOMES["h11"]
    differ = [
        f"  {n}:\n    httptools: {a[n]}\n    h11:       {b[n]}" for n in a if a[n] != b.get(n)
    ]
    assert not differ, f"{len(differ)} cases differ between the parsers:\n" + "\n".join(differ)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
