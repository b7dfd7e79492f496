"""The long fuzz run: `python -m bench.fuzz --inputs 100000` (`make fuzz`).

The suite's fuzzer (tests/test_fuzz.py) runs a few hundred hypothesis examples per level;
this runs the same generators and judges (tests/fuzzing.py) on many more inputs, drawn from a
seeded `random` instead of hypothesis (no shrinking overhead; input #i of seed S is always the
same bytes, so any problem printed here can be replayed with `--seed S --first i --inputs 1`).

Levels, each on --inputs inputs:
1. the head parsers (httptools and h11) in process: escapes, disagreements, policy rules
   broken by an accepted head, valid requests refused;
2. the chunked framer in process: escapes, split dependence, differences from a strict parser;
3. the whole exchange: one fastlb per parser in front of tests/recorder.py, one fresh
   connection per input, bounded by --seconds per parser (the count reached is printed);
   then fastlb's log is searched for tracebacks.

It prints counts per level (inputs, forwarded, refused by status, escaped exceptions,
disagreements, problems by kind) with a sample of each kind of problem, and exits 1 if any
level found a problem.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.proc import ProcessRegistry
from fastlb.http.parsers import make_head_parser
from tests import fuzzing
from tests.conftest import free_port, static_config, wait_port

ROOT = Path(__file__).resolve().parent.parent
PARSERS = ("httptools", "h11")


def draw(seed: int, i: int) -> fuzzing.RandomDraw:
    """Input #i's own source of choices: reproducible one by one."""
    return fuzzing.RandomDraw(random.Random(f"{seed}:{i}"))


def kind_of(problem: str) -> str:
    """A problem's kind, for counting: its words before the first input shown."""
    head = problem.split("\n", 1)[0]
    for cut in (" b'", ' b"', " (input", ": b", " on b", ": '", ': "', " [", " bytearray", "; b"):
        at = head.find(cut)
        if at > 0:
            head = head[:at]
    return re.sub(r"\d{5,}", "N", head[:110])


class Tally:
    def __init__(self, name: str, samples: int) -> None:
        self.name = name
        self.samples = samples
        self.counts: Counter[str] = Counter()
        self.problems: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.bad_inputs = 0

    def add(self, i: int, problems: Sequence[str]) -> None:
        if problems:
            self.bad_inputs += 1
        for p in problems:
            kind = kind_of(p)
            self.problems[kind] += 1
            shown = self.examples.setdefault(kind, [])
            if len(shown) < self.samples:
                shown.append(f"#{i}: {p[:4000]}")

    def report(self) -> list[str]:
        out = [f"== {self.name}"]
        out += [f"  {k}: {v}" for k, v in sorted(self.counts.items())]
        out.append(f"  inputs with a problem: {self.bad_inputs}")
        for kind, n in self.problems.most_common():
            out.append(f"  PROBLEM x{n}: {kind}")
            out += ["      " + e.replace("\n", "\n      ") for e in self.examples[kind]]
        return out


def level_heads(opts: argparse.Namespace) -> Tally:
    tally = Tally("level 1: head parsers (httptools, h11)", opts.samples)
    parsers = {k: make_head_parser(k, b"x-request-id", 100, 16384) for k in PARSERS}
    for i in range(opts.first, opts.first + opts.inputs):
        raw, mutations = fuzzing.gen_head(draw(opts.seed, i))
        tally.counts["inputs"] += 1
        for kind, parser in parsers.items():
            out = fuzzing.parse_outcome(parser, raw)
            if out.escaped:
                tally.counts[f"{kind} escaped exceptions"] += 1
            elif out.accepted:
                tally.counts[f"{kind} accepted"] += 1
            else:
                tally.counts[f"{kind} refused {out.status}"] += 1
        problems = fuzzing.judge_head(parsers, raw, valid=not mutations)
        if any(p.startswith("parsers disagree") for p in problems):
            tally.counts["parser disagreements"] += 1
        tally.add(i, problems)
    return tally


def level_framer(opts: argparse.Namespace) -> Tally:
    tally = Tally("level 2: chunked framer", opts.samples)
    for i in range(opts.first, opts.first + opts.inputs):
        data, pieces, _ = fuzzing.gen_chunked_body(draw(opts.seed, i))
        tally.counts["inputs"] += 1
        run = fuzzing.run_framer([data])
        if run.escaped:
            tally.counts["escaped exceptions"] += 1
        elif run.status:
            tally.counts[f"refused {run.status}"] += 1
        elif run.done_at >= 0:
            tally.counts["accepted (body complete)"] += 1
        else:
            tally.counts["needs more bytes"] += 1
        tally.add(i, fuzzing.judge_chunked(data, pieces))
    return tally


