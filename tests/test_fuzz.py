"""The fuzzer in the suite: mutated requests, split at random points, against the head
parsers, the chunked framer and a real fastlb in front of a strict recording replica.

Bounded and deterministic (derandomize=True): the same examples on every run, about 30 s in
all on the project's 2-core machine. The generators and judges are tests/fuzzing.py's, shared with the long run
(`python -m bench.fuzz --inputs 100000`, `make fuzz`). Each judge returns the problems it
found, so a failure names the input (as a bytes literal), the mutations and what went wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from fastlb.http.parsers import HeadParser, make_head_parser
from tests import fuzzing
from tests.conftest import PY, ROOT, Processes, free_port, static_config, wait_port

PARSERS = ["httptools", "h11"]
SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def parsers() -> dict[str, HeadParser]:
    return {kind: make_head_parser(kind, b"x-request-id", 100, 16384) for kind in PARSERS}


@settings(SETTINGS, max_examples=200)
@given(fuzzing.requests())
def test_generated_requests_are_valid_by_the_fuzzers_own_checks(req: fuzzing.Request) -> None:
    """The oracles are consistent with the generator: an unmutated request breaks none of the
    policy rules `head_violations` checks, and its chunked body is strict RFC 9112 §7.1, so a
    problem the fuzzer reports comes from a mutation, not from the generator."""
    data = req.encode()
    end = data.find(b"\r\n\r\n") + 4
    assert fuzzing.head_violations(data[:end]) == []
    if req.chunks is not None:
        body = fuzzing.parse_chunked(data, end)
        assert body is not None and body.end == len(data)


@settings(SETTINGS, max_examples=3000)
@given(fuzzing.heads())
def test_head_parsers_refuse_cleanly_and_agree(case: tuple[bytes, list[str]]) -> None:
    """parse() returns a head or raises HttpError(4xx); both parsers give the same answer; an
    accepted head breaks none of the policy's rules; an unmutated request is accepted."""
    raw, mutations = case
    problems = fuzzing.judge_head(parsers(), raw, valid=not mutations)
    assert not problems, "\n".join(problems)


@settings(SETTINGS, max_examples=3000)
@given(fuzzing.chunked_bodies())
def test_chunked_framer_any_split_strict(case: tuple[bytes, list[bytes], list[str]]) -> None:
    """Any split gives the whole feed's result; only HttpError escapes; the framer accepts
    exactly what a strict RFC 9112 §7.1 parser accepts, and forwards a body it reads the same."""
    data, pieces, _ = case
    problems = fuzzing.judge_chunked(data, pieces)
    assert not problems, "\n".join(problems)


@pytest.fixture
def fastlb_behind_recorder(
    request: pytest.FixtureRequest, procs: Processes, tmp_path: Path
) -> Iterator[tuple[int, fuzzing.RecorderLog, Path]]:
    """fastlb (the parser in request.param) in front of tests/recorder.py; stderr to a file, so
    a long run cannot fill a pipe, and read at the end for tracebacks."""
    rport, port = free_port(), free_port()
    log = tmp_path / "recorder.jsonl"
    recorder = procs.spawn(
        [PY, str(ROOT / "tests" / "recorder.py"), "--port", str(rport), "--log", str(log)]
    )
    wait_port(rport, 10.0, recorder)
    config = tmp_path / "lb.toml"
    config.write_text(static_config(port, [("recorder", rport)], http=request.param))
    stderr = tmp_path / "fastlb.stderr"
    with stderr.open("wb") as err:
        proc = procs.spawn([PY, "-m", "fastlb", "--config", str(config)], stderr=err)
    wait_port(port, 30.0, proc)
    yield port, fuzzing.RecorderLog(log), stderr
    assert proc.poll() is None, f"fastlb exited with {proc.returncode}"


@pytest.mark.parametrize("fastlb_behind_recorder", PARSERS, indirect=True)
def test_exchange_forwards_strictly_or_refuses_and_closes(
    fastlb_behind_recorder: tuple[int, fuzzing.RecorderLog, Path], request: pytest.FixtureRequest
) -> None:
    """Each input, sent in segments on a fresh connection, ends within 2 s in what the policy
    says: the recorder frames exactly the requests it forwards (nothing it cannot frame, no
    extra or missing request: no desync), the client gets each answer, and a refusal is one
    4xx with a close; fastlb then serves a normal request, and logs no traceback."""
    port, log, stderr = fastlb_behind_recorder
    kind = request.node.callspec.params["fastlb_behind_recorder"]
    parser = make_head_parser(kind, None, 100, 16384)
    log.new()

    logged = [0]  # how much of fastlb's stderr was read

    @settings(SETTINGS, max_examples=1000)
    @given(fuzzing.inputs())
    def run(inp: fuzzing.Input) -> None:
        verdict = fuzzing.judge_exchange(port, log, inp, parser)
        data = stderr.read_bytes()
        text = data[logged[0] :].decode(errors="replace")
        logged[0] = len(data)
        if fuzzing.tracebacks(text):  # this input's, so that hypothesis names it
            verdict.problems.append(f"fastlb logged an exception:\n{text[-3000:]}")
        assert not verdict.problems, "\n".join(verdict.problems)

    run()
    found = fuzzing.tracebacks(stderr.read_text(errors="replace"))
    assert not found, "fastlb logged exceptions:\n" + stderr.read_text(errors="replace")[-4000:]
