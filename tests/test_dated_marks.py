"""Phase boundaries an engine dates itself (vLLM's request timestamps, a server's streamed
chunks), placed on the trace after the fact: the same joules as live marks, against the
simulated sensor's ground truth, and interpolated reads on continuous meters."""

import pytest
from simfix import Continuous, advance, virtual_board, virtual_sampler

from tokenwatt.energy.recorder import PhaseRecorder
from tokenwatt.sim import nvml as sim
from tokenwatt.sim.profiles import bursts


def burst_marks(prof, first=10, count=24):
    t0 = prof.times[first]
    return t0, [(prof.times[i] - t0, {"gap": "end"}.get(prof.labels[i], prof.labels[i]))
                for i in range(first, first + count)]  # fmt: skip


def truth(prof, marks):
    out = {}
    for (a, phase), (b, _) in zip(marks, marks[1:]):
        if phase != "end":
            out[phase] = out.get(phase, 0.0) + prof.energy(a, b)
    return out


def test_dated_marks_match_ground_truth_like_live_marks():
    prof = bursts(seed=5)
    t0, marks = burst_marks(prof)
    clock, meters = virtual_board(prof)
    s = virtual_sampler(meters, clock)
    s.poll_all()
    advance(s, clock, sim.STATE.origin + t0 - 0.3)
    rec = PhaseRecorder(meters, sampler=s, align=False, clock=clock)
    rec.start()
    advance(s, clock, sim.STATE.origin + t0 + marks[-1][0])  # the engine runs, unmarked...
    for t, phase in reversed(marks):  # ...then hands back its dates, in any order
        rec.mark_at(phase, sim.STATE.origin + t0 + t)
    got = rec.phases()
    want = truth(prof, [(t0 + t, p) for t, p in marks])
    assert [m.phase for m in rec.marks] == [p for _, p in marks]  # sorted by time
    for phase in ("prefill", "decode"):
        assert got[phase].joules["gpu0"] == pytest.approx(want[phase], rel=0.03)
    assert rec.quality()["attribution"] == "counter-updates+trace"


def test_mark_at_needs_an_open_window():
    clock, meters = virtual_board(300.0)
    rec = PhaseRecorder(meters, sampler=None, clock=clock)
    with pytest.raises(RuntimeError, match="start"):
        rec.mark_at("decode", clock())


def test_dated_marks_on_a_continuous_meter_are_interpolated():
    clock, _ = virtual_board(300.0)
    meter = Continuous(clock)
    s = virtual_sampler([meter], clock)
    s.poll_all()
    rec = PhaseRecorder([meter], sampler=s, align=False, clock=clock)
    rec.start()
    start = clock()
    advance(s, clock, start + 2.0)
    rec.mark_at("prefill", start + 0.013)
    rec.mark_at("decode", start + 0.3371)
    rec.mark_at("end", start + 1.9)
    got = rec.phases()
    assert got["prefill"].joules["cpu-package-0"] == pytest.approx(50.0 * 0.3241, rel=1e-6)
    assert got["decode"].joules["cpu-package-0"] == pytest.approx(50.0 * (1.9 - 0.3371), rel=1e-6)
    assert got["decode"].seconds == pytest.approx(1.9 - 0.3371)