def new_text(path: Path, offset: int) -> tuple[str, int]:
    """What was appended to `path` since `offset`, and the new offset."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    return data.decode(errors="replace"), offset + len(data)


def level_exchange(opts: argparse.Namespace, kind: str, work: Path) -> Tally:
    tally = Tally(f"level 3: whole exchange, fastlb http = {kind}", opts.samples)
    with ProcessRegistry() as registry:
        rport, port = free_port(), free_port()
        log = work / f"recorder-{kind}.jsonl"
        recorder = registry.start(
            f"recorder-{kind}",
            [
                sys.executable,
                str(ROOT / "tests" / "recorder.py"),
                "--port",
                str(rport),
                "--log",
                str(log),
            ],
            work / f"recorder-{kind}.out",
            cwd=ROOT,
        )
        wait_port(rport, 10.0, recorder.popen)
        config = work / f"lb-{kind}.toml"
        config.write_text(static_config(port, [("recorder", rport)], http=kind))
        stderr = work / f"fastlb-{kind}.log"
        lb = registry.start(
            f"fastlb-{kind}",
            [sys.executable, "-m", "fastlb", "--config", str(config)],
            stderr,
            cwd=ROOT,
        )
        wait_port(port, 30.0, lb.popen)
        parser = make_head_parser(kind, None, 100, 16384)
        reader = fuzzing.RecorderLog(log)
        _, seen = new_text(stderr, 0)
        deadline = time.monotonic() + opts.seconds
        for i in range(opts.first, opts.first + opts.inputs):
            if time.monotonic() > deadline:
                tally.counts["stopped by --seconds before input"] = i
                break
            inp = fuzzing.gen_input(draw(opts.seed, i))
            probe = (i - opts.first) % opts.probe_every == 0
            verdict = fuzzing.judge_exchange(port, reader, inp, parser, probe=probe)
            tally.counts["inputs"] += 1
            tally.counts["requests forwarded (framed by the recorder)"] += verdict.forwarded
            if verdict.refused:
                tally.counts[f"refused {verdict.refused}"] += 1
            tally.counts[f"connection ended: {verdict.ending}"] += 1
            tally.add(i, verdict.problems)
            logged, seen = new_text(stderr, seen)
            if fuzzing.tracebacks(logged):
                # The exception is attributed to the input just sent (the probe is a plain GET).
                shown = fuzzing.show(inp.data)
                tally.add(i, [f"fastlb logged an exception after input {shown}:\n{logged[:3000]}"])
            if not lb.alive():
                tally.add(i, [f"fastlb exited with {lb.popen.returncode}"])
                break
        status = fuzzing.probe_status(port)
        if status != 200:
            tally.add(-1, [f"fastlb does not serve a normal request at the end ({status})"])
        lb_alive = lb.alive()
        registry.stop(lb)
        text = stderr.read_text(errors="replace")
        found = fuzzing.tracebacks(text)
        tally.counts["traceback lines in fastlb's log"] = len(found)
        if found:
            at = text.find(found[0])
            tally.add(-1, ["fastlb logged exceptions:\n" + text[max(0, at - 300) : at + 3000]])
        if not lb_alive:
            tally.add(-1, ["fastlb was not running at the end"])
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs per level")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--first", type=int, default=0, help="index of the first input")
    ap.add_argument("--levels", default="1,2,3", help="which levels, e.g. 1,2")
    ap.add_argument("--parsers", default=",".join(PARSERS), help="level 3's fastlb modes")
    ap.add_argument("--seconds", type=float, default=600.0, help="level 3's budget per parser")
    ap.add_argument("--probe-every", type=int, default=1, help="level 3: a normal request each N")
    ap.add_argument("--logs", help="level 3: keep fastlb's and the recorder's logs in this dir")
    ap.add_argument("--samples", type=int, default=3, help="examples shown per kind of problem")
    opts = ap.parse_args(argv)
    levels = {int(x) for x in opts.levels.split(",")}
    tallies: list[Tally] = []
    started = time.monotonic()
    print(f"bench.fuzz: seed {opts.seed}, inputs {opts.first}..{opts.first + opts.inputs - 1}")
    for level, run in ((1, level_heads), (2, level_framer)):
        if level in levels:
            t0 = time.monotonic()
            tallies.append(run(opts))
            print(
                "\n".join(tallies[-1].report()), f"\n  ({time.monotonic() - t0:.0f} s)", flush=True
            )
    if 3 in levels:
        with tempfile.TemporaryDirectory(prefix="fastlb-fuzz-") as tmp:
            work = Path(opts.logs or tmp)
            work.mkdir(parents=True, exist_ok=True)
            for kind in opts.parsers.split(","):
                t0 = time.monotonic()
                tallies.append(level_exchange(opts, kind, work))
                print(
                    "\n".join(tallies[-1].report()),
                    f"\n  ({time.monotonic() - t0:.0f} s)",
                    flush=True,
                )
    bad = sum(t.bad_inputs for t in tallies)
    print(f"== total: {bad} inputs with a problem, {time.monotonic() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
