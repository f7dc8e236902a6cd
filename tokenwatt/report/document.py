"""`tokenwatt report RESULTS_DIR`: report.md and a self-contained report.html.

The report is built once as a list of blocks (headings, paragraphs, tables, figures, code)
and rendered twice: Markdown with figures beside it in figures/, and HTML with the PNGs
embedded as data URIs so the one file opens anywhere. It holds the environment, one row per
case, the comparison against a baseline, agentic requests (energy per request), failed cases,
the figures, and what is needed to reproduce it: the sweep config, every resolved config,
versions and hardware, all read from the folder's run.json and sweep.json.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenwatt._util.ids import utc_now

PREFERRED_BASELINE = {"precision": "bf16", "engine": "transformers"}
BASELINE_KEYS = ("engine", "precision", "batch_size", "prompt_tokens", "model", "device_name")


@dataclass
class Block:
    kind: str  # h1 h2 p table img code details
    text: str = ""
    rows: list[list[str]] | None = None
    headers: list[str] | None = None
    path: Path | None = None
    body: str = ""  # details: what the collapsed block holds (shown whole, preformatted)


def write_report(
    folder: Path, baseline: tuple[str, str] | None = None, out: Path | None = None
) -> list[Path]:
    """Write report.md, report.html and figures/ for a results folder; returns the paths."""
    from tokenwatt._util.extras import require

    require("plots", "tokenwatt report")  # before anything is read or any folder is made
    from tokenwatt.report.plots import all_plots
    from tokenwatt.results.store import write_atomic

    out = out or folder
    data = load_folder(folder)
    out.mkdir(parents=True, exist_ok=True)
    figures = all_plots(data["stats"], data["runs"], out / "figures")
    blocks = build(folder, data, baseline, figures)
    md, page = out / "report.md", out / "report.html"
    write_atomic(md, to_markdown(blocks, out))
    write_atomic(page, to_html(blocks, title=f"tokenwatt report: {folder.name}"))
    return [md, page, *(f.png for f in figures), *(f.svg for f in figures)]


def load_folder(folder: Path) -> dict[str, Any]:
    from tokenwatt.analysis.compare import case_stats
    from tokenwatt.report.usable import no_usable_row, usable_trials
    from tokenwatt.results.columns import RUN_JSON
    from tokenwatt.results.folder import case_tags, failures, not_run
    from tokenwatt.results.load import load_results

    run_json = folder / RUN_JSON
    meta = json.loads(run_json.read_text(encoding="utf-8")) if run_json.is_file() else {}
    ok = usable_trials(load_results(folder), [folder])
    if ok.empty:  # every row failed or unfinished: exit 1, nothing written
        raise no_usable_row("report", [folder])
    return {
        "trials": ok,
        "stats": case_stats(ok),
        "runs": meta.get("runs", []),
        "failed_runs": meta.get("failures", []),
        "failures": failures(folder),
        "tags": case_tags(folder),
        "not_run": not_run(folder),
    }


# --- content ------------------------------------------------------------------------------------


def build(
    folder: Path, data: dict[str, Any], baseline: tuple[str, str] | None, figures: list[Any]
) -> list[Block]:
    from tokenwatt._util.version import __version__

    stats = data["stats"]
    now = utc_now()
    blocks = [
        Block("h1", f"tokenwatt report: {folder.name}"),
        Block(
            "p",
            f"Generated {now} by tokenwatt {__version__} from `{folder}`: "
            f"{len(stats)} complete cases, {len(data['trials'])} trials.",
        ),
    ]
    blocks += _label_block(stats)
    blocks += _environment(data["runs"])
    blocks += _summary(stats)
    blocks += _comparison(data["trials"], stats, baseline)
    blocks += _agentic(stats, data["tags"])
    blocks += _failed(data)
    blocks += _not_run(data["not_run"])
    blocks += [Block("h2", "Figures")]
    blocks += [Block("img", f.title, path=f.png) for f in figures]
    blocks += _reproduce(folder, data["runs"])
    return blocks


def _contended_block(stats: Any) -> list[Block]:
    """The banner of a folder with rows measured while other processes loaded the machine."""
    if "contended" not in stats or not stats["contended"].astype(bool).any():
        return []
    bad = stats[stats["contended"].astype(bool)]
    n = int(bad["n_contended_trials"].sum()) if "n_contended_trials" in bad else len(bad)
    return [Block("p", (
        f"**CONTENDED: {len(bad)} of {len(stats)} cases ({n} trials) were measured while other "
        "processes loaded the machine** (see `contended`, `other_cpu_cores`, `contention_reason` "
        "in results.csv). Other work slows the decode and, on RAPL or a GPU board, adds its own "
        "energy: these figures are not publishable. Rerun on a quiet machine."
    ))]  # fmt: skip


def _label_block(stats: Any) -> list[Block]:
    sources = sorted(set("+".join(sorted(set(stats.get("energy_source", [])))).split("+")))
    scopes = sorted(set(stats["energy_scope"])) if "energy_scope" in stats else []
    what = f"source {', '.join(s for s in sources if s)}; scope {', '.join(scopes)}"
    if stats["measured"].astype(bool).all():
        return [*_contended_block(stats), Block("p", f"**Energy is measured** ({what})."),
                *_idle_like(stats)]  # fmt: skip
    text = (
        f"**Energy figures are ESTIMATES, not measurements** ({what}). "
        "An estimate from TDP and this process tree's CPU time can be off by -57% to +187% "
        "against RAPL (CodeCarbon's comparison of TDP-based estimates); compare estimates "
        "only with estimates from the same machine."
    )
    if _idle_as_busy(stats):
        text += (
            " Here idle power reads within 5% of the power under load in most cases: dynamic "
            "energy is near zero, and energy differences mostly reflect differences in time."
        )
    return [*_contended_block(stats), Block("p", text)]


def _idle_like(stats: Any) -> list[Block]:
    """A note naming the cases whose power under load cannot be told from idle power."""
    from tokenwatt.report.format import IDLE_CLOSE, near_idle

    if "idle_power_w_mean" not in stats or "avg_power_w_mean" not in stats:
        return []
    close = [near_idle(a, i) for a, i in zip(stats["avg_power_w_mean"], stats["idle_power_w_mean"])]
    if not any(close):
        return []
    return [Block("p", f"In {sum(close)} of {len(close)} cases the average power under load is "
                  f"within {IDLE_CLOSE:.0%} of idle power: those runs are indistinguishable from "
                  "idle, so their dynamic (above idle) figures are meaningless.")]  # fmt: skip


def _idle_as_busy(stats: Any) -> bool:
    """True when most cases' idle power is at least 95% of their average power."""
    if "idle_power_w_mean" not in stats or "avg_power_w_mean" not in stats:
        return False
    busy = stats["idle_power_w_mean"] >= 0.95 * stats["avg_power_w_mean"]
    return bool(busy.mean() > 0.5)


