"""report: Markdown + self-contained HTML with every section, from a synthetic folder."""

import base64
import json

import pytest
from synth_results import write_folder

from tokenwatt.report.document import auto_baseline, write_report
from tokenwatt.results.store import update_json, write_atomic


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "res"
    cases = [
        {
            "case_id": f"t{t}-{p}",
            "precision": p,
            "batch_size": 1,
            "prompt_tokens": 100 * t,
            "new_tokens": 50,
            "decode_j_per_token": j * t,
            "prefill_j": 2.0 * t,
            "top1": f,
            "kl": 1 - f,
        }
        for t in (1, 2, 3)
        for p, j, f in (("bf16", 0.1, 1.0), ("int8-weight", 0.08, 0.95))
    ]
    failed = [{"case_id": "f1", "precision": "fp8", "error": "PrecisionUnsupported: needs H100"}]
    write_folder(out, cases, trials=3, failed=failed)
    plan = [
        {
            "case_id": c["case_id"],
            "config": {},
            "tags": {"request": "agent", "turn": int(c["case_id"][1]), "turns": 3},
        }
        for c in cases
    ]
    update_json(out / "sweep.json", "sweeps", {"sweep": {}, "cases": plan})
    write_atomic(out / "sweep.yaml", "name: agent\nagent: {turns: 3}\n")
    write_report(out)
    return out


def test_markdown_has_every_section(folder):
    md = (folder / "report.md").read_text()
    for heading in (
        "# tokenwatt report: res",
        "## Environment",
        "## Results per case",
        "## Comparison against precision=bf16",
        "## Agentic requests",
        "## Failed cases (1)",
        "## Figures",
        "## Reproduce",
    ):
        assert heading in md, heading
    assert "Energy figures are ESTIMATES" in md
    assert "PrecisionUnsupported: needs H100" in md
    assert "tokenwatt sweep sweep.yaml" in md and "name: agent" in md
    assert "![" in md and "figures/j_per_token.png" in md


