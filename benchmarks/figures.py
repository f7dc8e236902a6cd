"""The benchmark figures README.md and docs/ quote, generated from `benchmarks/results/*`.

A document holds each as a marked block::

    <!-- figures:NAME -->
    ...generated text...
    <!-- /figures -->

`python benchmarks/figures.py --write` rewrites every block from the stored results;
`python benchmarks/figures.py` (or `--check`) prints the blocks that differ and exits 1.
`tests/test_doc_figures.py` runs the check, so a figure edited in a document without its
stored result, or a stored result changed without regenerating the documents, fails CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
BLOCK = re.compile(r"<!-- figures:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /figures -->", re.S)


def _csv(name: str) -> list[dict[str, str]]:
    with (RESULTS / name).open(newline="") as f:
        return list(csv.DictReader(f))


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _wrap(text: str) -> str:
    """Prose at the documents' width; tables and blank-line breaks kept as they are."""
    paras = text.rstrip("\n").split("\n\n")
    return (
        "\n\n".join(
            p
            if p.startswith("|")
            else textwrap.fill(p, width=100, break_long_words=False, break_on_hyphens=False)
            for p in paras
        )
        + "\n"
    )


def _sig(x: float, digits: int = 3) -> str:
    """x to DIGITS significant figures, thousands separated (59,538 -> 59,500)."""
    return f"{float(f'{x:.{digits}g}'):,.0f}" if abs(x) >= 10**digits else f"{x:.{digits}g}"


# -- docs/measurement.md: window energy accuracy (benchmarks/accuracy.py) -----------------------

VIRTUAL = ("steady", "steps", "phases-on-ticks", "phases-off-ticks", "spikes", "bursts")
REAL_TIME = ("steps", "phases-on-ticks", "bursts")