def _environment(runs: list[dict[str, Any]]) -> list[Block]:
    if not runs:
        return []
    values: dict[str, list[str]] = {}
    for r in runs:
        for k, v in (r.get("environment") or {}).items():
            s = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
            if s not in values.setdefault(k, []):
                values[k].append(s)
    rows = [[k, "; ".join(v)] for k, v in values.items()]
    return [
        Block("h2", "Environment"),
        Block("table", headers=["item", "value"], rows=rows),
        *_meter_blocks(runs[-1].get("meters") or []),
    ]


def _meter_blocks(meters: list[dict[str, Any]]) -> list[Block]:
    """Each meter's whole description, collapsed under a one-line summary."""
    blocks = []
    for i, m in enumerate(meters):
        channels = m.get("channels") or []
        what = ", ".join(
            f"{c.get('scope')} from {c.get('source')}"
            + ("" if c.get("measured") else " (not measured)")
            for c in channels
        )
        name = m.get("device_name") or m.get("cpu_model") or ""
        summary = f"meter {i}: {m.get('meter', '?')} {name}".strip() + (f": {what}" if what else "")
        blocks.append(Block("details", summary, body=json.dumps(m, indent=2, default=str)))
    return blocks


SUMMARY_COLUMNS = [
    ("decode_j_per_token", "decode J/token"),
    ("prefill_j_per_token", "prefill J/prompt token"),
    ("total_j_per_token", "total J/generated token"),
    ("j_per_request", "J/request"),
    ("decode_tokens_per_s", "decode tokens/s"),
    ("avg_power_w", "avg power W"),
]


