"""Kill `tokenwatt run` at random points and count what was lost.

For each signal (SIGINT, SIGTERM, SIGKILL) N runs are started into one results folder per
signal (so later runs also append after earlier crashes, as a resumed run would). Each is
killed at a random point of its own progress, so the kill points spread over the run however
loaded the machine is: a random K in 0..REPEATS is drawn; K = 0 kills during start-up (a random
time before the calibration run's first row), otherwise the kill comes a random 0-0.4 s after
the K-th trial row (K = REPEATS: while the summary is written). A witness records each append
only after `append_rows` has returned (fsynced), so:

    rows lost        = rows witnessed as written but missing from disk (goal: 0)
    in flight        = rows on disk the witness had not yet confirmed (0 or 1 allowed)
    unparseable      = result files that fail a strict parse (goal: 0)

Usage: python benchmarks/kill_points.py [--n 8] [--jobs 3]
Writes benchmarks/results/kill_points.csv (one row per kill) and kill_points.md (the table).
"""

from __future__ import annotations

import argparse
import csv
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

from tokenwatt.results.folder import unparseable_files
from tokenwatt.results.load import load_results

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
# The child: tokenwatt's own CLI, with a witness line written after each completed append.
CHILD = """\
import os, sys
import tokenwatt.runner.run as runner
real = runner.append_rows
fd = os.open(os.environ["KILL_WITNESS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
def witnessed(path, rows, first=None):
    real(path, rows, first)
    os.write(fd, f"{path.name} {len(list(rows))}\\n".encode())
runner.append_rows = witnessed
from tokenwatt.cli import main
sys.argv = ["tokenwatt", *sys.argv[1:]]
main()
"""


def rows(path: Path) -> int:
    return len(pd.read_csv(path)) if path.exists() else 0


def witnessed(path: Path, name: str) -> int:
    if not path.exists():
        return 0
    return sum(int(n) for f, n in (ln.split() for ln in path.read_text().splitlines()) if f == name)


