"""`--meter dcgm`: GPU boards read from a node's dcgm-exporter (tests/fake_dcgm.py serves the
simulated boards in the exporter's text format), as a user on a cluster runs it: boards chosen
by label, the collection interval measured, a reset bridged, the power field integrated when
the counter is missing, stale and failing exporters, bad input refused before anything is
written, and a served run's windows against the simulator's ground truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tokenwatt.config import Measure
from tokenwatt.energy.meters.dcgm_text import Selection, boards_of, parse_page, select
from tokenwatt.energy.meters.select import open_meters
from tokenwatt.energy.recorder import PhaseRecorder
from tokenwatt.errors import MeterError, MeterUnavailable, UserError
from tokenwatt.sim import nvml as sim
from tokenwatt.sim.profiles import steps

sys.path.insert(0, str(Path(__file__).parent))
from fake_dcgm import FakeExporter  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402

INTERVAL = 0.25  # the exporter's -c 250: short, so each test takes seconds
SERVED = ["--engine", "openai", "--batch-size", "4", "--requests", "80", "--new-tokens", "20",
          "--prompt-tokens", "8", "--warmup", "0", "--idle-seconds", "2"]  # fmt: skip


@pytest.fixture
def boards():
    """Two simulated boards whose power jumps between levels (a changing value every
    collection, as real boards' is)."""
    profs = [steps(seed=7, seconds=900, hold=(0.5, 3.0)), steps(seed=8, seconds=900)]
    sim.configure(2, profs)
    return profs


def _measure(url, **kw):
    kw.setdefault("min_seconds", 2.0)
    kw.setdefault("idle_seconds", 2.0)
    return Measure(meter="dcgm", dcgm_url=[url], **kw)


def test_the_exporters_page_is_read_with_its_labels(boards):
    with FakeExporter(INTERVAL, pods={1: ("vllm-0", "server")}) as ex:
        import urllib.request

        page = urllib.request.urlopen(ex.url).read().decode()
    got = parse_page(page, ex.url)
    assert [b.gpu for b in got] == ["0", "1"]
    assert got[0].uuid == sim.STATE.gpus[0].uuid and got[0].host == "gpu-node-1"
    assert got[0].energy_mj >= 987_654_321 and got[0].power_w > 0  # mJ since boot, W
    assert got[1].labels["pod"] == "vllm-0" and "pod" not in got[0].labels
    by_pod = select(got, Selection(pod="vllm-0", said=("--dcgm-pod vllm-0",)), ex.url)
    assert [b.gpu for b in by_pod] == ["1"]
    assert [b.gpu for b in select(got, Selection(boards=(got[1].uuid,)), ex.url)] == ["1"]
    assert [b.gpu for b in select(got, Selection(boards=("0",)), ex.url)] == ["0"]


def test_a_board_shared_by_pods_is_one_board_and_says_whose_else_it_is(boards):
    shared = {0: [("batch-job", "worker"), ("vllm-0", "server")], 1: ("other", "x")}
    with FakeExporter(INTERVAL, pods=shared) as ex:
        meters = open_meters("dcgm", measure=_measure(ex.url, dcgm_pod="vllm-0",
                                                      dcgm_container="server"))  # fmt: skip
        try:
            assert [m.uuid for m in meters] == [sim.STATE.gpus[0].uuid]  # one board, once
            assert meters[0].other_pods == ["batch-job"]
            d = meters[0].describe()
            assert d["pods"] == ["vllm-0", "batch-job"] and d["pod"] == "vllm-0"
            assert d["container"] == "server"
        finally:
            for m in meters:
                m.close()


def test_selections_that_name_nothing_or_several_nodes_are_refused():
    series = [("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total", {"gpu": "0", "UUID": f"GPU-{host}",
               "Hostname": host}, 1e6) for host in ("n1", "n2")]  # fmt: skip
    both = boards_of(series)
    with pytest.raises(MeterUnavailable, match="2 nodes.*Hostname"):
        select(both, Selection(), "prom")
    assert len(select(both, Selection(many_nodes=True), "prom")) == 2
    with pytest.raises(MeterUnavailable, match="--dcgm-pod x matches no board"):
        select(both, Selection(pod="x", said=("--dcgm-pod x",)), "prom")
    with pytest.raises(MeterUnavailable, match="--gpus 3: no such board"):
        select(both[:1], Selection(boards=("0", "3")), "prom")


def test_the_collection_interval_is_measured_and_a_window_is_its_energy(boards):
    with FakeExporter(INTERVAL) as ex:
        meters = open_meters("dcgm", measure=_measure(ex.url, gpus=["1"]))
        try:
            m = meters[0]
            assert m.uuid == sim.STATE.gpus[1].uuid and m.channels[0].source == \
                "dcgm-energy-counter"  # fmt: skip
            assert m.interval_s == pytest.approx(INTERVAL, rel=0.25)
            assert m.describe()["meter_host"] == "gpu-node-1"
            rec = PhaseRecorder(meters)
            rec.mark("w")
            import time

            time.sleep(3.0)
            rec.mark("end")
            got = rec.phases()["w"]
            a, b = (mk.t - sim.STATE.origin for mk in rec.marks)
        finally:
            for m in meters:
                m.close()
    truth = boards[1].energy(a, b)
    err = got.joules_err["gpu1"]
    assert err > 0
    assert abs(got.joules["gpu1"] - truth) <= 3 * err, (got.joules["gpu1"], truth, err)


def test_boards_of_several_nodes_keep_their_own_channels(boards):
    with FakeExporter(INTERVAL, host="n1") as a, FakeExporter(INTERVAL, host="n2") as b:
        meters = open_meters("dcgm", measure=Measure(meter="dcgm", dcgm_url=[a.url, b.url],
                                                     gpus=["0"], min_seconds=2,
                                                     idle_seconds=2))  # fmt: skip
        try:
            keys = [m.channels[0].key for m in meters]
            assert keys == ["n1/gpu0", "n2/gpu0"] and [m.host for m in meters] == ["n1", "n2"]
            assert set(meters[0].read_joules()) | set(meters[1].read_joules()) == set(keys)
        finally:
            for m in meters:
                m.close()
    with FakeExporter(INTERVAL, host="n1") as a:
        with pytest.raises(UserError, match="--gpus GPU-nowhere: no such board"):
            open_meters("dcgm", measure=_measure(a.url, gpus=["0", "GPU-nowhere"]))


def test_reads_from_two_threads_never_look_like_a_reset(boards):
    import threading

    with FakeExporter(INTERVAL) as ex:
        m = open_meters("dcgm", measure=_measure(ex.url, gpus=["0"]))[0]
        seen: list[float] = []

        def reads():
            for _ in range(150):
                seen.append(m.read_joules()["gpu0"])

        threads = [threading.Thread(target=reads) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        m.close()
    assert m.reloads == 0 and max(seen) < 1e5  # J: no counter since boot added to a read


def test_a_reset_counter_is_bridged_and_flagged(boards):
    import time

    with FakeExporter(INTERVAL) as ex:
        meters = open_meters("dcgm", measure=_measure(ex.url, gpus=["0"]))
        m = meters[0]
        rec = PhaseRecorder(meters)
        rec.mark("w")
        time.sleep(1.0)
        ex.reset(0)
        time.sleep(1.5)
        rec.mark("end")
        j = rec.phases()["w"].joules["gpu0"]
        assert m.reloads == 1 and "driver-reload" in rec.quality()["flags"]
        a, b = (mk.t - sim.STATE.origin for mk in rec.marks)
        # energy keeps counting across the reset: at most the period around it is lost
        assert 0.6 * boards[0].energy(a, b) < j <= 1.1 * boards[0].energy(a, b)
        m.close()


def test_without_the_energy_field_the_power_field_is_integrated_and_labelled(boards):
    """The power field, each value taken to cover the interval before it, attributed like a
    counter: each window within 3 reported standard deviations of the truth, on a board
    whose power jumps between 120 and 650 W."""
    import time

    with FakeExporter(INTERVAL, energy=False) as ex:
        meters = open_meters("dcgm", measure=_measure(ex.url, gpus=["0"]))
        m = meters[0]
        assert m.channels[0].source == "dcgm-power-integrated"
        assert m.update_period_s() == pytest.approx(INTERVAL, rel=0.25)
        rec = PhaseRecorder(meters)
        for k in range(3):
            rec.mark(f"w{k}")
            time.sleep(3.0)
        rec.mark("end")
        got = rec.phases()
        m.close()
    ts = [mk.t - sim.STATE.origin for mk in rec.marks]
    for k in range(3):
        truth, err = boards[0].energy(ts[k], ts[k + 1]), got[f"w{k}"].joules_err["gpu0"]
        assert err > 0 and abs(got[f"w{k}"].joules["gpu0"] - truth) <= 3 * err, (k, truth, err)


def test_a_stale_or_failing_exporter_is_a_meter_error(boards):
    import time

    with FakeExporter(INTERVAL) as ex:
        m = open_meters("dcgm", measure=_measure(ex.url, gpus=["0"]))[0]
        ex.fail = True
        with pytest.raises(MeterError, match="HTTP 500"):
            m.read_joules()
        ex.fail = False
        ex.stall()
        m.read_joules()
        time.sleep(4 * m.interval_s + 2.2)
        with pytest.raises(MeterError, match="stale"):
            m.read_joules()
        m.close()


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, invoke, boards):
    out = tmp_path / "o"
    with FakeOpenAI() as fake, FakeExporter(INTERVAL) as ex:
        cases = {
            "http://127.0.0.1:9/metrics": "cannot read http://127.0.0.1:9/metrics",
            fake.url.replace("/v1", "/metrics"): "publishes no DCGM_FI_DEV_TOTAL_ENERGY",
        }
        for url, says in cases.items():
            r = invoke("run", *SERVED, "--url", fake.url, "--meter", "dcgm", "--dcgm-url", url,
                       "--out", str(out))  # fmt: skip
            assert r.exit_code == 2 and says in r.output, r.output
        r = invoke("run", *SERVED, "--url", fake.url, "--meter", "dcgm", "--dcgm-url", ex.url,
                   "--dcgm-pod", "nobody", "--out", str(out))  # fmt: skip
        assert r.exit_code == 2 and "--dcgm-pod nobody matches no board" in r.output
        r = invoke("run", *SERVED, "--url", fake.url, "--meter", "dcgm", "--dcgm-url", ex.url,
                   "--min-seconds", "0.5", "--out", str(out))  # fmt: skip
        assert r.exit_code == 2 and "collection intervals" in r.output and "-c" in r.output
        r = invoke("run", *SERVED, "--url", fake.url, "--meter", "dcgm", "--out", str(out))
        assert r.exit_code == 2 and "--dcgm-url" in r.output
        r = invoke("run", *SERVED, "--url", fake.url, "--dcgm-url", ex.url, "--out", str(out))
        assert r.exit_code == 2 and "--meter dcgm" in r.output
    assert not out.exists()


def test_meters_reports_what_an_exporter_publishes(invoke, boards):
    with FakeExporter(INTERVAL, energy=False) as ex:
        r = invoke("meters", "--dcgm-url", ex.url)
    assert r.exit_code == 0, r.output
    assert r.output.count("available") == 2 and "collection_interval_s" in r.output
    assert "no DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" in r.output
    r = invoke("meters", "--dcgm-url", "http://127.0.0.1:9/metrics")
    assert r.exit_code == 1 and "NOT AVAILABLE" in r.output


def _served_run(invoke, tmp_path, meter_args, requests="80", repeats="3"):
    out = tmp_path / "o"
    with FakeOpenAI(delay_s=0.004) as fake:
        r = invoke("run", *SERVED, "--requests", requests, "--repeats", repeats, "--url",
                   fake.url, "--min-seconds", "2", *meter_args, "--out", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    return out


def steady_errors(out: Path, prof) -> list[tuple[float, float, float]]:
    """(measured J, truth J, reported J error) of every trial's steady-state window."""
    rows = pd.read_csv(out / "results.csv")
    run = json.loads((out / "run.json").read_text())["runs"][0]
    got = []
    for trial in run["trials"]:
        marks = [(m["phase"], m["t_s"] - sim.STATE.origin) for m in trial["marks"]]
        truth = sum(
            prof.energy(a, b) for (p, a), (_, b) in zip(marks, marks[1:]) if p == "steady"
        )  # every pass of the trial
        row = rows[(rows["trial"] == trial["trial"]) & (rows["window"] == "steady-state")]
        got.append((float(row["total_j"].iloc[0]), truth, float(row["total_j_err"].iloc[0])))
    return got


def test_a_served_run_measured_through_the_exporter_matches_the_truth(tmp_path, invoke,
                                                                      boards):  # fmt: skip
    with FakeExporter(INTERVAL, pods={0: ("vllm-0", "server")}) as ex:
        out = _served_run(invoke, tmp_path, ["--meter", "dcgm", "--dcgm-url", ex.url,
                                             "--dcgm-pod", "vllm-0"])  # fmt: skip
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["energy_source"]) == {"dcgm-energy-counter"}
    assert set(rows["energy_scope"]) == {"gpu-board"} and set(rows["measured"]) == {True}
    assert set(rows["meter_host"]) == {"gpu-node-1"}
    assert set(rows["board_uuids"]) == {sim.STATE.gpus[0].uuid}
    for measured, truth, err in steady_errors(out, boards[0]):
        assert err > 0 and abs(measured - truth) <= 3 * err, (measured, truth, err)
    meter = json.loads((out / "run.json").read_text())["runs"][0]["meters"][0]
    assert meter["dcgm_url"] == ex.url and meter["pod"] == "vllm-0"


def test_an_exporter_failing_mid_run_degrades_trials_and_keeps_finished_ones(tmp_path, boards):
    from tokenwatt.config import load_config
    from tokenwatt.errors import RunStopped
    from tokenwatt.runner.run import run_config

    out = tmp_path / "o"
    with FakeOpenAI(delay_s=0.004) as fake, FakeExporter(INTERVAL) as ex:
        cfg = load_config(None, engine="openai", url=fake.url, out=str(out), meter="dcgm",
                          dcgm_url=[ex.url], gpus=["0"], repeats=3, min_seconds=2.0,
                          idle_seconds=2.0, warmup=0, requests=40, new_tokens=10)  # fmt: skip

        def on_trial(done, total):
            ex.fail = True  # the exporter dies once the first trial is written

        try:
            run_config(cfg, on_trial=on_trial)
        except RunStopped:
            pass
    rows = pd.read_csv(out / "results.csv")
    ok = rows[rows["status"] == "ok"]
    assert set(ok["trial"]) == {0}
    bad = rows[rows["status"] == "degraded"]
    assert len(bad) and bad["status_reason"].str.contains("HTTP 500").all()


def test_a_served_run_too_short_for_the_interval_sends_more_requests(tmp_path, invoke, boards):
    with FakeExporter(INTERVAL) as ex, FakeOpenAI(delay_s=0.004) as fake:
        r = invoke("run", *SERVED, "--requests", "8", "--repeats", "1", "--url", fake.url,
                   "--min-seconds", "2", "--meter", "dcgm", "--dcgm-url", ex.url, "--gpus", "0",
                   "--out", str(tmp_path / "o"))  # fmt: skip
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "workload.requests: 8 requests a pass" in said and "collection interval" in said
    run = json.loads((tmp_path / "o" / "run.json").read_text())["runs"][0]
    for trial in run["trials"]:
        at = {m["phase"]: m["t_s"] for m in trial["marks"]}  # the last pass's edges
        assert at["ramp-down"] - at["steady"] >= 4 * INTERVAL * 0.8