def _summary(stats: Any) -> list[Block]:
    from tokenwatt.report.format import fmt

    keys, same = _varying_keys(stats)
    headers = keys + ["runs x trials"] + [t for m, t in SUMMARY_COLUMNS if f"{m}_mean" in stats]
    headers += ["Wh/1k queries", "idle W", "energy source"]
    rows = []
    for _, r in stats.iterrows():
        runs = f"{r['n_runs']}x" if "n_runs" in r else ""
        cells = [str(r[k]) for k in keys] + [f"{runs}{r['n_trials']}"]
        for m, _t in SUMMARY_COLUMNS:
            if f"{m}_mean" in stats:
                cells.append(_mean_ci(r, m))
        cells += [
            fmt(r.get("j_per_request_mean", math.nan) * 1000 / 3600),
            fmt(r.get("idle_power_w_mean")),
            f"{r.get('energy_source', '')}{'' if r['measured'] else ' (estimate)'}",
        ]
        rows.append(cells)
    note = (
        "Mean with its 95% Student-t confidence interval in brackets (log scale for positive "
        "quantities), over run means where a case has several runs (a fresh process is the "
        "unit of replication), else over the trials of its one run; below 3 of those an "
        "interval says nothing and is not shown ('interval not informative'). "
        "J/request: prefill + decode energy of one sequence (total_j / (batch_size x "
        "repetitions)); Wh/1k queries is the same x 1000 / 3600 (AI Energy Score's unit, "
        "in this folder's energy scope). Column meanings: docs/results-schema.md in tokenwatt."
    )
    blocks = [Block("h2", "Results per case")]
    if same:  # said once above the table, which then fits the page better
        blocks.append(Block("p", "Every case: " + ", ".join(f"{k} `{v}`" for k, v in same) + "."))
    return [*blocks, Block("table", headers=headers, rows=rows), Block("p", note)]


# Shared by every case and the defaults: not worth a word in "Every case: ..."
UNSAID = {("engine", "transformers"), ("window", "whole-run")}
SUMMARY_KEYS = ("engine", "window", "model", "precision", "batch_size", "prompt_tokens",
                "new_tokens", "device_name")  # fmt: skip


