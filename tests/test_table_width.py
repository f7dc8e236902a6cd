"""Tables a reader can trust at any width: at 60, 80 and 200 columns every number of the data
is in the output whole (rich would cut 3.352e-06 to `3.352…`), or its column is named as left
out; a pipe gets the whole table whatever COLUMNS says; `--tsv` is data pandas reads."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

import tokenwatt.cli.console as console_module
from tokenwatt.cli.console import METRICS, SERVED_METRICS, print_outcome
from tokenwatt.report.format import fmt, interval, pct

ROOT = Path(__file__).resolve().parents[1]
PRECISION_BATCH = ROOT / "results" / "cpu-estimate-precision-batch"
WIDTHS = [60, 80, 200]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")
LEFT_OUT = re.compile(r"columns left out at (\d+) columns: (.*?); widen the terminal")


def numbers(texts) -> Counter:
    return Counter(n for t in texts for n in NUMBER.findall(str(t)))


def missing(expected: Counter, output: str) -> Counter:
    """The numbers of `expected` not in `output` as whole numbers (a cut one reads as another)."""
    return expected - numbers([output])


def left_out(output: str) -> list[str]:
    """The headers the output says it left out (the note may wrap between words)."""
    found = LEFT_OUT.search(" ".join(output.split()))
    return found.group(2).split(", ") if found else []


@pytest.fixture
def terminal(monkeypatch):
    """stdout as a terminal of a given width; returns what was printed."""

    def _at(width: int) -> io.StringIO:
        buf = io.StringIO()
        fake = Console(file=buf, width=width, force_terminal=True, color_system=None)
        monkeypatch.setattr(console_module, "console", fake)
        return buf

    return _at


def check_table(output: str, width: int, headers: list[str], rows: list[list[str]]) -> None:
    """Every number of `rows` whole in `output`, but those of the columns named as left out;
    no line wider than the terminal; nothing cut with an ellipsis."""
    gone = left_out(output)
    assert set(gone) <= set(headers), gone
    shown = [i for i, h in enumerate(headers) if h not in gone]
    expected = numbers(r[i] for r in rows for i in shown)
    assert not missing(expected, output), (missing(expected, output), output)
    assert "…" not in output
    lines = [ln for ln in output.splitlines() if not ln.startswith("results: ")]  # a path: whole
    assert max(len(line) for line in lines) <= width, output


# --- compare ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_trials(tmp_path_factory):
    """A folder whose intervals rest on 2 trials: the table shows `1.97 (n=2)†`."""
    from synth_results import write_folder

    out = tmp_path_factory.mktemp("width") / "r"
    cases = [{"case_id": p, "precision": p, "batch_size": 1, "prompt_tokens": 8,
              "new_tokens": 6, "decode_j_per_token": j, "top1": f, "kl": k}
             for p, j, f, k in (("bf16", 0.1, 1.0, 0.0), ("int8-weight-only", 0.2, 0.9531,
                                                          3.352e-06))]  # fmt: skip
    write_folder(out, cases, trials=2)
    return out


def _comparison(folder: Path, key: str, value: str):
    from tokenwatt.report.comparison import compare_folders, display_rows

    return display_rows(compare_folders([str(folder)], key, value))


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_shows_every_number_whole_or_names_its_column(width, terminal, invoke):
    buf = terminal(width)
    r = invoke("compare", str(PRECISION_BATCH), "--baseline", "precision=fp32")
    assert r.exit_code == 0, r.output
    out = buf.getvalue()
    headers, rows = _comparison(PRECISION_BATCH, "precision", "fp32")
    check_table(out, width, headers, rows)
    if width == 200:
        assert not left_out(out)
    else:  # the columns that go first; the case, its figure and its ratio always stay
        assert "KL vs reference (nats)" in left_out(out)
        assert {"precision", "batch_size", "ratio [95% CI]"}.isdisjoint(left_out(out))
        assert "or use --tsv" in out
    # what the issue saw cut (int8-…, 0.028…, 3.352…): the precision, its J/token, the
    # baseline's and the KL, each whole where its column is shown
    cell = dict(zip(headers, next(r for r in rows if r[0] == "int8-dynamic")))
    assert "int8-dynamic" in out and cell["decode J/token (estimate)"] in out
    assert (cell["baseline"] in out) == ("baseline" not in left_out(out))
    kl = "KL vs reference (nats)"
    assert (cell[kl] in out) == (kl not in left_out(out)) == (width == 200)


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_with_two_trials_at_any_width(width, terminal, invoke, two_trials):
    buf = terminal(width)
    r = invoke("compare", str(two_trials), "--baseline", "precision=bf16")
    assert r.exit_code == 0, r.output
    out = buf.getvalue()
    check_table(out, width, *_comparison(two_trials, "precision", "bf16"))
    assert "int8-weight-only" in out and "(n=2)†" in out


@pytest.mark.parametrize("width", [30, 20])
def test_compare_too_narrow_for_any_column_layout_stacks_the_rows(width):
    from rich.table import Table

    from tokenwatt.cli.tables import fit_table

    t = Table(title="t")
    for h in ("precision", "J/token"):
        t.add_column(h)
    t.add_row("int8-weight-only-with-a-long-name", "3.352e-06")
    c = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    fitted, gone = fit_table(c, t, width)
    c.print(fitted)
    out = c.file.getvalue()
    assert not gone and "J/token: 3.352e-06" in out and "precision:" in out


def test_piped_compare_is_the_whole_table_whatever_columns_says(tmp_path):
    """A real pipe (a subprocess) with COLUMNS=40: the table keeps its natural width."""
    env = {**os.environ, "COLUMNS": "40", "HF_HUB_OFFLINE": "1"}
    env.pop("FORCE_COLOR", None), env.pop("TTY_COMPATIBLE", None)
    p = subprocess.run([sys.executable, "-m", "tokenwatt.cli", "compare", str(PRECISION_BATCH),
                        "--baseline", "precision=fp32"], capture_output=True, text=True,
                       env=env, check=True)  # fmt: skip
    headers, rows = _comparison(PRECISION_BATCH, "precision", "fp32")
    assert not left_out(p.stdout) and "…" not in p.stdout
    assert not missing(numbers(c for r in rows for c in r), p.stdout)
    table = [line for line in p.stdout.splitlines() if "int8-dynamic" in line]
    kls = {r[-1] for r in rows if r[0] == "int8-dynamic"}  # each row whole on its one line
    assert len(table) == 2 and all("3x9 / 3x9" in line for line in table)
    assert all(any(kl in line for kl in kls) for line in table)
    # prose in a pipe is one line, not folded at 40 (or 80) columns
    assert any(line.startswith("runs x trials: case / baseline") and len(line) > 150
               for line in p.stdout.splitlines())  # fmt: skip


def test_piped_console_is_never_cut(monkeypatch, invoke, two_trials):
    """Not a terminal (a file) but 40 columns wide: the table still has no width limit."""
    buf = io.StringIO()
    monkeypatch.setattr(console_module, "console", Console(file=buf, width=40))
    assert invoke("compare", str(two_trials), "--baseline", "precision=bf16").exit_code == 0
    out = buf.getvalue()
    headers, rows = _comparison(two_trials, "precision", "bf16")
    assert not left_out(out) and not missing(numbers(c for r in rows for c in r), out)
    assert max(len(line) for line in out.splitlines()) > 100


def test_tsv_is_the_table_at_full_precision_for_pandas(invoke):
    from tokenwatt.report.comparison import compare_folders

    r = invoke("compare", str(PRECISION_BATCH), "--baseline", "precision=fp32", "--tsv")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(io.StringIO(r.stdout), sep="\t")
    table = compare_folders([str(PRECISION_BATCH)], "precision", "fp32")
    assert len(df) == len(table) == 6
    assert list(df.columns[:2]) == ["precision", "batch_size"]
    for column in (
        "decode_j_per_token",
        "baseline_decode_j_per_token",
        "ratio",
        "ratio_ci95_low",
        "ratio_ci95_high",
        "kl_divergence",
        "top1_agreement",
    ):
        assert df[column].dtype == float
        assert df[column].tolist() == pytest.approx(table[column].tolist(), rel=1e-12)
    assert (df["kl_divergence"] < 1e-3).any()  # small enough to be cut by rich at 80 columns
    assert "─" not in r.stdout and "runs x trials" not in r.stdout  # data only, no table or note


# --- run's summary ----------------------------------------------------------------------------


def _summary(served: bool = False) -> dict:
    s = {"name": "width", "model": "preset:tiny-llama", "precision": "int8-weight-only",
         "device_name": "AMD EPYC 7763 64-Core Processor", "n_trials": 5,
         "energy_scope": "cpu-package", "energy_source": "estimate-tdp-process-cpu",
         "measured": False, "idle_power_w": 2.172}  # fmt: skip
    means = {
        "decode_j_per_token": 3.352e-06,
        "prefill_j_per_token": 0.0001234,
        "total_j_per_token": 0.028111,
        "decode_tokens_per_s": 1234.5678,
        "avg_power_w": 87.654321,
        "ttft_s_median": 0.0123456,
        "itl_s_median": 0.000987,
    }
    for m, mean in means.items():
        if served or not m.startswith(("ttft", "itl")):  # a served run's latencies
            s |= {f"{m}_mean": mean, f"{m}_ci95_low": mean * 0.9123,
                  f"{m}_ci95_high": mean * 1.0987, f"{m}_cv": 0.0234}  # fmt: skip
    return s | ({"engine": "openai", "window": "whole-run"} if served else {})


def _summary_cells(summary, metrics) -> list[list[str]]:
    """The figures of a summary as the library formats them: the data the table must show."""
    n = summary["n_trials"]
    return [[name, fmt(summary.get(f"{m}_mean")),
             interval(summary.get(f"{m}_ci95_low"), summary.get(f"{m}_ci95_high"), n),
             pct(summary.get(f"{m}_cv"))] for m, name in metrics]  # fmt: skip


SERVED = [{"window": "whole-run"}, {"window": "steady-state", "n_trials": 3}]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("served", [False, True], ids=["in-process", "served"])
def test_run_summary_shows_every_number_whole(width, served, terminal):
    buf = terminal(width)
    s = _summary(served)
    windows = [s | w for w in SERVED] if served else None
    print_outcome(SimpleNamespace(summary=s, warnings=[], out="/tmp/tokenwatt-width",
                                  windows=windows))  # fmt: skip
    out = buf.getvalue()
    rows = _summary_cells(s, SERVED_METRICS if served else METRICS)
    rows += _summary_cells(windows[1], SERVED_METRICS) if served else []
    check_table(out, width, ["figure", "mean", "95% CI", "CV"], rows)
    assert not left_out(out)  # a summary fits even 60 columns by wrapping
    assert numbers(["idle 2.172 W", "5 trials"]) <= numbers([out])
    assert "/tmp/tokenwatt-width/results.csv" in out


def test_run_summary_leaves_out_its_spread_before_its_means(terminal):
    buf = terminal(28)
    print_outcome(SimpleNamespace(summary=_summary(), warnings=[], out="/r"))
    out = buf.getvalue()
    assert left_out(out) == ["CV", "95% CI"] and "/r/summary.csv" in " ".join(out.split())
    assert not missing(numbers(fmt(_summary()[f"{m}_mean"]) for m, _ in METRICS), out)


# --- report -----------------------------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_report_names_each_file_whole_on_one_line(width, terminal, invoke, two_trials,
                                                  tmp_path):  # fmt: skip
    out_dir = tmp_path / ("a-folder-name-long-enough-to-pass-sixty-columns-" + str(width))
    buf = terminal(width)
    r = invoke("report", str(two_trials), "--out", str(out_dir))
    assert r.exit_code == 0, r.output
    lines = buf.getvalue().splitlines()
    for name in ("report.md", "report.html"):
        assert f"wrote {out_dir / name}" in lines


# --- any table ----------------------------------------------------------------------------------

WORD = st.from_regex(r"[a-z]{1,9}|-?\d{1,4}\.\d{1,5}(e-0\d)?", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(cells=st.lists(st.lists(st.lists(WORD, min_size=1, max_size=4).map(" ".join),
                               min_size=4, max_size=4), min_size=1, max_size=5),
       width=st.integers(24, 160), drop=st.integers(0, 3))  # fmt: skip
def test_any_table_at_any_width_keeps_every_number_whole(cells, width, drop):
    from rich.table import Table

    from tokenwatt.cli.tables import print_table

    headers = ["case", "a figure", "its interval", "another figure"]
    t = Table(title="random")
    for h in headers:
        t.add_column(h, justify="right")
    for row in cells:
        t.add_row(*row)
    buf = io.StringIO()
    out = Console(file=buf, width=width, force_terminal=True, color_system=None)
    print_table(t, out, headers[::-1][:drop], " or use --tsv")
    check_table(buf.getvalue(), width, headers, cells)