def _accuracy_table(clock: str, profiles: tuple[str, ...]) -> str:
    rows = [r for r in _csv("accuracy_windows.csv") if r["clock"] == clock]
    lengths = sorted({float(r["window_s"]) for r in rows})
    ns = {int(r["n"]) for r in rows}
    if len(ns) != 1:
        raise ValueError(f"accuracy_windows.csv: {clock} rows with different n: {sorted(ns)}")
    head = [f"profile ({clock}, {ns.pop()} windows per length)", *(f"{s:g} s" for s in lengths)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in profiles:
        by_len = {float(r["window_s"]): r for r in rows if r["profile"] == p}
        cells = [f"{p} (floor: {by_len[lengths[0]]['floor_estimator']})"]
        for s in lengths:
            r = by_len[s]
            miss = "" if r["within_goal"] == "True" else " ✗"
            cells.append(
                f"{float(r['tokenwatt_worst_pct']):.3f} / {float(r['floor_worst_pct']):.3f}{miss}"
            )
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def accuracy_virtual() -> str:
    return _accuracy_table("virtual", VIRTUAL)


def accuracy_real_time() -> str:
    return _accuracy_table("real-time", REAL_TIME)


def accuracy_notes() -> str:
    rows = _csv("accuracy_windows.csv")
    windows = _csv("accuracy_window_rows.csv")
    missed = sum(int(r["missed"]) for r in windows)
    loss = max(abs(float(r["tokenwatt"]) - float(r["floor:auto"])) for r in windows)
    lengths = sorted({float(r["window_s"]) for r in rows})
    cd = [
        max(float(r["counter_delta_worst_pct"]) for r in rows if float(r["window_s"]) == s)
        for s in lengths
    ]

    def pct(x: float) -> str:
        return f"{x:.0f}%" if x >= 10 else f"{x:.2g}%"

    at = {
        r["profile"]: float(r["floor_worst_pct"])
        for r in rows
        if r["clock"] == "virtual" and float(r["window_s"]) == 0.5
    }
    quiet = [at[p] for p in ("steady", "steps", "phases-on-ticks", "phases-off-ticks")]
    return (
        f"The sampler's own loss (tokenwatt against its estimator on exact updates) is at most "
        f"{loss:.2f} percentage points on any of the {len(windows)} windows. "
        f"{'No counter update was missed in any window, real time included' if missed == 0 else f'{missed} counter updates were missed'}. "  # noqa: E501
        f"For comparison, two counter reads at the edges (`counter-delta`, what tools without a "
        f"sampler do), worst over the profiles: "
        f"{', '.join(pct(x) for x in cd[:-1])} and {pct(cd[-1])} at "
        f"{', '.join(f'{s:g}' for s in lengths[:-1])} and {lengths[-1]:g} s. "
        f"The floor at 0.5 s is {min(quiet):.2f}–{max(quiet):.2f}% on the steady, steps and "
        f"phases profiles and larger where bursts shorter than a period fall inside the edge "
        f"periods (bursts {at['bursts']:.1f}%, spikes {at['spikes']:.1f}%): there the sensor "
        f"does not say where in the period the burst was, and no estimator can.\n"
    )


# -- docs/measurement.md: phase attribution (benchmarks/prefill_attribution.py, accuracy.py) ----


def attribution() -> str:
    rows = _csv("prefill_attribution.csv")
    out = [
        "| clock | prefill median / worst | decode median / worst | "
        "reported uncertainty (median) |",
        "|---|---|---|---|",
    ]
    for clock, label in (("virtual", "virtual"), ("real-time", "real time, GIL-holding body")):
        r = [x for x in rows if x["clock"] == clock]
        pre = [abs(float(x["prefill_err_pct"])) for x in r]
        dec = [abs(float(x["decode_err_pct"])) for x in r]
        pre_u = statistics.median(float(x["prefill_reported_err_pct"]) for x in r)
        dec_u = statistics.median(float(x["decode_reported_err_pct"]) for x in r)
        prefills = sum(int(x["prefills"]) for x in r)
        out.append(
            f"| {label} ({prefills} prefills in {len(r)} trials) | "
            f"{statistics.median(pre):.2f}% / {max(pre):.2f}% | "
            f"{statistics.median(dec):.2f}% / {max(dec):.2f}% | "
            f"prefill ±{pre_u:.2f}%, decode ±{dec_u:.2f}% |"
        )
    return "\n".join(out) + "\n"


def mark_reads() -> str:
    pre = [
        abs(float(r["error_pct"]))
        for r in _csv("accuracy_attribution.csv")
        if r["phase"] == "prefill" and r["method"] == "mark-reads"
    ]
    return (
        f"Two reads at the phase marks instead (`mark-reads` in `accuracy.py`, bursts "
        f"profile, {len(pre)} prefills): prefill worst {max(pre):.0f}% (a prefill inside one "
        f"period reads 0 J), median {statistics.median(pre):.0f}%.\n"
    )


# -- window cost (benchmarks/window_cost.py): docs/measurement.md and the README ---------------


def _window_cost() -> dict[str, str]:
    text = (RESULTS / "window_cost.txt").read_text()
    pats = {
        "command": r"^\$ (python .*?)\s*$",
        "empty": r"begin\+end: median ([\d.]+) us",
        "p90": r"p90 ([\d.]+) us",
        "p99": r"p99 ([\d.]+) us",
        "energy": r"time to energy after end_window: median ([\d.]+) ms",
        "energy_max": r"time to energy.*?max ([\d.]+) ms",
        "measure": r"measure\(\) block, a Monitor each: median ([\d.]+) ms",
        "first": r"first in the process ([\d.]+) ms",
        "again": r"again ([\d.]+) ms",
        "idle": r"interval: ([\d.]+)% of a core idle \((\d+) NVML calls/s\)",
        "busy": r", ([\d.]+)% while Python holds the GIL \((\d+) calls/s\)",
    }
    got: dict[str, str] = {}
    for key, pat in pats.items():
        m = re.search(pat, text, re.M)
        if m is None:
            raise ValueError(f"window_cost.txt: no {key!r} ({pat})")
        got[key] = m.group(1)
        if m.lastindex and m.lastindex > 1:
            got[key + "_calls"] = m.group(2)
    return got


def window_cost() -> str:
    w = _window_cost()
    return (
        f"Measured with `{w['command']}` on the simulated NVML board in process (pure Python "
        f"NVML calls, which hold the GIL longer than real NVML's ctypes calls), one run on a "
        f"2-vCPU virtual machine (its load was not recorded):\n\n"
        f"| what | cost |\n|---|---|\n"
        f"| empty window on a reused Monitor, `begin_window` + `end_window` | median "
        f"{w['empty']} µs (p90 {w['p90']} µs, p99 {w['p99']} µs) |\n"
        f"| time to energy after `end_window` (first `m.joules`) | median {w['energy']} ms, max "
        f"{w['energy_max']} ms |\n"
        f"| `with tokenwatt.measure():` block (opens and closes a Monitor) | median "
        f"{w['measure']} ms |\n"
        f"| meter open: first in the process / again | {float(w['first']) / 1e3:.2f} s / "
        f"{w['again']} ms |\n"
        f"| sampler thread at the default 20 ms interval | {w['idle']}% of one core idle "
        f"({w['idle_calls']} NVML calls/s), {w['busy']}% with a GIL-holding body "
        f"({w['busy_calls']} calls/s) |\n"
    )


def window_cost_summary() -> str:
    w = _window_cost()
    return (
        f"What a window costs (`{w['command']}`, simulated NVML board in process, one run on a "
        f"2-vCPU machine; rerun on yours): an empty window on a reused Monitor, median "
        f"**{float(w['empty']):.0f} µs** (p99 {float(w['p99']):.0f} µs; `begin_window` + "
        f"`end_window`); its energy is ready after the counter's next update (median "
        f"{float(w['energy']):.0f} ms, at most about one 100 ms period); a `tokenwatt.measure()` "
        f"block costs {float(w['measure']):.2g} ms, as it opens a Monitor; the first meter open "
        f"in a process measures the board's update period ({float(w['first']) / 1e3:.1f} s, then "
        f"kept); the sampler thread takes {max(float(w['idle']), float(w['busy'])):.2g}% of a "
        f"core.\n"
    )


# -- README: engines (benchmarks/engines.py) and the OpenAI client (openai_client.py) ----------

ENGINE_LABEL = {"transformers": "transformers", "vllm": "vllm", "openai": "openai (vLLM server)"}


def engines() -> str:
    d = _json("engines.json")
    runs, args = d["runs"], d["args"]
    contended = [r for r in runs if r["contended"]]
    spread = {}
    for r in runs:
        spread.setdefault((r["engine"], r["batch_size"]), []).append(r["tokens_per_s"])
    b1 = max(max(v) / min(v) for (_, b), v in spread.items() if b == min(args["batch"]))
    which = "; ".join(
        f"{r['engine']} at batch {r['batch_size']}, round {r['round']}" for r in contended
    )
    load = d["load_before"]
    where = f"a {d['cpus']}-core machine" if "cpus" in d else "this machine"
    head = (
        f"Here, {args['rounds']} rounds on {where} (load average {load[0]:.1f} as the last run "
        f"ended), medians of the paired per-round ratios to transformers "
        f"({len(runs) - len(contended)} of the {len(runs)} runs uncontended; contended, and "
        f"labelled so in `benchmarks/results/engines.json`: {which or 'none'}; at batch "
        f"{min(args['batch'])} the rounds of one engine differ by up to {b1:.1f}x, so those "
        f"ratios say little):\n\n"
    )
    table = [
        "| batch | engine | tokens/s | J/token (estimate) | tokens/s vs transformers | "
        "J/token vs transformers |",
        "|---|---|---|---|---|---|",
    ]
    for s in d["summary"]:
        table.append(
            f"| {s['batch_size']} | {ENGINE_LABEL[s['engine']]} | "
            f"{s['tokens_per_s_median']:.0f} | {_sig(s['total_j_per_token_median'])} | "
            f"{s['tokens_per_s_vs_transformers']:.2f} | "
            f"{s['j_per_token_vs_transformers']:.2f} |"
        )
    return head + "\n".join(table) + "\n"


def engines_batch8() -> str:
    d = _json("engines.json")
    top = max(d["args"]["batch"])
    s = {r["engine"]: r for r in d["summary"] if r["batch_size"] == top}
    return (
        f"On this CPU, vLLM's offline engine at batch {top} runs at "
        f"{s['vllm']['tokens_per_s_vs_transformers']:.2f}x transformers' tokens/s: the tiny "
        f"model leaves vLLM's scheduler and per-step overhead as large as the model's work. The "
        f"server path pays HTTP, detokenisation and the client on the same cores: "
        f"{s['openai']['tokens_per_s_vs_transformers']:.2f}x the tokens/s and "
        f"{s['openai']['j_per_token_vs_transformers']:.1f}x the J/token at batch {top}.\n"
    )


def openai_client() -> str:
    d = _json("openai_client.json")
    res = sorted(d["results"], key=lambda r: r["concurrency"])
    rates = " and ".join(
        f"{_sig(r['tokens_per_s_median'])} at concurrency {r['concurrency']}" for r in res
    )
    per_cpu = min(r["tokens_per_cpu_s_median"] for r in res)
    load = d["load_avg_1m_before"]  # the one after includes the benchmark's own load
    busy = "flagged busy, so these are lower bounds" if d["machine_busy"] else "a quiet machine"
    return (
        f"`openai_client.py` measures the client alone against a server that answers "
        f"instantly, median streamed tokens/s: {rates} (at least {_sig(per_cpu)} tokens per "
        f"client CPU-second), against a goal of {d['goal_tokens_per_s']:,} (load average "
        f"{load:.1f} before it started, on {d['cores']} cores: {busy}).\n"
    )


FIGURES: dict[str, Callable[[], str]] = {
    "accuracy-virtual": accuracy_virtual,
    "accuracy-real-time": accuracy_real_time,
    "accuracy-notes": accuracy_notes,
    "attribution": attribution,
    "mark-reads": mark_reads,
    "window-cost": window_cost,
    "window-cost-summary": window_cost_summary,
    "engines": engines,
    "engines-batch8": engines_batch8,
    "openai-client": openai_client,
}


def blocks(text: str) -> list[tuple[str, str]]:
    """(name, body) of every figures block in TEXT, in order."""
    return [(m["name"], m["body"]) for m in BLOCK.finditer(text)]


def render(text: str) -> str:
    """TEXT with every figures block regenerated from the stored results."""

    def sub(m: re.Match[str]) -> str:
        if m["name"] not in FIGURES:
            raise KeyError(f"no figure named {m['name']!r} in benchmarks/figures.py")
        return f"<!-- figures:{m['name']} -->\n{_wrap(FIGURES[m['name']]())}<!-- /figures -->"

    return BLOCK.sub(sub, text)


def stale(paths: tuple[Path, ...] = DOCS) -> list[str]:
    """'path: name' for every block whose text differs from its stored results."""
    out = []
    for p in paths:
        text = p.read_text()
        for (name, body), (_, fresh) in zip(blocks(text), blocks(render(text))):
            if body != fresh:
                out.append(f"{p.relative_to(ROOT)}: {name}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the blocks in place")
    ap.add_argument("--check", action="store_true", help="exit 1 if a block differs (default)")
    args = ap.parse_args(argv)
    if args.write:
        for p in DOCS:
            text = p.read_text()
            if (new := render(text)) != text:
                p.write_text(new)
                print(f"rewrote {p.relative_to(ROOT)}")
        return 0
    bad = stale()
    for b in bad:
        print(f"stale: {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