def _varying_keys(stats: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """The case keys that tell cases apart (table columns), and those every case shares."""
    present = [k for k in SUMMARY_KEYS if k in stats]
    if len(stats) < 2:
        return present, []
    keys = [k for k in present if stats[k].astype(str).nunique() > 1]
    same = [(k, str(stats[k].iloc[0])) for k in present if k not in keys
            and (k, str(stats[k].iloc[0])) not in UNSAID]  # fmt: skip
    return keys or present[:1], [kv for kv in same if kv[0] not in (keys or present[:1])]


def _mean_ci(r: Any, m: str) -> str:
    """Every summary figure is positive: the display never shows a negative lower bound."""
    from tokenwatt.report.format import mean_with_ci

    return mean_with_ci(r.get(f"{m}_mean"), r.get(f"{m}_ci95_low"), r.get(f"{m}_ci95_high"),
                        n=r.get("ci_n", r.get("n_trials")))  # fmt: skip


def auto_baseline(stats: Any) -> tuple[str, str] | None:
    """The first key that varies, at bf16 for precision and the smallest value otherwise."""
    for key in BASELINE_KEYS:
        if key in stats and stats[key].nunique() > 1:
            values = list(dict.fromkeys(stats[key]))
            if PREFERRED_BASELINE.get(key) in values:
                return key, PREFERRED_BASELINE[key]
            nums = [_float(v) for v in values]
            if all(n == n for n in nums):
                return key, values[nums.index(min(nums))]
            return key, values[0]
    return None


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _comparison(trials: Any, stats: Any, baseline: tuple[str, str] | None) -> list[Block]:
    from tokenwatt.analysis.compare import compare
    from tokenwatt.report.comparison import comparison_markdown, display_rows

    baseline = baseline or auto_baseline(stats)
    if baseline is None:
        return []
    from tokenwatt.report.comparison import default_metric

    table = compare(trials, baseline[0], baseline[1], default_metric(trials))
    headers, rows = display_rows(table)
    blocks = [Block("h2", f"Comparison against {baseline[0]}={baseline[1]}")]
    if not rows:
        return blocks + [Block("p", "No case has a baseline to compare with.")]
    note = comparison_markdown(table).split("\n\n", 1)[1].strip()
    missing = table.attrs.get("missing") or []
    if missing:
        note += " No baseline for: " + "; ".join(missing) + "."
    return blocks + [Block("table", headers=headers, rows=rows), Block("p", note)]


def _agentic(stats: Any, tags: dict[str, dict[str, Any]]) -> list[Block]:
    """Energy per agentic request: the sum over its turns (each turn a case)."""
    from tokenwatt.report.format import MIN_INTERVAL_N, NOT_INFORMATIVE, fmt

    if not tags or "case_id" not in stats:
        return []
    turns = stats.assign(
        _turn=stats["case_id"].map(lambda c: tags.get(c, {}).get("turn")),
        _request=stats["case_id"].map(lambda c: tags.get(c, {}).get("request")),
    )
    turns = turns[turns["_turn"].notna()]
    if turns.empty:
        return []
    group_keys = [
        k for k in ("_request", "model", "precision", "batch_size", "device_name") if k in turns
    ]
    rows = []
    for key, g in turns.groupby(group_keys, sort=False):
        j = g["j_per_request_mean"].sum()
        half = math.sqrt(
            sum(
                ((h - m) ** 2)
                for m, h in zip(g["j_per_request_mean"], g["j_per_request_ci95_high"])
                if h == h
            )
        )
        few = (g["ci_n"].astype(int) < MIN_INTERVAL_N).any() if "ci_n" in g else False
        generated = g["new_tokens"].astype(int).sum()
        prefilled = g["prompt_tokens"].astype(int).sum()
        complete = f"{len(g)}/{int(max(tags[c].get('turns', 0) for c in g['case_id']))}"
        rows.append(
            [
                *map(str, key),
                complete,
                str(prefilled),
                str(generated),
                f"{fmt(j)} [{NOT_INFORMATIVE}]" if few else f"{fmt(j)} ± {fmt(half, 3)}",
                fmt(j / generated),
            ]
        )
    headers = [
        "request",
        *group_keys[1:],
        "turns measured",
        "prompt tokens prefilled",
        "tokens generated",
        "J/request",
        "J/generated token",
    ]
    note = (
        "Each turn is measured as its own case: it prefills the whole conversation so far "
        "(no KV-cache reuse between turns, as a stateless API call without prefix caching) "
        "and generates the reply. J/request sums the turns' mean energy per sequence; "
        "± combines the turns' 95% half-widths in quadrature (turns are independent "
        "measurements)."
    )
    return [
        Block("h2", "Agentic requests: energy per request"),
        Block("table", headers=headers, rows=rows),
        Block("p", note),
    ]


def _not_run(cases: list[dict[str, Any]]) -> list[Block]:
    if not cases:
        return []
    rows = []
    for c in cases:
        cfg = c.get("config") or {}
        w = cfg.get("workload") or {}
        rows.append(
            [
                c["case_id"],
                str(cfg.get("model", "")),
                str(cfg.get("precision", "")),
                str(w.get("batch_size", "")),
                str(w.get("prompt_tokens", "")),
            ]
        )
    note = (
        "Planned by the sweep but not measured yet (interrupted or still to run): rerun "
        "the same sweep to measure them; complete cases are skipped."
    )
    return [
        Block("h2", f"Cases not measured yet ({len(rows)})"),
        Block("table", headers=["case", "model", "precision", "batch", "prompt"], rows=rows),
        Block("p", note),
    ]


def _failed(data: dict[str, Any]) -> list[Block]:
    errors = data["failures"]
    if not errors:
        return []
    configs = {f["case_id"]: f.get("config", {}) for f in data["failed_runs"]}
    rows = []
    for cid, err in errors.items():
        c = configs.get(cid, {})
        w = c.get("workload", {})
        rows.append(
            [
                cid,
                str(c.get("model", "")),
                str(c.get("precision", "")),
                str(w.get("batch_size", "")),
                str(w.get("prompt_tokens", "")),
                err,
            ]
        )
    return [
        Block("h2", f"Failed cases ({len(rows)})"),
        Block(
            "table", headers=["case", "model", "precision", "batch", "prompt", "error"], rows=rows
        ),
    ]


def _reproduce(folder: Path, runs: list[dict[str, Any]]) -> list[Block]:
    import yaml

    from tokenwatt.results.folder import SWEEP_YAML

    blocks = [Block("h2", "Reproduce")]
    sweep_yaml = folder / SWEEP_YAML
    if sweep_yaml.is_file():
        blocks += [
            Block(
                "p",
                f"Run `tokenwatt sweep {SWEEP_YAML} --out NEW_FOLDER` with this "
                "sweep config (complete cases in a folder are skipped on reruns):",
            ),
            Block("code", sweep_yaml.read_text(encoding="utf-8")),
        ]
    configs: dict[str, Any] = {}
    for r in runs:
        configs.setdefault(r.get("case_id", "?"), r.get("config"))
    text = yaml.safe_dump({k: v for k, v in configs.items()}, sort_keys=False)
    blocks += [
        Block(
            "p",
            "Resolved config of every case (by case id; `tokenwatt run` takes "
            "any one of them as a config file):",
        ),
        Block("code", text),
    ]
    return blocks


# --- rendering ---------------------------------------------------------------------------------


def to_markdown(blocks: list[Block], out: Path) -> str:
    from tokenwatt.report.comparison import markdown_table, md_escape

    parts = []
    for b in blocks:
        if b.kind == "h1":
            parts.append(f"# {md_escape(b.text)}")
        elif b.kind == "h2":
            parts.append(f"## {md_escape(b.text)}")
        elif b.kind == "p":
            parts.append(_md_paragraph(b.text))
        elif b.kind == "table":
            parts.append(markdown_table(b.headers or [], b.rows or []))
        elif b.kind == "img" and b.path:
            rel = b.path.relative_to(out) if b.path.is_relative_to(out) else b.path
            parts.append(
                f"![{b.text}]({rel.as_posix()})\n\n_{b.text}. SVG: "
                f"[{rel.with_suffix('.svg').as_posix()}]"
                f"({rel.with_suffix('.svg').as_posix()})_"
            )
        elif b.kind == "code":
            fence = "`" * max(3, _longest_backtick_run(b.text) + 1)  # the text cannot close it
            parts.append(f"{fence}yaml\n{b.text.rstrip()}\n{fence}")
        elif b.kind == "details":
            parts.append(_details_markdown(b))
    return "\n\n".join(parts) + "\n"


def _details_markdown(b: Block) -> str:
    """A collapsed block (GitHub renders <details>); the body shown whole as a code block."""
    fence = "`" * max(3, _longest_backtick_run(b.body) + 1)
    return (f"<details><summary>{html.escape(b.text)}</summary>\n\n{fence}json\n"
            f"{b.body.rstrip()}\n{fence}\n\n</details>")  # fmt: skip


def _md_paragraph(text: str) -> str:
    """Our paragraphs keep their **bold** and `code`; names in them (a model in "no baseline
    for") cannot open HTML or a link outside code spans."""
    import re

    parts = re.split(r"(`[^`\n]+`)", text)
    esc = lambda s: html.escape(s, quote=False).replace("[", "\\[").replace("]", "\\]")  # noqa: E731
    return "".join(p if p.startswith("`") else esc(p) for p in parts)


def _longest_backtick_run(text: str) -> int:
    import re

    return max((len(m) for m in re.findall(r"`+", text)), default=0)


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid
#ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}pre{background:#f6f6f6;padding:1em;
overflow-x:auto;font-size:0.85em}img{max-width:100%}figure{margin:1.5em 0}
.wide{overflow-x:auto;max-width:100%}.wide table{margin:0.5em 0}.wide td{white-space:nowrap}
.wide td.long{white-space:normal;min-width:24em}details{margin:0.3em 0}
summary{cursor:pointer}details pre{margin:0.3em 0 0.8em}"""


def to_html(blocks: list[Block], title: str) -> str:
    e = html.escape
    body = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b.headers or [])
            rows = "".join("<tr>" + "".join(_cell_html(c) for c in r) + "</tr>"
                           for r in b.rows or [])  # fmt: skip
            body.append(_scrolling(f"<table><tr>{head}</tr>{rows}</table>"))
        elif b.kind == "img" and b.path:
            data = base64.b64encode(b.path.read_bytes()).decode()
            body.append(
                f'<figure><img alt="{e(b.text)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(b.text)}</figcaption></figure>"
            )
        elif b.kind == "code":
            body.append(f"<pre><code>{e(b.text)}</code></pre>")
        elif b.kind == "details":
            body.append(_details_html(b))
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


LONG_CELL = 60  # characters: a cell longer than this (an error, a path) may wrap


def _cell_html(c: Any) -> str:
    """A figure never breaks across lines ("0.0928 [0.0151, 0.17]" stays whole): the table
    scrolls instead; only long text wraps."""
    text = html.escape(str(c))
    return f'<td class="long">{text}</td>' if len(str(c)) > LONG_CELL else f"<td>{text}</td>"


def _scrolling(table: str) -> str:
    """A table wider than the page scrolls inside its own box, not the page."""
    return f'<div class="wide">{table}</div>'


def _details_html(b: Block) -> str:
    e = html.escape
    return f"<details><summary>{e(b.text)}</summary><pre><code>{e(b.body)}</code></pre></details>"


def _inline(text: str) -> str:
    """**bold** and `code` of our own paragraphs, everything else escaped."""
    import re

    s = html.escape(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)
