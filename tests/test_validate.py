"""`tokenwatt validate`: a folder checked against itself. What tokenwatt writes passes (the
published folders, a fresh run, a served run, a run on two simulated boards); a hand-edited
figure, a duplicated row, a run missing from run.json fail with a line naming the file, the
line and the column; estimates fail --publishable; a missing folder is bad input."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from tokenwatt.sim import nvml as sim

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai import FakeOpenAI  # noqa: E402

PUBLISHED = sorted(p for p in (Path(__file__).parents[1] / "results").glob("*/")
                   if (p / "results.csv").is_file())  # fmt: skip


def _edit(path: Path, line: int, column: str, scale: float) -> None:
    rows = list(csv.reader(path.open(newline="", encoding="utf-8")))
    i = rows[0].index(column)
    rows[line - 1][i] = repr(float(rows[line - 1][i]) * scale)
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def test_every_published_folder_is_consistent(invoke):
    assert len(PUBLISHED) >= 3
    r = invoke("validate", *map(str, PUBLISHED))
    assert r.exit_code == 0, r.output
    assert r.output.count("ok: ") == len(PUBLISHED)


def test_a_hand_edited_figure_is_named_by_line_and_column(tmp_path, invoke):
    folder = tmp_path / "f"
    shutil.copytree(PUBLISHED[0], folder)
    _edit(folder / "results.csv", 4, "decode_j_per_token", 1.003)
    r = invoke("validate", str(folder))
    assert r.exit_code == 1
    first = r.output.splitlines()[0]
    assert first.startswith(f"{folder}/results.csv line 4 (run ") and ", trial " in first
    assert " decode_j_per_token: " in first and "but its inputs give" in first
    assert "problem(s) in 1 folder(s)" in r.output


def test_duplicated_rows_and_a_run_missing_from_run_json_are_found(tmp_path, invoke):
    folder = tmp_path / "f"
    shutil.copytree(PUBLISHED[0], folder)
    lines = (folder / "results.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "results.csv").write_text("".join(lines + [lines[1]]), encoding="utf-8")
    data = json.loads((folder / "run.json").read_text())
    gone = data["runs"].pop(0)["run_id"]
    (folder / "run.json").write_text(json.dumps(data))
    out = invoke("validate", str(folder)).output
    assert f"results.csv line {len(lines) + 1} " in out and "the same row as line 2" in out
    assert f"(run {gone}): run_id: this run has no record in run.json" in out


def test_estimates_are_not_publishable(invoke):
    r = invoke("validate", "--publishable", str(PUBLISHED[0]))
    assert r.exit_code == 1 and "measured: an estimate, not a measurement" in r.output


def test_a_missing_folder_is_bad_input(tmp_path, invoke):
    r = invoke("validate", str(tmp_path / "nope"))
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "no results.csv" in r.output


def test_what_a_run_writes_is_consistent_and_publishable_says_why(tmp_path, invoke, fast_args):
    out = tmp_path / "o"
    assert invoke("run", *fast_args, "--device", "cpu", "--meter", "estimate", "--out",
                  str(out), "-q").exit_code == 0  # fmt: skip
    r = invoke("validate", str(out))
    assert r.exit_code == 0, r.output
    summary = next(csv.DictReader((out / "summary.csv").open()))
    assert summary["publishable"] == "False"
    assert "not measured" in summary["publishable_reason"]
    assert "fewer than 3 trials" in summary["publishable_reason"]


def test_two_simulated_boards_and_a_served_run_are_consistent(tmp_path, invoke, monkeypatch):
    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sim.configure(2, [61.0, 74.0])
    boards = tmp_path / "boards"
    assert invoke("run", "--device", "cpu", "--model-gpus", "2", "--meter", "nvml",
                  "--prompt-tokens", "8", "--new-tokens", "6", "--repeats", "2", "--warmup", "0",
                  "--min-seconds", "0.2", "--idle-seconds", "0.2", "--no-fidelity", "--out",
                  str(boards), "-q").exit_code == 0  # fmt: skip
    served = tmp_path / "served"
    with FakeOpenAI(delay_s=0.002) as fake:
        assert invoke("run", "--engine", "openai", "--url", fake.url, "--gpus", "0",
                      "--batch-size", "2", "--requests", "6", "--new-tokens", "8",
                      "--prompt-tokens", "8", "--repeats", "2", "--warmup", "0",
                      "--min-seconds", "0", "--idle-seconds", "0.2", "--out", str(served),
                      "-q").exit_code == 0  # fmt: skip
    r = invoke("validate", str(boards), str(served))
    assert r.exit_code == 0, r.output
    # the sum over boards is checked: one board's joules edited breaks the row's total
    _edit(boards / "results.csv", 2, "board1_total_j", 1.01)
    r = invoke("validate", str(boards))
    assert r.exit_code == 1 and "line 2 " in r.output and " total_j: " in r.output


@pytest.mark.parametrize("scale", [1.0 + 1e-9])
def test_rounding_in_the_last_digits_is_not_a_problem(tmp_path, invoke, scale):
    folder = tmp_path / "f"
    shutil.copytree(PUBLISHED[0], folder)
    _edit(folder / "results.csv", 3, "decode_j_per_token", scale)
    assert invoke("validate", str(folder)).exit_code == 0


def test_the_schema_is_checked_column_by_column_and_cell_by_cell(tmp_path, invoke):
    folder = tmp_path / "f"
    shutil.copytree(PUBLISHED[0], folder)
    path = folder / "results.csv"
    rows = list(csv.reader(path.open(newline="", encoding="utf-8")))
    rows[0].append("my_note")  # a column nobody declared
    for r in rows[1:]:
        r.append("x")
    rows[2][rows[0].index("decode_s")] = "fast"  # not a float
    rows[3][rows[0].index("model")] = ""  # never empty
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    out = invoke("validate", str(folder)).output
    assert f"{folder}/results.csv: my_note: not a column of the results schema" in out
    assert f"{folder}/results.csv line 3: decode_s: 'fast' is not float" in out
    assert "line 4 (run " in out and " model: empty, but the schema says it is always there" in out
