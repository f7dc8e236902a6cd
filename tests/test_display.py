"""How intervals and notes are shown: the console, the report's tables, the comparison.

Below 3 trials an interval says "interval not informative"; a positive quantity never shows a
negative lower bound, even read from a file written before the log-scale intervals.
"""

import math
from types import SimpleNamespace

import pytest
from rich.console import Console

from tokenwatt.cli.console import idle_note, print_outcome, summary_table
from tokenwatt.report.format import interval, mean_with_ci, near_idle, ratio_with_ci


def test_interval_below_three_trials_is_not_informative():
    assert interval(0.9, 1.1, n=2) == "interval not informative (n=2)"
    assert interval(math.nan, math.nan, n=1) == "interval not informative (n=1)"
    assert interval(0.9, 1.1, n=3) == "0.9 – 1.1"
    assert mean_with_ci(1.0, 0.9, 1.1, n=2) == "1 [interval not informative, n=2]"
    assert ratio_with_ci(0.8, 0.5, 1.3, n=2) == "0.8 [interval not informative, n=2]"
    assert ratio_with_ci(0.8, 0.7, 0.9, n=5) == "0.8 [0.7, 0.9]"


def test_positive_quantity_never_shows_a_negative_lower_bound():
    assert interval(-4.095, 213.2, n=3) == "0 – 213.2"
    assert mean_with_ci(104.5, -4.095, 213.2, n=3) == "104.5 [0, 213]"
    # a quantity that can be negative (energy above idle) keeps its bound
    assert interval(-0.5, 1.5, n=4, positive=False) == "-0.5 – 1.5"
    assert interval(math.nan, math.nan, n=5) == "-"


def _summary(**kw):
    s = {"name": "q", "model": "preset:tiny-llama", "precision": "fp32", "device_name": "CPU",
         "n_trials": 5, "energy_scope": "cpu-package", "energy_source": "rapl",
         "measured": True, "idle_power_w": 2.0}  # fmt: skip
    for m, mean in (("decode_j_per_token", 0.05), ("prefill_j_per_token", 0.001),
                    ("total_j_per_token", 0.06), ("decode_tokens_per_s", 104.5),
                    ("avg_power_w", 8.0)):  # fmt: skip
        s |= {f"{m}_mean": mean, f"{m}_ci95_low": mean * 0.9, f"{m}_ci95_high": mean * 1.1,
              f"{m}_cv": 0.02}  # fmt: skip
    return s | kw


def _render(table) -> str:
    c = Console(width=200, record=True)
    c.print(table)
    return c.export_text()


def test_console_table_with_two_trials_and_an_old_negative_bound():
    text = _render(summary_table(_summary(n_trials=2)))
    assert text.count("interval not informative (n=2)") == 5
    old = _summary(decode_tokens_per_s_ci95_low=-4.095, decode_j_per_token_ci95_low=-53.8)
    text = _render(summary_table(old))
    assert "-4.095" not in text and "-53.8" not in text
    assert "0 – 115" in text  # tokens/s: 104.5 x 1.1 = 114.95, 4 significant digits


def test_idle_note_when_load_power_reads_like_idle(capsys):
    assert near_idle(7.996, 8.0) and near_idle(8.3, 8.0) and not near_idle(9.0, 8.0)
    assert not near_idle(8.0, math.nan) and not near_idle(8.0, 0.0)
    assert idle_note(_summary()) is None  # 8 W under load against 2 W idle
    s = _summary(idle_power_w=8.0, avg_power_w_mean=7.996)
    note = idle_note(s)
    assert "indistinguishable from idle" in note and "dynamic" in note and "meaningless" in note
    outcome = SimpleNamespace(summary=s, warnings=[], out="/tmp/x")
    print_outcome(outcome)
    err = " ".join(capsys.readouterr().err.split())
    assert "indistinguishable from idle" in err


@pytest.fixture(scope="module")
def two_trial_folder(tmp_path_factory):
    from synth_results import write_folder

    from tokenwatt.report.document import write_report

    out = tmp_path_factory.mktemp("disp") / "r"
    cases = [{"case_id": p, "precision": p, "batch_size": 1, "prompt_tokens": 8,
              "new_tokens": 6, "decode_j_per_token": j}
             for p, j in (("bf16", 0.1), ("fp32", 0.2))]  # fmt: skip
    write_folder(out, cases, trials=2)
    write_report(out)
    return out


def test_report_and_comparison_with_two_trials_show_no_interval(two_trial_folder):
    md = (two_trial_folder / "report.md").read_text()
    results = md.split("## Results per case")[1].split("##")[0]
    assert "interval not informative, n=2" in results
    comparison = md.split("## Comparison against precision=bf16")[1].split("##")[0]
    assert "interval not informative, n=2" in comparison


def test_compare_command_with_two_trials(two_trial_folder, invoke):
    r = invoke("compare", str(two_trial_folder), "--baseline", "precision=bf16")
    assert r.exit_code == 0, r.output
    assert "1.97 (n=2)†" in r.output and "interval not informative" in r.output


def test_console_says_simulated_for_the_simulated_nvml(capsys):
    s = _summary(energy_source="simulated-nvml-energy-counter", measured=False)
    print_outcome(SimpleNamespace(summary=s, warnings=[], out="/tmp/x"))
    out = capsys.readouterr().out
    assert "energy: SIMULATED" in out and "source simulated-nvml-energy-counter" in out
