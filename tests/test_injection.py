"""Names a user controls (model paths, sweep names, errors) are shown, never run: report.md
escapes them like report.html does, and compare --markdown too."""

from __future__ import annotations

import re

import pandas as pd
from synth_results import write_folder

from tokenwatt.report.comparison import markdown_table, md_escape
from tokenwatt.report.document import write_report
from tokenwatt.results.store import update_json

EVIL_MODEL = "<img src=x onerror=alert(1)>"
EVIL_LINK = "[click](javascript:alert(1))|x"
EVIL_SWEEP = "<b onmouseover=alert(2)>sweep</b>"
LINK = re.compile(r"(?<!\\)\]\(")  # a link's "](" that no backslash escapes


def test_md_escape_keeps_the_text_and_drops_the_markup():
    cell = md_escape(EVIL_MODEL + " " + EVIL_LINK + "\nnext")
    assert "<" not in cell and not LINK.search(cell) and "\n" not in cell
    assert "&lt;img src=x onerror=alert(1)&gt;" in cell and "\\[click\\]" in cell
    assert "\\|" in markdown_table(["m"], [[EVIL_LINK]]).splitlines()[-1]


def test_report_md_escapes_model_paths_sweep_names_and_errors(tmp_path, invoke):
    out = tmp_path / "res"
    cases = [
        {"case_id": f"c{i}", "precision": p, "model": m, "batch_size": 1, "prompt_tokens": 8,
         "new_tokens": 6, "decode_j_per_token": 0.1 * (i + 1)}
        for i, (p, m) in enumerate([("bf16", EVIL_MODEL), ("int8-weight", EVIL_MODEL),
                                    ("bf16", EVIL_LINK), ("int8-weight", EVIL_LINK)])
    ]  # fmt: skip
    failed = [{"case_id": "f", "precision": "fp8", "error": "<script>x()</script>"}]
    write_folder(out, cases, trials=3, failed=failed)
    plan = [{"case_id": c["case_id"], "config": {},
             "tags": {"request": EVIL_SWEEP, "turn": 1, "turns": 1}} for c in cases]  # fmt: skip
    update_json(out / "sweep.json", "sweeps", {"sweep": {}, "cases": plan})
    write_report(out, ("precision", "bf16"))
    md = (out / "report.md").read_text()
    for raw in ("<img", "<script", "<b "):
        assert raw not in md, raw
    assert "[click](javascript" not in md and "\\[click\\](javascript" in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in md and "&lt;script&gt;" in md
    page = (out / "report.html").read_text()
    assert "<img src=x" not in page and "<script>x()" not in page

    table = tmp_path / "cmp.md"
    r = invoke("compare", str(out), "--baseline", "precision=bf16", "--markdown", str(table))
    assert r.exit_code == 0, r.output
    text = table.read_text()
    assert "<img" not in text and not LINK.search(text) and "&lt;img" in text


def test_results_csv_keeps_a_formula_model_as_text(tmp_path):
    out = tmp_path / "res"
    write_folder(out, [{"case_id": "c", "precision": "bf16", "model": "=cmd|' /C calc'!A0",
                        "batch_size": 1, "prompt_tokens": 8, "new_tokens": 6,
                        "decode_j_per_token": 0.1}], trials=2)  # fmt: skip
    df = pd.read_csv(out / "results.csv")
    assert set(df["model"]) == {"'=cmd|' /C calc'!A0"}
    assert df["decode_j_per_token"].dtype.kind == "f"