def launch(work: Path, out: Path, tag: str) -> tuple[subprocess.Popen, Path]:
    witness = work / f"witness-{tag}"
    env = dict(os.environ, KILL_WITNESS=str(witness), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-c", CHILD, "run", str(work / "run.yaml"), "--out", str(out), "-q"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)  # fmt: skip
    return p, witness


def calibrate(work: Path) -> tuple[float, float]:
    """Seconds to the first trial row and to the end, uninterrupted."""
    out = work / "calibration"
    t0 = time.monotonic()
    p, _ = launch(work, out, "calibration")
    first = None
    while p.poll() is None:
        if first is None and rows(out / "results.csv") > 0:
            first = time.monotonic() - t0
        time.sleep(0.05)
    assert p.returncode == 0, p.stderr.read() if p.stderr else ""
    return first or 0.0, time.monotonic() - t0


def kill_once(work: Path, sig: str, k: int, point: tuple[int, float]) -> dict:
    after_rows, delay = point
    out = work / f"out-{sig}"
    before_t, before_s = rows(out / "results.csv"), rows(out / "summary.csv")
    t0 = time.monotonic()
    p, witness = launch(work, out, f"{sig}-{k}")
    while p.poll() is None and witnessed(witness, "results.csv") < after_rows:
        time.sleep(0.01)
    fire = time.monotonic() + delay
    while p.poll() is None and time.monotonic() < fire:
        time.sleep(0.005)
    at = time.monotonic() - t0
    landed = p.poll() is None
    if landed:
        p.send_signal(SIGNALS[sig])
    _, err = p.communicate(timeout=120)
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
    return {
        "signal": sig, "kill": k, "after_rows": after_rows, "delay_s": round(delay, 3),
        "kill_at_s": round(at, 2), "landed": landed,
        "phase": "finished" if w_s else ("mid-run" if w_t else "before first trial"),
        "exit_code": p.returncode,
        # A signal after the summary is written may find the run already done: 0 is right then.
        "exit_code_ok": p.returncode == EXPECTED_RC[sig] or (w_s > 0 and p.returncode == 0),
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
    p.communicate(timeout=600)
    return p.returncode == 0 and not unparseable_files(out)


def table(df: pd.DataFrame, resumed: dict[str, bool]) -> str:
    head = ("| signal | kill points | before first trial | mid-run | after summary written "
            "| rows lost beyond the trial in flight | unparseable files | exit code as expected "
            "| resume line when interrupted | traceback | resumed run afterwards |")  # fmt: skip
    out = [head, "|" + "---|" * 11]
    for sig in SIGNALS:
        d = df[(df["signal"] == sig) & df["landed"]]
        ph = d["phase"].value_counts()
        cut = d[d["exit_code"] == EXPECTED_RC[sig]]
        resume = "n/a" if sig == "SIGKILL" else f"{int(cut['resume_line'].sum())}/{len(cut)}"
        out.append(
            f"| {sig} | {len(d)} | {ph.get('before first trial', 0)} | {ph.get('mid-run', 0)} "
            f"| {ph.get('finished', 0)} | {int(d['rows_lost'].sum())} "
            f"| {int((d['unparseable'] != '').sum())} | {int(d['exit_code_ok'].sum())}/{len(d)} "
            f"| {resume} | {int(d['traceback'].sum())} "
            f"| {'ok' if resumed.get(sig) else ('not run' if sig not in resumed else 'FAILED')} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="kill points per signal")
    ap.add_argument("--jobs", type=int, default=3, help="runs at once")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-points-"))
    (work / "run.yaml").write_text(CONFIG)
    first, total = calibrate(work)
    print(f"calibration: first trial row at {first:.1f} s, run ends at {total:.1f} s", flush=True)

    def point() -> tuple[int, float]:
        k = rng.randint(0, REPEATS)
        return (0, rng.uniform(0, first)) if k == 0 else (k, rng.uniform(0, 0.4))

    plan = {sig: [point() for _ in range(args.n)] for sig in SIGNALS}

    def one_signal(sig: str) -> tuple[list[dict], bool]:
        """One signal's kills in sequence: its folder sees one run at a time."""
        recs = [kill_once(work, sig, k, pt) for k, pt in enumerate(plan[sig])]
        return recs, resume_after_kills(work, sig)

    t0 = time.monotonic()
    with ThreadPoolExecutor(min(args.jobs, len(SIGNALS))) as pool:
        done = dict(zip(SIGNALS, pool.map(one_signal, SIGNALS)))
    df = pd.DataFrame([r for recs, _ in done.values() for r in recs])
    resumed = {sig: ok for sig, (_, ok) in done.items()}
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    df.to_csv(res / "kill_points.csv", index=False, quoting=csv.QUOTE_MINIMAL)
    md = [
        "# Kill points: `tokenwatt run` interrupted at random times",
        "",
        f"Command: `python benchmarks/kill_points.py --n {args.n} --jobs {args.jobs} "
        f"--seed {args.seed}` ({time.monotonic() - t0:.0f} s, {os.cpu_count()} CPUs shared "
        "with other work).",
        f"Run: tiny-llama preset, fp32 on CPU, {REPEATS} trials of >= 0.2 s, estimate meter; "
        f"calibration run alone: first trial row at {first:.1f} s, end at {total:.1f} s. "
        f"Kill point: K uniform in 0..{REPEATS}; K = 0 kills at a uniform time in "
        f"[0, {first:.1f}] s (start-up, warm-up, idle baseline), else a uniform 0-0.4 s after "
        "the K-th trial row is on disk. Each signal's runs append to one folder, so every run "
        "after the first also appends after earlier kills; a last, uninterrupted run appends "
        "to each folder afterwards ('resumed run').",
        "",
        "Exit code as expected: 130 (SIGINT), 143 (SIGTERM), -9 (SIGKILL), or 0 when the "
        "signal came after the summary was written and the run had already finished. "
        "Rows lost: rows a witness saw `append_rows` finish (written and fsynced) that are "
        "missing afterwards. Unparseable: results.csv/summary.csv with a row whose field count "
        "differs from the header, run.json that does not load, or `load_results` failing.",
        "",
        table(df, resumed),
        "",
        f"Runs that ended before their kill time (not counted): {int((~df['landed']).sum())}.",
        f"Rows on disk that the witness had not confirmed (the row in flight, kept): "
        f"{int(df['in_flight_rows_kept'].sum())}.",
        "",
    ]
    (res / "kill_points.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
