"""The benchmark figures README.md and docs/ quote follow `benchmarks/results/*`.

Every quoted figure sits in a `<!-- figures:NAME -->` block that `benchmarks/figures.py`
generates from the stored results: a block edited by hand, or a stored result changed without
`python benchmarks/figures.py --write`, fails here. The sections that quote benchmarks hold no
other number than the method's own parameters (listed below), so a figure typed outside a block
fails too. Every stored result records the command line and the machine load it ran under
(`benchmarks/_record.py`), or is named below as a legacy result made before records existed.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import figures  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

# The sections that quote benchmark results, and the numbers their prose may carry outside a
# figures block: the benchmarks' parameters (workloads, the simulated sensor, the profiles),
# never a result.
PARAMETERS = {
    ("README.md", "## Benchmarks of tokenwatt itself"): {"1", "8", "32", "64", "20–30 ms"},
    ("docs/measurement.md", "## What a window costs"): set(),
    ("docs/measurement.md", "## Accuracy"): {
        "100 ms",
        "±3 ms",
        "25 ms",
        "±10 W",
        "5 ms",
        "±5%",
        "±25%",
        "50 ms",
        "1.5 s",
        "3–20 ms",
        "8 Hz",
        "10–80 ms",
        "0.4–1.2 s",
        "1.2x",
        "0.01",
        "40",
        "40 s",
        "6",
        "20–30 ms",
        "~620 W",
        "0.3–0.8 s",
        "~380 W",
        "0–5 ms",
    },
}
NUMBER = re.compile(
    r"(?<![\w.])[±~]?\d[\d,.]*(?:[–-]\d[\d,.]*)?"
    r"(?:\s?(?:ms|µs|us|s|%|x|W|Hz|J))?(?!\w)"
)

# Stored before benchmarks/_record.py: no record of the command line or the load beside them.
# What each does say about its load is noted; none of them is rerun on a busy machine.
LEGACY = {
    "accuracy.txt": "accuracy.py; command line in its first line, load not recorded",
    "accuracy_attribution.csv": "accuracy.py, with accuracy.txt",
    "accuracy_window_rows.csv": "accuracy.py, with accuracy.txt",
    "accuracy_windows.csv": "accuracy.py, with accuracy.txt",
    "decode_vs_generate.csv": "decode_vs_generate.py (timing), load not recorded",
    "decode_vs_generate.md": "decode_vs_generate.py, with its csv",
    "engines.json": "engines.py (timing), args inside, load as it ended (load_before), no command",
    "openai_client.json": "openai_client.py (timing), load inside, no command line",
    "overhead.csv": "overhead.py (timing), load not recorded",
    "overhead.txt": "overhead.py, with its csv",
    "precision_compare.csv": "precision_compare.py (1766 s), load 8-10 stated in its .md",
    "precision_compare.md": "precision_compare.py, with its csv",
    "prefill_attribution.csv": "prefill_attribution.py, load not recorded",
    "prefill_attribution.txt": "prefill_attribution.py, with its csv",
    "quickstart_time.csv": "quickstart_time.py (timing), load not recorded",
    "window_cost.txt": "window_cost.py (timing); command line in its first line, load not recorded",
}


def _section(text: str, head: str) -> str:
    start = text.index(head + "\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_every_figures_block_follows_its_stored_results():
    assert figures.stale() == [], "run: python benchmarks/figures.py --write"


def test_every_figure_is_quoted_once_and_every_block_has_a_generator():
    names = Counter(name for p in figures.DOCS for name, _ in figures.blocks(p.read_text()))
    assert set(names) == set(figures.FIGURES), "a block without a generator, or a figure unquoted"
    assert all(n == 1 for n in names.values()), names


@pytest.mark.parametrize("where", sorted(PARAMETERS), ids=lambda w: f"{w[0]}:{w[1][3:]}")
def test_no_benchmark_figure_outside_a_generated_block(where):
    path, head = where
    prose = figures.BLOCK.sub("", _section((ROOT / path).read_text(), head))
    found = {m.group(0).rstrip(".,") for m in NUMBER.finditer(prose)}
    assert found - PARAMETERS[where] == set(), (
        f"{path} {head}: figures outside a generated block; generate them from "
        f"benchmarks/results (benchmarks/figures.py), or list a parameter in PARAMETERS"
    )


def test_a_figure_edited_either_side_is_caught(tmp_path, monkeypatch):
    """The check is not vacuous: a stored number changed, or a quoted one, is stale."""
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    monkeypatch.setattr(figures, "RESULTS", results)
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    assert figures.stale((readme,)) == []

    data = json.loads((results / "engines.json").read_text())
    row = next(s for s in data["summary"] if s["engine"] == "vllm" and s["batch_size"] == 1)
    row["tokens_per_s_vs_transformers"] = 1.09
    (results / "engines.json").write_text(json.dumps(data))
    assert figures.stale((readme,)) == ["README.md: engines"]

    shutil.copy(RESULTS / "engines.json", results / "engines.json")
    text = readme.read_text()
    block = re.search(r"<!-- figures:openai-client -->.*?<!-- /figures -->", text, re.S)[0]
    readme.write_text(text.replace(block, block.replace("59,500", "59,600")))
    assert figures.stale((readme,)) == ["README.md: openai-client"]


def test_every_stored_result_records_its_command_line_and_load():
    records = {p.name: json.loads(p.read_text()) for p in RESULTS.glob("*.run.json")}
    covered = {f for r in records.values() for f in r["files"]}
    for name, rec in records.items():
        assert rec["command"].startswith("python benchmarks/"), name
        assert len(rec["load_avg_start"]) == 3 and len(rec["load_avg_end"]) == 3, name
        assert rec["cpus"] and rec["commit"] and rec["started"], name
        assert all((RESULTS / f).is_file() for f in rec["files"]), f"{name}: a file not stored"
    stored = {p.name for p in RESULTS.iterdir() if p.is_file()} - set(records) - {"README.md"}
    assert stored - covered - set(LEGACY) == set(), "stored without a record: benchmarks/_record.py"
    assert covered & set(LEGACY) == set(), "regenerated with a record: drop it from LEGACY"
    assert set(LEGACY) <= stored, "LEGACY names a file that is not stored"


def test_every_benchmark_that_stores_a_result_writes_a_record():
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        text = script.read_text()
        if "results" in text and script.name not in {"figures.py", "_record.py", "gpu_check.py"}:
            writes = ".write(" in text or ".write_csv(" in text  # write_csv writes the record too
            assert "Record()" in text and writes, f"{script.name}: no _record.Record"