def test_agentic_energy_per_request_sums_turns(folder):
    md = (folder / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| agent | preset:tiny-llama | bf16"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[5:8] == ["3/3", "600", "150"]  # turns, prompt tokens prefilled, generated
    # each turn t: prefill 2t J + decode 0.1t J/token x 49 tokens (noise ~3%)
    expected = sum(2.0 * t + 0.1 * t * 49 for t in (1, 2, 3))
    assert float(cells[8].split(" ± ")[0]) == pytest.approx(expected, rel=0.05)


def test_html_is_self_contained(folder):
    page = (folder / "report.html").read_text()
    assert page.startswith("<!doctype html>")
    assert "<table>" in page and "<strong>Energy figures are ESTIMATES" in page
    start = page.index("data:image/png;base64,") + len("data:image/png;base64,")
    png = base64.b64decode(page[start : page.index('"', start)])
    assert png[:4] == b"\x89PNG"
    assert 'src="figures/' not in page


def test_figures_written_as_png_and_svg(folder):
    for stem in (
        "power_trace",
        "j_per_token",
        "j_per_token_vs_prompt_tokens",
        "energy_vs_fidelity",
    ):
        assert (folder / "figures" / f"{stem}.png").stat().st_size > 1000
        assert (folder / "figures" / f"{stem}.svg").is_file()


def test_auto_baseline_prefers_bf16_then_smallest():
    import pandas as pd

    assert auto_baseline(pd.DataFrame({"precision": ["fp32", "bf16"]})) == ("precision", "bf16")
    df = pd.DataFrame({"precision": ["fp32", "fp32"], "batch_size": ["8", "2"]})
    assert auto_baseline(df) == ("batch_size", "2")
    assert auto_baseline(pd.DataFrame({"precision": ["fp32"]})) is None


def test_report_cli_and_missing_folder(folder, invoke, tmp_path):
    r = invoke(
        "report", str(folder), "--baseline", "precision=int8-weight", "--out", str(tmp_path / "o")
    )
    assert r.exit_code == 0, r.output
    assert "Comparison against precision=int8-weight" in (tmp_path / "o" / "report.md").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke("report", str(empty))
    assert r.exit_code == 2 and "not found" in r.output


def test_busy_machine_note_when_idle_reads_like_load(folder):
    import pandas as pd

    from tokenwatt.report.document import _idle_as_busy

    assert "busy with other work" not in (folder / "report.md").read_text()  # idle 2 W, avg 10 W
    df = pd.DataFrame({"idle_power_w_mean": [8.0, 7.9, 2.0], "avg_power_w_mean": [8.0] * 3})
    assert _idle_as_busy(df)
    assert not _idle_as_busy(df.assign(idle_power_w_mean=[2.0, 2.0, 8.0]))


def test_planned_cases_not_measured_are_listed(folder, tmp_path):
    from tokenwatt.results.folder import not_run

    assert not_run(folder) == [] and "not measured yet" not in (folder / "report.md").read_text()
    out = write_folder(
        tmp_path / "r",
        [
            {
                "case_id": "a",
                "precision": "bf16",
                "batch_size": 1,
                "prompt_tokens": 8,
                "new_tokens": 6,
                "decode_j_per_token": 1.0,
            }
        ],
        trials=2,
    )
    plan = [{"case_id": c, "config": {"precision": c}, "tags": {}} for c in ("a", "b")]
    update_json(out / "sweep.json", "sweeps", {"cases": plan})
    assert [c["case_id"] for c in not_run(out)] == ["b"]


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A folder whose meter has a long description (an NVML board's is ~600 characters)."""
    import json

    out = tmp_path_factory.mktemp("wide") / "res"
    cases = [{"case_id": p, "precision": p, "batch_size": 1, "prompt_tokens": 8,
              "new_tokens": 6, "decode_j_per_token": j, "measured": True,
              "source": "nvml-energy-counter", "scope": "gpu-board"}
             for p, j in (("bf16", 0.1), ("int8-weight", 0.08))]  # fmt: skip
    write_folder(out, cases, trials=3)
    meter = {"meter": "nvml", "device_name": "NVIDIA H100 80GB HBM3",
             "channels": [{"scope": "gpu-board", "source": "nvml-energy-counter",
                           "measured": True}],
             "uuid": "GPU-" + "0123456789abcdef" * 4, "architecture": "hopper",
             "other_processes": [f"pid {i}: python train.py" for i in range(12)],
             "the_last_key": "the end of the description"}  # fmt: skip
    data = json.loads((out / "run.json").read_text())
    for run in data["runs"]:
        run["meters"] = [meter]
    write_atomic(out / "run.json", json.dumps(data))
    write_report(out)
    return out, meter


def test_meter_description_is_shown_whole_and_collapsed(wide):
    out, meter = wide
    assert len(json.dumps(meter)) > 600
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        assert "<details><summary>meter 0: nvml NVIDIA H100 80GB HBM3: gpu-board from " \
               "nvml-energy-counter</summary>" in text  # fmt: skip
        assert "the end of the description" in text and "pid 11: python train.py" in text


def test_wide_html_tables_scroll_inside_their_box(wide):
    out, _ = wide
    page = (out / "report.html").read_text()
    assert page.count("<table>") == page.count('<div class="wide"><table>') >= 3
    assert ".wide{overflow-x:auto" in page


def test_measured_run_indistinguishable_from_idle_says_so(tmp_path):
    import pandas as pd

    from tokenwatt.report.document import _idle_like

    stats = pd.DataFrame({"idle_power_w_mean": [8.0, 2.0], "avg_power_w_mean": [8.1, 10.0]})
    (block,) = _idle_like(stats)
    assert "In 1 of 2 cases" in block.text and "indistinguishable from idle" in block.text
    assert _idle_like(stats.assign(idle_power_w_mean=[2.0, 2.0])) == []


def test_results_table_keeps_only_the_keys_that_vary(wide):
    out, _ = wide
    md = (out / "report.md").read_text()
    section = md.split("## Results per case")[1].split("##")[0]
    header = next(ln for ln in section.splitlines() if ln.startswith("| precision"))
    assert "batch_size" not in header and "prompt_tokens" not in header
    assert "Every case: model `preset:tiny-llama`, batch_size `1`, prompt_tokens `8`" in section
