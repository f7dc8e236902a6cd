"""Sweeps with rounds: every case once per round, interleaved in a seeded shuffled order, so a
comparison is paired in time; resumable in the round where it stopped."""

from __future__ import annotations

from collections import Counter

import pytest

from tokenwatt.errors import ConfigError
from tokenwatt.results.columns import SUMMARY_CSV
from tokenwatt.results.store import append_rows, read_rows
from tokenwatt.sweep.case import record_failure
from tokenwatt.sweep.executors import Executor
from tokenwatt.sweep.plan import plan, round_order, schedule_of
from tokenwatt.sweep.run import run_sweep

BASE = {"name": "s", "model": "preset:tiny-llama", "device": "cpu",
        "precision": ["fp32", "bf16", "int8-weight", "fp8"],
        "workload": {"batch_size": [1, 4]}}  # fmt: skip


class Recorder(Executor):
    """In-process stand-in: completes every case except fp8 (fails); stops after `stop_after`."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.ran: list[tuple[str, int | None]] = []
        self.stop_after = stop_after

    def run(self, case, out, on_event=None):
        if self.stop_after is not None and len(self.ran) >= self.stop_after:
            raise KeyboardInterrupt
        self.ran.append((case.case_id, case.tags.get("round")))
        spec = {"case_id": case.case_id, "config": case.config_dict(), "tags": case.tags}
        if case.config.precision == "fp8":
            record_failure(out, spec, "PrecisionUnsupported: fp8 needs a GPU")
            return
        run_id = f"run{len(read_rows(out / SUMMARY_CSV)[0])}"
        append_rows(out / SUMMARY_CSV, [{"run_id": run_id, "case_id": case.case_id}])


def _data(tmp_path, **kw):
    return {**BASE, "out": str(tmp_path / "o"), **kw}


def test_rounds_run_every_case_once_per_round_in_shuffled_order(tmp_path):
    data = _data(tmp_path, rounds=3)
    cases = plan(data)
    ok = [c.case_id for c in cases if c.config.precision != "fp8"]
    rec = Recorder()
    outcome = run_sweep(data, cases, executor=rec)
    runs = Counter(cid for cid, _ in rec.ran)
    assert all(runs[c] == 3 for c in ok)
    # fp8 fails in round 1 and is not tried again in rounds 2 and 3
    assert all(runs[c.case_id] == 1 for c in cases if c.config.precision == "fp8")
    by_round = [[cid for cid, r in rec.ran if r == k and cid in ok] for k in (1, 2, 3)]
    assert all(sorted(b) == sorted(ok) for b in by_round)  # every case once per round
    assert len({tuple(b) for b in by_round}) == 3  # a new shuffle each round
    assert by_round[0] != ok  # not the plan order
    assert set(outcome.status.values()) == {"complete", "failed"}
    again = Recorder()
    run_sweep(data, cases, executor=again)
    assert again.ran == []  # three runs each: nothing left to do


def test_the_order_is_seeded_by_the_sweep():
    data = {**BASE, "rounds": 2, "out": "unused"}
    cases = plan(data)
    sched = schedule_of(data)
    assert sched.order == "interleaved" and sched.rounds == 2
    assert round_order(cases, sched, 1) == round_order(cases, schedule_of(data), 1)
    other = schedule_of({**data, "order_seed": 7})
    assert [c.case_id for c in round_order(cases, other, 1)] != [
        c.case_id for c in round_order(cases, sched, 1)
    ]
    assert schedule_of({"out": "x"}).order == "planned"  # no rounds: the plan's order


def test_an_interrupted_sweep_resumes_in_its_round(tmp_path):
    data = _data(tmp_path, rounds=3, precision=["fp32", "bf16"])
    cases = plan(data)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(data, cases, executor=Recorder(stop_after=5))  # 4 cases: inside round 2
    done = Counter(r["case_id"] for r in read_rows(tmp_path / "o" / SUMMARY_CSV)[0])
    assert sorted(done.values()) == [1, 1, 1, 2]
    rest = Recorder()
    run_sweep(data, cases, executor=rest)
    assert [r for _, r in rest.ran] == [2, 2, 2, 3, 3, 3, 3]
    done = Counter(r["case_id"] for r in read_rows(tmp_path / "o" / SUMMARY_CSV)[0])
    assert set(done.values()) == {3}
    forced = Recorder()
    run_sweep(data, cases, executor=forced, force=True)  # force: three more rounds
    assert len(forced.ran) == 12


def test_sequential_order_runs_each_case_its_rounds_in_a_row(tmp_path):
    data = _data(tmp_path, rounds=2, order="sequential", precision=["fp32", "bf16"])
    rec = Recorder()
    run_sweep(data, plan(data), executor=rec)
    ids = [cid for cid, _ in rec.ran]
    assert ids[0] == ids[1] and ids[2] == ids[3] and len(set(ids)) == 4


def test_failed_before_runs_again_only_when_asked(tmp_path):
    data = _data(tmp_path, rounds=2, precision=["fp32", "fp8"], workload={"batch_size": 1})
    cases = plan(data)
    run_sweep(data, cases, executor=Recorder())
    skip = Recorder()
    run_sweep(data, cases, executor=skip)
    assert skip.ran == []
    retry = Recorder()
    run_sweep(data, cases, executor=retry, retry_failed=True)
    assert [r for _, r in retry.ran] == [1]  # one retry, which fails again: not in round 2


@pytest.mark.parametrize(
    ("extra", "match"),
    [({"rounds": 0}, "rounds must be"), ({"rounds": "3"}, "rounds must be"),
     ({"rounds": 2, "order": "random"}, "order must be"), ({"order_seed": 1.5}, "order_seed")],
)  # fmt: skip
def test_bad_rounds_are_one_line_errors(extra, match):
    with pytest.raises(ConfigError, match=match):
        schedule_of({**BASE, **extra})
