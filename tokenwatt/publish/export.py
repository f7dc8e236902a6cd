"""`tokenwatt export`: results folders from one or many machines merged into one dataset folder
that pandas, the `datasets` library and `tokenwatt.load_results` load as they are.

    DATASET/runs.parquet        a row per case per run (per window for a served run)
    DATASET/trials.parquet      a row per trial (failed and degraded rows included)
    DATASET/timelines/<machine_id>/<run_id>.parquet   each run's power trace, every trial
    DATASET/README.md           the dataset card (card.py): configs, schema, provenance, method

Rows are keyed by (machine_id, run_id, trial, window): the same row from two sources is kept
once, and two different rows under one key are an error naming both sources. An exported
dataset is itself an input, so datasets merge the same way. The folder is written beside its
final place and renamed into it, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenwatt.errors import UserError
from tokenwatt.results.columns import RUN_JSON
from tokenwatt.results.load import DATASET_RUNS as RUNS  # the loader reads what we write
from tokenwatt.results.load import DATASET_TIMELINES as TIMELINES
from tokenwatt.results.load import DATASET_TRIALS as TRIALS

CARD = "README.md"
TRIAL_KEY = ("machine_id", "run_id", "trial", "window")
RUN_KEY = ("machine_id", "run_id", "window")
SOURCE = "results_dir"  # which folder a row came from (load_results adds it)


@dataclass
class Exported:
    out: Path
    runs: int
    trials: int
    timelines: int
    machines: int
    duplicates_dropped: int


def export(folders: list[str | Path], out: str | Path, license_id: str = "cc-by-4.0",
           name: str | None = None) -> Exported:  # fmt: skip
    """Merge `folders` (results folders or exported datasets) into a new dataset at `out`."""
    from tokenwatt._util.extras import require
    from tokenwatt.results.load import load_results

    require("publish", "tokenwatt export")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out: {str(out)!r} exists and is not empty; give a new folder (to "
                        "add to a dataset, pass it as an input: tokenwatt export OLD NEW "
                        "--out MERGED)")  # fmt: skip
    trials, dropped = _dedupe(load_results(*folders), TRIAL_KEY)
    runs, dropped_runs = _dedupe(_summaries(folders), RUN_KEY)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent if
                                  out.parent.exists() else None))  # fmt: skip
    try:
        trials.drop(columns=[SOURCE]).to_parquet(stage / TRIALS, index=False)
        runs.drop(columns=[SOURCE]).to_parquet(stage / RUNS, index=False)
        n_timelines = _timelines(folders, runs, stage / TIMELINES)
        from tokenwatt.publish.card import card

        (stage / CARD).write_text(card(runs, trials, license_id, name or out.name),
                                  encoding="utf-8")  # fmt: skip
        if out.exists():
            out.rmdir()
        shutil.move(str(stage), str(out))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    machines = trials["machine_id"].nunique() if "machine_id" in trials else 0
    return Exported(out, len(runs), len(trials), n_timelines, machines, dropped + dropped_runs)


def is_dataset(path: str | Path) -> bool:
    """An exported dataset (its trials.parquet), as opposed to a results folder."""
    return (Path(path) / TRIALS).is_file()


def _summaries(folders: list[str | Path]) -> Any:
    import pandas as pd

    from tokenwatt.results.load import load_results

    have = [f for f in folders if is_dataset(f) or (Path(f) / "summary.csv").is_file()]
    return load_results(*have, summary=True) if have else pd.DataFrame(columns=[SOURCE])


def _dedupe(df: Any, key: tuple[str, ...]) -> tuple[Any, int]:
    """One row per key; the same row twice is kept once, two different rows are an error."""
    for col in key:
        if col not in df:
            df[col] = None
    keys = df[list(key)].astype("string").fillna("")
    dup = keys.duplicated(keep=False)
    if not dup.any():
        return df.reset_index(drop=True), 0
    content = df.drop(columns=[SOURCE]).astype("string").fillna("")
    for _, group in df[dup].groupby([keys[c] for c in key], sort=False):
        if len(content.loc[group.index].drop_duplicates()) > 1:
            a, b = group[SOURCE].iloc[0], group[SOURCE].iloc[-1]
            what = ", ".join(f"{c}={keys.loc[group.index[0], c]}" for c in key if
                             keys.loc[group.index[0], c])  # fmt: skip
            raise UserError(f"export: {what} is in {a!r} and {b!r} with different values; "
                            "keep one of them (or fix the one that was edited)")  # fmt: skip
    kept = df[~keys.duplicated(keep="first")]
    return kept.reset_index(drop=True), len(df) - len(kept)


def _timelines(folders: list[str | Path], runs: Any, into: Path) -> int:
    """Each run's power trace (run.json's per-trial trace, or a dataset's own files)."""
    import pandas as pd

    written = 0
    for folder in map(Path, folders):
        if is_dataset(folder):
            for f in (folder / TIMELINES).glob("*/*.parquet"):
                target = into / f.parent.name / f.name
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, target)
                    written += 1
            continue
        mine = runs[runs[SOURCE] == str(folder)]  # this folder's runs: their machine
        machines = dict(zip(mine["run_id"].astype(str), mine["machine_id"].fillna("")))
        for run in _runs(folder):
            rows = [{"run_id": run["run_id"], "trial": t.get("trial"), **point}
                    for t in run.get("trials", []) for point in t.get("trace", [])]  # fmt: skip
            machine = machines.get(str(run["run_id"])) or "unknown-machine"
            target = into / machine / f"{run['run_id']}.parquet"
            if rows and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(rows).to_parquet(target, index=False)
                written += 1
    return written


def _runs(folder: Path) -> list[dict[str, Any]]:
    path = folder / RUN_JSON
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("runs", [])
    except (OSError, ValueError) as e:
        raise UserError(f"export: {str(path)!r} is not JSON tokenwatt wrote ({e})") from None
