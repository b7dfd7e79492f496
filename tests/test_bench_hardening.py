"""bench/hardening.py's pure parts: the verdicts, the table, the case list, the config edits.

Why: the side-by-side run takes minutes and needs HAProxy and nginx; what it concludes rests on
these functions, so they are checked here on made-up observations, with no process started.
"""

from __future__ import annotations

import pytest

from bench.hardening import (
    DIFFERS,
    FAIL,
    PASS,
    ProxyRun,
    classify,
    fastlb_timeouts,
    format_cases,
    format_table,
    haproxy_timeouts,
    nginx_config,
    select,
)
from bench.peers import StartError, fastlb_toml, haproxy_cfg, render_template
from tests.hostile.corpus import CASES, Case
from tests.hostile.exchange import Observation, Response

BY_NAME = {c.name: c for c in CASES}


def line(seq: int, method: str = "GET", target: str = "/", **extra: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "conn": 1,
        "seq": seq,
        "method": method,
        "target": target,
        "version": "HTTP/1.1",
        "headers": [["Host", "a"]],
        "body_len": 0,
        "body_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    }
    entry.update(extra)
    return entry


def answered(*statuses: int, recorder: bool = True) -> list[Response]:
    return [
        Response(s, f"1 {i + 1}" if recorder and s == 200 else None, False)
        for i, s in enumerate(statuses)
    ]


def test_a_valid_request_framed_as_sent_passes() -> None:
    obs = Observation(responses=answered(200), lines=[line(1)])
    assert classify(BY_NAME["get"], obs) == (PASS, [])


def test_a_reject_with_the_policy_status_and_a_close_passes() -> None:
    obs = Observation(responses=answered(400), closed=True)
    assert classify(BY_NAME["host-missing"], obs) == (PASS, [])


def test_a_smuggled_request_is_a_desync_for_any_proxy() -> None:
    # conn-cl: the replica framed the body as a second request nobody was answered for.
    obs = Observation(responses=answered(200), lines=[line(1, "POST"), line(2, target="/hidden")])
    verdict, why = classify(BY_NAME["conn-cl"], obs)
    assert verdict == FAIL
    assert any("desync" in w for w in why), why


def test_invalid_bytes_reaching_the_replica_fail_but_a_cut_off_body_does_not() -> None:
    bad = Observation(
        responses=answered(502, recorder=False), lines=[{"conn": 1, "error": "bare CR in x"}]
    )
    assert classify(BY_NAME["te-cr-value"], bad)[0] == FAIL
    cut = Observation(
        responses=answered(400, recorder=False),
        closed=True,
        lines=[{"conn": 1, "error": "eof in body"}],
    )
    assert classify(BY_NAME["chunk-second-bad"], cut) == (PASS, [])


def test_another_normalisation_differs_and_a_5xx_to_a_valid_request_fails() -> None:
    # A proxy refusing lower-case methods is stricter than fastlb's policy, not broken.
    stricter = Observation(responses=answered(400, recorder=False), closed=True)
    assert classify(BY_NAME["method-lower"], stricter)[0] == DIFFERS
    # A 408 instead of a 400 for a bare-LF head: a difference.
    assert (
        classify(BY_NAME["lf-everywhere"], Observation(responses=answered(408), closed=True))[0]
        == DIFFERS
    )
    broken = Observation(responses=answered(501, recorder=False), closed=True)
    verdict, why = classify(BY_NAME["te-htab-ows"], broken)
    assert verdict == FAIL and any("5xx" in w for w in why)


def test_a_5xx_the_policy_itself_gives_to_a_pipelined_invalid_request_is_no_failure() -> None:
    # `make hardening` once listed fastlb's own policy outcome as a FAIL: GET /1 answered 200,
    # then the pipelined `GET /b HTTP/1.2` refused with 505 (RFC 9110 §15.6.6) and a close. The
    # 505 answers the invalid request, not the valid one; a 5xx to the valid one still fails.
    for name, target in (("pipe-then-version", "/1"), ("h2c-upgrade-preface", "/")):
        case = BY_NAME[name]
        assert case.expect.statuses == (200, 505)
        framed = [line(1, target=target)]
        exact = Observation(responses=answered(200, 505, recorder=True), closed=True, lines=framed)
        assert classify(case, exact) == (PASS, [])
        broken = Observation(responses=answered(502, 505, recorder=False), closed=True)
        verdict, why = classify(case, broken)
        assert verdict == FAIL and any("5xx" in w for w in why)


def test_a_hang_and_a_dead_proxy_fail() -> None:
    hang = Observation(timed_out=True)
    verdict, why = classify(BY_NAME["lf-everywhere"], hang)
    assert verdict == FAIL and any("hang" in w for w in why)
    dead = Observation(responses=answered(400), closed=True, probe="ConnectionRefusedError")
    assert classify(BY_NAME["host-missing"], dead)[0] == FAIL


def test_an_http09_answer_and_an_abort_after_half_close_are_differences() -> None:
    http09 = Observation(responses=[Response(0, "1 1", True)], closed=True, lines=[line(1)])
    assert classify(BY_NAME["http09-simple"], http09)[0] == DIFFERS
    case = BY_NAME["get-after-good-eof"]
    assert case.half_close
    aborted = Observation(closed=True, lines=[line(1, target="/1")])
    assert classify(case, aborted)[0] == DIFFERS


def runs_for(cases: list[Case]) -> list[ProxyRun]:
    a = ProxyRun("proxy-a", {c.name: (PASS, []) for c in cases}, {c.name: "ok" for c in cases})
    verdicts: dict[str, tuple[str, list[str]]] = {c.name: (PASS, []) for c in cases}
    verdicts[cases[0].name] = (FAIL, ["desync: replica framed 2 requests"])
    verdicts[cases[1].name] = (DIFFERS, ["statuses [400] (want [200])"])
    b = ProxyRun("proxy-b", verdicts, {c.name: "ok" for c in cases})
    return [a, b, ProxyRun("proxy-c", {}, {}, error="not installed")]


def test_table_counts_per_class_and_total() -> None:
    cases = select(CASES, "baseline")
    assert cases and all(c.cls == "baseline" for c in cases)
    table = format_table(runs_for(cases), cases)
    rows = {r.split()[0]: r.split() for r in table.splitlines()[3:] if r and not r.startswith("-")}
    n = len(cases)
    assert rows["baseline"] == ["baseline", str(n), f"{n}/0/0", f"{n - 2}/1/1", "not", "run"]
    assert rows["total"][1:4] == [str(n), f"{n}/0/0", f"{n - 2}/1/1"]


def test_case_list_names_each_failing_case_with_every_proxy() -> None:
    cases = select(CASES, "baseline")
    text = format_cases(runs_for(cases), cases, FAIL)
    assert text.splitlines()[0].startswith(f"{cases[0].name} [baseline]")
    assert "proxy-a" in text and "desync" in text and cases[1].name not in text
    assert format_cases(runs_for(cases)[:1], cases, FAIL) == "(none)"


def test_config_edits_shorten_the_timeouts_of_the_real_templates() -> None:
    ports = {"b1": 1, "b2": 2, "b3": 3}
    fastlb = fastlb_timeouts(fastlb_toml(5, "h11", ports))
    assert "[proxy]\nheader_timeout = 1.0\nbackend_timeout = 1.5\n" in fastlb
    haproxy = haproxy_timeouts(
        haproxy_cfg("/p", 5, {"b1": 1, "b2": 2, "b3": 3}, maxconn=9)
    )
    assert "timeout http-request 1s" in haproxy and "timeout client 1s" in haproxy
    nginx = nginx_config(
        render_template(
            "nginx-proxy.conf.tmpl", prefix="/p", port=5, b1_port=1, b2_port=2, b3_port=3
        )
    )
    assert "client_header_timeout 1s;" in nginx and "proxy_set_header Host $http_host;" in nginx
    assert nginx.count("max_fails=0;") == 3
    with pytest.raises(StartError):
        haproxy_timeouts("global\n")
