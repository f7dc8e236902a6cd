"""Kill `tokenwatt run` and `tokenwatt sweep` at random points and count what was lost.

Runs. For each signal (SIGINT, SIGTERM, SIGKILL) N runs are started into one results folder
per signal (so later runs also append after earlier crashes, as a resumed run would). Each is
killed at a random point of its own progress, read from the run's own events (no calibration
run: a busy machine moves every time): a random K in 0..REPEATS; K = 0 kills during start-up,
just after a start-up event drawn at random (the interpreter up, then each phase the run
reports before its trials: meters, warm-up, idle baseline); otherwise after the K-th trial row,
a random part of the time the run's own last trial took (K = REPEATS: while the summary is
written). A witness records each event, and each append only after `append_rows` has returned
(fsynced), with the time; where each kill landed is the last event before the run died, and
`on_target` says whether that is the event it was aimed after. So:

    rows lost        = rows witnessed as written but missing from disk (goal: 0)
    in flight        = rows on disk the witness had not yet confirmed (0 or 1 allowed)
    unparseable      = result files that fail a strict parse (goal: 0)

A run that ended before its kill landed is "finished untouched": neither interrupted nor a
pass, and another kill point is drawn until N kills landed.

Sweeps. For each way of killing a sweep (the sweep process alone with SIGKILL, which orphans
its case process; the whole process group with SIGINT, SIGTERM and SIGKILL) N sweeps are
killed in one folder per mode, each started at once after the previous kill (a resume racing
the orphan of the last kill), at a random point: during start-up, while a case measures,
while a case merges its rows, or just after a case completed. After each kill the folder is
read as tokenwatt reads it (under its lock, which rolls back a merge a SIGKILL cut short):

    cases lost         complete runs (summary rows, their trial rows) that disappeared
    cases duplicated   a second summary row for a case, a trial row twice, trial rows of a
                       run that has no summary row, or run.json records that do not match
                       the summary rows one to one
    spuriously failed  status=failed rows: every case of this grid can run
    orphan stop        seconds until every case process of the killed sweep is gone

Goal: 0 lost, 0 duplicated, 0 spuriously failed over at least 10 kills of each mode; a last
uninterrupted resume completes every planned case exactly once.

The children restore the default SIGINT handler: started from a non-interactive shell they
inherit SIGINT as ignored, and a SIGINT that nobody hears measures nothing.

Usage: python benchmarks/kill_points.py [--n 10] [--sweep-n 10] [--jobs 2] [--seed 0]
Writes benchmarks/results/kill_points.csv, kill_sweeps.csv and kill_points.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from _record import Record

from tokenwatt.results.folder import LOGS, STAGING, SWEEP_LOCK, unparseable_files
from tokenwatt.results.load import load_results
from tokenwatt.results.store import locked, read_rows, try_claim

HERE = Path(__file__).resolve().parent
REPEATS = 8
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
EXPECTED_RC = {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -signal.SIGKILL}
CONFIG = "\n".join([
    "model: preset:tiny-llama", "precision: fp32", "device: cpu",
    "workload: {batch_size: 1, prompt_tokens: 16, new_tokens: 16}",
    f"measure: {{meter: estimate, warmup: 1, repeats: {REPEATS}, min_seconds: 0.2, "
    "idle_seconds: 0.2}",
    "fidelity: {enabled: false}", "",
])  # fmt: skip
SWEEP_CASES = 6
SWEEP_REPEATS = 3
SWEEP_CONFIG = "\n".join([
    "name: kills", "model: preset:tiny-llama", "precision: fp32", "device: cpu",
    "workload: {batch_size: [" + ", ".join(str(b) for b in range(1, SWEEP_CASES + 1))
    + "], prompt_tokens: 16, new_tokens: 8}",
    f"measure: {{meter: estimate, warmup: 0, repeats: {SWEEP_REPEATS}, min_seconds: 0.1, "
    "idle_seconds: 0.1}",
    "fidelity: {enabled: false}", "",
])  # fmt: skip
# (signal the whole process group?, signal)
SWEEP_MODES = {
    "sweep alone SIGKILL": (False, "SIGKILL"),
    "group SIGINT": (True, "SIGINT"),
    "group SIGTERM": (True, "SIGTERM"),
    "group SIGKILL": (True, "SIGKILL"),
}
SWEEP_POINTS = ("start-up", "mid-case", "at a merge", "after a case")
# The child: tokenwatt's own CLI, SIGINT heard again, a witness line after each append.
CHILD = """\
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
if os.environ.get("KILL_WITNESS"):
    fd = os.open(os.environ["KILL_WITNESS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    def note(what, n):
        os.write(fd, f"{what} {n} {time.monotonic()}\\n".encode())
    note("phase", "python")
    import tokenwatt.runner.run as runner
    real, real_run = runner.append_rows, runner.run_config
    def witnessed(path, rows, first=None):
        real(path, rows, first)
        note(path.name, len(list(rows)))
    def run_config(cfg, on_trial=None, on_phase=None):
        def phase(event, text):
            note("phase", event)
            if on_phase:
                on_phase(event, text)
        return real_run(cfg, on_trial=on_trial, on_phase=phase)
    runner.append_rows, runner.run_config = witnessed, run_config
from tokenwatt.cli import main
sys.argv = ["tokenwatt", *sys.argv[1:]]
main()
"""


# --- runs ------------------------------------------------------------------------------------


def rows(path: Path) -> int:
    return len(pd.read_csv(path)) if path.exists() else 0


# The start-up events a run reports before its trials, in order ("python": the child is up).
START_UP = ("python", "meters", "warmup", "idle")


def events(path: Path) -> list[tuple[str, str, float]]:
    """The witness's lines: (what, count or phase, monotonic time), whole lines only."""
    if not path.exists():
        return []
    out = []
    for ln in path.read_text().splitlines():
        parts = ln.split()
        if len(parts) == 3:
            out.append((parts[0], parts[1], float(parts[2])))
    return out


def witnessed_phase(path: Path, name: str) -> bool:
    return any(f == "phase" and n == name for f, n, _ in events(path))


def witnessed(path: Path, name: str) -> int:
    return sum(int(n) for f, n, _ in events(path) if f == name)


def progress(ev: list[tuple[str, str, float]]) -> str:
    """Where a run is, by its last event: 'phase NAME', 'trial row K' or 'summary'."""
    rows, last = 0, "not started"
    for f, n, _ in ev:
        if f == "phase" and n != "warning":
            last = f"phase {n}"
        elif f == "results.csv":
            rows += int(n)
            last = f"trial row {rows}"
        elif f == "summary.csv":
            last = "summary"
    return last


def launch(work: Path, out: Path, tag: str) -> tuple[subprocess.Popen, Path]:
    witness = work / f"witness-{tag}"
    env = dict(os.environ, KILL_WITNESS=str(witness), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-c", CHILD, "run", str(work / "run.yaml"), "--out", str(out), "-q"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)  # fmt: skip
    return p, witness


def aim(point: tuple[int, str, float]) -> str:
    """The event a kill point is aimed after, in `progress`'s words."""
    after_rows, event, _ = point
    return f"phase {event}" if after_rows == 0 else f"trial row {after_rows}"


def wait_for_point(p: subprocess.Popen, witness: Path, point: tuple[int, str, float]) -> float:
    """Wait until the aimed event, then a FRACTION of the time to the next one, estimated from
    the run's own last step (the event before it); returns the delay waited after the event."""
    after_rows, event, fraction = point
    target = aim(point)

    def reached() -> list[tuple[str, str, float]] | None:
        ev = events(witness)
        seen = [progress(ev[: i + 1]) for i in range(len(ev))]
        return ev if target in seen else None

    while p.poll() is None and (ev := reached()) is None:
        time.sleep(0.005)
    if p.poll() is not None or ev is None:
        return 0.0
    seen = [progress(ev[: i + 1]) for i in range(len(ev))]
    i = seen.index(target)
    if after_rows == 0:
        step = 0.1  # start-up: just after the event, well before the next phase's work
    else:  # the run's own last trial: the time from the row before (or the trials phase)
        step = ev[i][2] - ev[i - 1][2] if i > 0 else 0.2
    delay = fraction * step
    fire = ev[i][2] + delay
    while p.poll() is None and time.monotonic() < fire:
        time.sleep(0.002)
    return delay


def kill_once(work: Path, sig: str, k: int, point: tuple[int, str, float]) -> dict:
    out = work / f"out-{sig}"
    before_t, before_s = rows(out / "results.csv"), rows(out / "summary.csv")
    t0 = time.monotonic()
    p, witness = launch(work, out, f"{sig}-{k}")
    delay = wait_for_point(p, witness, point)
    at = time.monotonic() - t0
    aimed_after = aim(point)
    landed = p.poll() is None
    if landed:
        p.send_signal(SIGNALS[sig])
    _, err = p.communicate(timeout=300)
    landed_after = progress(events(witness))
    w_t, w_s = witnessed(witness, "results.csv"), witnessed(witness, "summary.csv")
    after_t, after_s = rows(out / "results.csv"), rows(out / "summary.csv")
    lost = max(0, before_t + w_t - after_t) + max(0, before_s + w_s - after_s)
    in_flight = (after_t - before_t - w_t) + (after_s - before_s - w_s)
    bad = unparseable_files(out) if out.exists() else []
    if out.exists() and (out / "results.csv").exists():
        try:
            load_results(out)
        except Exception as e:  # noqa: BLE001 - counted, not raised
            bad.append(f"load_results: {e}")
    lines = err.strip().splitlines()
    # Interrupted: the signal landed and the run ended by it, not by finishing on its own.
    interrupted = landed and p.returncode != 0
    return {
        "signal": sig, "kill": k, "aimed_after": aimed_after, "delay_s": round(delay, 3),
        "kill_at_s": round(at, 2), "landed": landed, "landed_after": landed_after,
        "on_target": landed and landed_after == aimed_after, "interrupted": interrupted,
        "phase": "finished" if w_s else ("mid-run" if w_t else "before first trial"),
        "exit_code": p.returncode,
        "exit_code_ok": interrupted and p.returncode == EXPECTED_RC[sig],
        "resume_line": bool(lines) and "rerun" in lines[-1],
        "traceback": "Traceback" in err,
        "rows_before": before_t, "rows_witnessed": w_t, "rows_after": after_t,
        "rows_lost": lost, "in_flight_rows_kept": in_flight,
        "unparseable": ";".join(bad),
    }  # fmt: skip


def resume_after_kills(work: Path, sig: str) -> bool:
    """A normal run appended to a folder that saw N kills: does it finish and parse?"""
    out = work / f"out-{sig}"
    p, _ = launch(work, out, f"{sig}-resume")
    p.communicate(timeout=900)
    return p.returncode == 0 and not unparseable_files(out)


def run_kills(work: Path, n: int, jobs: int, rng: random.Random) -> tuple[pd.DataFrame, dict]:
    (work / "run.yaml").write_text(CONFIG)
    seeds = {sig: rng.randrange(2**32) for sig in SIGNALS}

    def one_signal(sig: str) -> tuple[list[dict], bool]:
        """One signal's kills in sequence, until n landed: its folder sees one run at a time."""
        r = random.Random(seeds[sig])
        recs: list[dict] = []
        while sum(x["interrupted"] for x in recs) < n and len(recs) < 3 * n:
            k = r.randint(0, REPEATS)
            pt = (k, r.choice(START_UP) if k == 0 else "", r.uniform(0, 0.8))
            recs.append(kill_once(work, sig, len(recs), pt))
            x = recs[-1]
            print(
                f"{sig}: kill {x['kill']} aimed after {x['aimed_after']}, landed after "
                f"{x['landed_after']}: exit {x['exit_code']}",
                flush=True,
            )
        return recs, resume_after_kills(work, sig)

    with ThreadPoolExecutor(min(jobs, len(SIGNALS))) as pool:
        done = dict(zip(SIGNALS, pool.map(one_signal, SIGNALS)))
    df = pd.DataFrame([r for recs, _ in done.values() for r in recs])
    return df, {"resumed": {s: ok for s, (_, ok) in done.items()}}


def run_table(df: pd.DataFrame, resumed: dict[str, bool]) -> str:
    head = ("| signal | kills interrupting a run | before first trial | mid-run "
            "| while the summary is written | rows lost beyond the trial in flight "
            "| unparseable files | exit code as expected | resume line | traceback "
            "| finished untouched (not counted) | landed after the event aimed at "
            "| resumed run afterwards |")  # fmt: skip
    out = [head, "|" + "---|" * 13]
    for sig in SIGNALS:
        d = df[(df["signal"] == sig) & df["interrupted"]]
        ph = d["phase"].value_counts()
        resume = "n/a" if sig == "SIGKILL" else f"{int(d['resume_line'].sum())}/{len(d)}"
        untouched = int((df["signal"] == sig).sum() - len(d))
        out.append(
            f"| {sig} | {len(d)} | {ph.get('before first trial', 0)} | {ph.get('mid-run', 0)} "
            f"| {ph.get('finished', 0)} | {int(d['rows_lost'].sum())} "
            f"| {int((d['unparseable'] != '').sum())} | {int(d['exit_code_ok'].sum())}/{len(d)} "
            f"| {resume} | {int(d['traceback'].sum())} | {untouched} "
            f"| {int(d['on_target'].sum())}/{len(d)} "
            f"| {'ok' if resumed.get(sig) else 'FAILED'} |"
        )
    return "\n".join(out)


# --- sweeps ----------------------------------------------------------------------------------


def launch_sweep(work: Path, out: Path, witness: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", CHILD, "sweep", str(work / "sweep.yaml"), "--out", str(out),
           "-q"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", KILL_WITNESS=str(witness))
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip


def folder_state(out: Path) -> dict:
    """What tokenwatt sees: read under the folder lock (which rolls back a cut merge)."""
    if not out.is_dir():
        return {"summary": [], "trials": [], "runs": [], "failures": 0}
    with locked(out):
        summary = [(r["case_id"], r["run_id"]) for r in read_rows(out / "summary.csv")[0]]
        trials = [(r["run_id"], r["trial"], r["status"]) for r in read_rows(out / "results.csv")[0]]
        meta = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    return {"summary": summary, "trials": trials,
            "runs": [r["run_id"] for r in meta.get("runs", [])],
            "failures": len(meta.get("failures", []))}  # fmt: skip


def consistency(before: dict, after: dict) -> dict:
    complete = {run for _, run in after["summary"]}
    was = {run for _, run in before["summary"]}
    ok_rows = [t for t in after["trials"] if t[2] == "ok"]
    lost_runs = len(was - complete)
    lost_rows = sum(1 for t in before["trials"] if t[0] in was and t not in set(after["trials"]))
    cases = [c for c, _ in after["summary"]]
    dup_cases = len(cases) - len(set(cases))
    dup_rows = len(ok_rows) - len(set(ok_rows))
    orphan_rows = sum(1 for t in ok_rows if t[0] not in complete)
    records = sorted(after["runs"]) != sorted(complete) or len(after["runs"]) != len(complete)
    failed = sum(1 for t in after["trials"] if t[2] == "failed") + after["failures"]
    return {
        "lost": lost_runs + lost_rows,
        "duplicated": dup_cases + dup_rows + orphan_rows + int(records),
        "spuriously_failed": failed,
        "complete_cases": len(set(cases)),
    }


def case_pids(out: Path) -> list[int]:
    """Processes holding a case claim now."""
    pids = []
    for lock in (out / ".cases").glob("*.lock"):
        try:
            pid = json.loads(lock.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            continue
        claim = try_claim(lock, "kill_points probe")
        if claim is None:
            pids.append(int(pid))
        else:
            claim.release()
    return pids


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def holds_lock(out: Path, pid: int) -> bool:
    try:
        return json.loads((out / SWEEP_LOCK).read_text())["pid"] == pid
    except (OSError, ValueError, KeyError):
        return False


def sweep_progress(out: Path, launched: float, before: int) -> str:
    """Where a sweep is now, from what it has put on disk since `launched` (wall time)."""
    staged = lambda name: any((out / STAGING).glob(f"*/{name}"))  # noqa: E731
    if staged("summary.csv"):
        return "at a merge"
    if staged("results.csv"):
        return "mid-case"
    if len(read_rows(out / "summary.csv")[0]) > before:
        return "after a case"
    if any(f.stat().st_mtime >= launched for f in (out / LOGS).glob("*.log")):
        return "case starting"
    return "start-up"


def reach(
    p: subprocess.Popen, out: Path, point: str, r: random.Random, before: int, witness: Path
) -> bool:
    """Wait for the kill point, from the sweep's own progress; False when it ended first."""

    def until(pred) -> bool:
        while p.poll() is None and not pred():
            time.sleep(0.01)
        return p.poll() is None

    staged = lambda name: any((out / ".staging").glob(f"*/{name}"))  # noqa: E731
    if point == "start-up":  # just after the interpreter is up, or the sweep holds its folder
        if r.random() < 0.5:
            if not until(lambda: witnessed_phase(witness, "python")):
                return False
        elif not until(lambda: holds_lock(out, p.pid)):
            return False
        delay = r.uniform(0, 0.05)
    elif point == "mid-case":
        if not until(lambda: staged("results.csv")):
            return False
        delay = r.uniform(0, 1.0)
    elif point == "at a merge":
        if not until(lambda: staged("summary.csv")):
            return False
        delay = r.uniform(0, 0.15)
    else:  # after a case: a new summary row is on disk
        if not until(lambda: len(read_rows(out / "summary.csv")[0]) > before):
            return False
        delay = r.uniform(0, 1.0)
    fire = time.monotonic() + delay
    return until(lambda: time.monotonic() >= fire)


def sweep_kill(work: Path, out: Path, mode: str, k: int, point: str, r: random.Random) -> dict:
    group, sig = SWEEP_MODES[mode]
    before = folder_state(out)
    t0, launched = time.monotonic(), time.time()
    witness = work / f"witness-{out.name}-{k}"
    p = launch_sweep(work, out, witness)
    landed = reach(p, out, point, r, len(before["summary"]), witness)
    pids = case_pids(out) if landed else []
    where = sweep_progress(out, launched, len(before["summary"])) if landed else "finished"
    if landed:
        os.killpg(p.pid, SIGNALS[sig]) if group else os.kill(p.pid, SIGNALS[sig])
    at = time.monotonic() - t0
    _, err = p.communicate(timeout=900)
    t_kill = time.monotonic()
    while any(running(pid) for pid in pids) and time.monotonic() - t_kill < 300:
        time.sleep(0.02)
    orphan_s = time.monotonic() - t_kill if pids else 0.0
    after = folder_state(out)
    interrupted = landed and p.returncode != 0
    lines = err.strip().splitlines()
    return {
        "mode": mode, "kill": k, "point": point, "folder": out.name, "kill_at_s": round(at, 2),
        "landed": landed, "landed_at": where, "on_target": landed and where == point,
        "interrupted": interrupted, "exit_code": p.returncode,
        "exit_code_ok": interrupted and p.returncode == EXPECTED_RC[sig],
        "one_line": sig == "SIGKILL" or (len(lines) == 1 and "rerun" in lines[0]),
        "traceback": "Traceback" in err, "case_processes": len(pids),
        "orphan_stop_s": round(orphan_s, 2), **consistency(before, after),
        "unparseable": ";".join(unparseable_files(out)) if out.exists() else "",
    }  # fmt: skip


def final_resume(work: Path, out: Path) -> dict:
    """An uninterrupted resume: every planned case complete, exactly once, none failed."""
    before = folder_state(out)
    p = launch_sweep(work, out, work / f"witness-{out.name}-resume")
    stdout, err = p.communicate(timeout=1800)
    after = folder_state(out)
    c = consistency(before, after)
    ok = (
        p.returncode == 0
        and c["complete_cases"] == SWEEP_CASES
        and not any(c[k] for k in ("lost", "duplicated", "spuriously_failed"))
    )
    return {"folder": out.name, "exit_code": p.returncode, "ok": ok, **c,
            "last_line": (stdout.strip().splitlines() or [""])[-1]}  # fmt: skip


def sweep_kills(work: Path, n: int, jobs: int, rng: random.Random) -> tuple[pd.DataFrame, list]:
    (work / "sweep.yaml").write_text(SWEEP_CONFIG)
    seeds = {mode: rng.randrange(2**32) for mode in SWEEP_MODES}

    def one_mode(mode: str) -> tuple[list[dict], list[dict]]:
        r = random.Random(seeds[mode])
        slug = mode.replace(" ", "-")
        generation, recs, finals = 0, [], []
        while sum(x["interrupted"] for x in recs) < n and len(recs) < 3 * n:
            out = work / f"sweep-{slug}-{generation}"
            rec = sweep_kill(work, out, mode, len(recs), r.choice(SWEEP_POINTS), r)
            recs.append(rec)
            print(f"{mode}: kill {rec['kill']} {rec['point']}: exit {rec['exit_code']}, "
                  f"lost {rec['lost']}, duplicated {rec['duplicated']}, "
                  f"failed {rec['spuriously_failed']}", flush=True)  # fmt: skip
            if rec["complete_cases"] == SWEEP_CASES:  # nothing left to interrupt here
                finals.append(final_resume(work, out))
                generation += 1
        out = work / f"sweep-{slug}-{generation}"
        if out.exists():
            finals.append(final_resume(work, out))
        return recs, [{"mode": mode, **f} for f in finals]

    with ThreadPoolExecutor(min(jobs, len(SWEEP_MODES))) as pool:
        done = list(pool.map(one_mode, SWEEP_MODES))
    return pd.DataFrame([r for recs, _ in done for r in recs]), [f for _, fs in done for f in fs]


def sweep_table(df: pd.DataFrame, finals: list[dict]) -> str:
    head = ("| kill | kills interrupting a sweep | start-up | mid-case | at a merge | after a case "
            "| cases lost | cases duplicated | spuriously failed | unparseable | exit code "
            "as expected | one line | traceback | slowest orphan stop s "
            "| finished untouched (not counted) | landed where aimed "
            "| last resume: every case once |")  # fmt: skip
    out = [head, "|" + "---|" * 17]
    for mode in SWEEP_MODES:
        d = df[(df["mode"] == mode) & df["interrupted"]]
        pts = d["point"].value_counts()
        f = [x for x in finals if x["mode"] == mode]
        untouched = int((df["mode"] == mode).sum() - len(d))
        out.append(
            f"| {mode} | {len(d)} | "
            + " | ".join(str(pts.get(p, 0)) for p in SWEEP_POINTS)
            + f" | {int(d['lost'].sum())} | {int(d['duplicated'].sum())} "
            f"| {int(d['spuriously_failed'].sum())} | {int((d['unparseable'] != '').sum())} "
            f"| {int(d['exit_code_ok'].sum())}/{len(d)} | {int(d['one_line'].sum())}/{len(d)} "
            f"| {int(d['traceback'].sum())} | {d['orphan_stop_s'].max():.2f} | {untouched} "
            f"| {int(d['on_target'].sum())}/{len(d)} "
            f"| {sum(x['ok'] for x in f)}/{len(f)} folders |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="kills per signal that interrupt a run")
    ap.add_argument("--sweep-n", type=int, default=10, help="kills per mode that interrupt a sweep")
    ap.add_argument("--jobs", type=int, default=2, help="signals or modes at once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-runs", action="store_true", help="sweep kills only")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    rec = Record()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-points-"))
    res = Path(args.out)
    res.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    md = ["# Kill points: `tokenwatt run` and `tokenwatt sweep` interrupted at random points", "",
          f"Command: `python benchmarks/kill_points.py --n {args.n} --sweep-n {args.sweep_n} "
          f"--jobs {args.jobs} --seed {args.seed}`{' --skip-runs' if args.skip_runs else ''}; "
          f"{os.cpu_count()} CPUs shared with other work.", ""]  # fmt: skip
    if not args.skip_runs:
        runs, info = run_kills(work, args.n, args.jobs, rng)
        runs.to_csv(res / "kill_points.csv", index=False, quoting=csv.QUOTE_MINIMAL)
        md += [
            "## Runs",
            "",
            f"tiny-llama preset, fp32 on CPU, {REPEATS} trials of >= 0.2 s, estimate meter. "
            f"Kill point, from the run's own events: K uniform in 0..{REPEATS}; K = 0 kills in "
            f"start-up, 0-80 ms after an event drawn from {', '.join(START_UP)} (the "
            "interpreter up, then the phases the run reports before its trials); else after "
            "the K-th trial row is on disk, a uniform 0-0.8 of the time the run's own last "
            "trial took. Where each kill landed is the run's last event before it died "
            "(`aimed_after`, `landed_after` and `on_target` in kill_points.csv). "
            "Each signal's runs append to one folder; a last, uninterrupted run appends to "
            "each folder afterwards ('resumed run'). Exit code as expected: 130 (SIGINT), 143 "
            "(SIGTERM), -9 (SIGKILL). A run that finished before its kill landed is not "
            "counted (another kill point is drawn).",
            "",
            run_table(runs, info["resumed"]),
            "",
            f"Rows on disk the witness had not confirmed (the row in flight, kept): "
            f"{int(runs['in_flight_rows_kept'].sum())}.",
            "",
        ]
    sweeps, finals = sweep_kills(work, args.sweep_n, args.jobs, rng)
    sweeps.to_csv(res / "kill_sweeps.csv", index=False, quoting=csv.QUOTE_MINIMAL)
    md += [
        "## Sweeps",
        "",
        f"A grid of {SWEEP_CASES} cases (tiny-llama fp32 on CPU, batch 1..{SWEEP_CASES}, "
        f"{SWEEP_REPEATS} trials each, estimate meter), each case in its own process. Each "
        "kill mode kills sweeps in one folder in turn, each sweep started at once after the "
        "previous kill (so it races the orphan a 'sweep alone' kill leaves); a folder whose "
        "cases are all complete gets a last uninterrupted resume and the next kills go to a "
        "new folder. Kill points, from the sweep's own progress: start-up (0-50 ms after the "
        "interpreter is up or after the sweep took its folder's lock), mid-case (0-1 s after a "
        "case's first staged trial), at a merge (0-0.15 s after a case staged its summary), "
        "after a case (0-1 s after a new summary row). Exit code as expected: 130 (group "
        "SIGINT), 143 (group SIGTERM), -9 (SIGKILL).",
        "",
        sweep_table(sweeps, finals),
        "",
        f"Total time {time.monotonic() - t0:.0f} s.",
        "",
    ]
    (res / "kill_points.md").write_text("\n".join(md))
    files = ["kill_sweeps.csv", "kill_points.md"] + ([] if args.skip_runs else ["kill_points.csv"])
    rec.write(res, "kill_points", files)
    print("\n".join(md))


if __name__ == "__main__":
    main()
