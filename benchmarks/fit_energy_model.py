"""Fit the energy model (tokenwatt/analysis/energy_model.py) on published measurements and
write what it stores and what the docs show:

    python benchmarks/fit_energy_model.py           # fit, validate, write the three outputs
    python benchmarks/fit_energy_model.py --check   # exit 1 when a stored output is stale

Inputs: tokenwatt/data/calibration/*.csv (published rows with their source; see the files'
`covers` column for what each figure includes). Rows whose model has no preset or whose board
has no hardware profile stay in the validation table as `not-modelled`.

Method: least squares on log(predicted / measured) J per output token and tokens/s (the
throughput pins the step time, so energy = power x time is not fitted as one lump). The
stored parameters come from a fit on every modelled row. Leave-one-model-out (every row of one
model held out, the rest fitted) gives each row a held-out prediction; the printed interval is
the 5th-95th percentile of those held-out ratios, and its coverage is checked the same way
(each model's rows against an interval sized without that model).

Outputs: tokenwatt/data/energy_model.yaml (parameters, interval, summary),
benchmarks/results/energy_model_validation.csv (every row: measured, fitted, held out) and the
generated block of docs/energy-model.md.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT / "tokenwatt" / "data" / "calibration"
PARAMS = ROOT / "tokenwatt" / "data" / "energy_model.yaml"
TABLE = ROOT / "benchmarks" / "results" / "energy_model_validation.csv"
DOC = ROOT / "docs" / "energy-model.md"
BEGIN, END = "<!-- energy-model-validation:begin -->", "<!-- energy-model-validation:end -->"
START = dict(eta_mem=0.6, eta_cmp=0.4, overhead_per_layer_s=5e-5, overhead_per_sequence_s=1e-4,
             allreduce_latency_s=2e-5, idle_power_fraction=0.15, mem_power_fraction=0.5,
             cmp_power_fraction=0.5)  # fmt: skip
BOUNDS = dict(eta_mem=(0.05, 1.0), eta_cmp=(0.02, 1.0), overhead_per_layer_s=(1e-7, 1e-2),
              overhead_per_sequence_s=(1e-7, 1e-2), allreduce_latency_s=(1e-7, 1e-2),
              idle_power_fraction=(0.02, 0.6), mem_power_fraction=(0.01, 1.5),
              cmp_power_fraction=(0.01, 1.5))  # fmt: skip
THROUGHPUT_WEIGHT = 1.0
TARGET_MEDIAN, TARGET_WORST, TARGET_COVERAGE = math.log(1.5), math.log(3.0), 0.80
OUT_COLUMNS = ("source_file", "model", "preset", "hardware", "precision", "boards", "tp", "pp",
               "avg_batch", "prompt_tokens", "output_tokens", "measured_j_per_token",
               "measured_tokens_per_s", "fitted_j_per_token", "fitted_ratio",
               "heldout_j_per_token", "heldout_ratio", "heldout_tokens_per_s",
               "interval_low_j_per_token", "interval_high_j_per_token", "in_interval",
               "status")  # fmt: skip


def load_rows() -> list[dict[str, Any]]:
    rows = []
    for path in sorted(CALIBRATION.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    return rows


def build_terms(rows: list[dict[str, Any]]) -> list[Any]:
    """Each row's roofline terms (None: not modelled: no preset or no hardware profile)."""
    sys.path.insert(0, str(ROOT))
    from tokenwatt.analysis.energy_model import workload_terms
    from tokenwatt.analysis.floor import inventory_info, load_hardware
    from tokenwatt.models.inventory import model_shapes

    profiles = load_hardware()
    shapes: dict[tuple[str, str], Any] = {}
    out = []
    for r in rows:
        if not r["preset"] or r["hardware"] not in profiles:
            out.append(None)
            continue
        key = (r["preset"], r["precision"])
        if key not in shapes:
            inv, cfg = model_shapes(f"preset:{r['preset']}")
            shapes[key] = (cfg, inventory_info(inv, r["precision"]))
        cfg, info = shapes[key]
        out.append(
            workload_terms(
                cfg,
                info,
                r["precision"],
                float(r["avg_batch"]),
                float(r["prompt_tokens"]),
                float(r["output_tokens"]),
                profiles[r["hardware"]],
                tp=int(r["tp"]),
                pp=int(r["pp"]),
            )
        )
    return out


def fit(rows: list[dict[str, Any]], terms: list[Any]) -> Any:
    """Least-squares parameters on the given rows (log J/token and log tokens/s residuals)."""
    import numpy as np
    from scipy.optimize import least_squares

    from tokenwatt.analysis.energy_model import PARAM_NAMES, Params, predict

    lo = np.log([BOUNDS[k][0] for k in PARAM_NAMES])
    hi = np.log([BOUNDS[k][1] for k in PARAM_NAMES])
    x0 = np.log([START[k] for k in PARAM_NAMES])
    meas_j = np.log([float(r["j_per_output_token"]) for r in rows])
    meas_t = np.log([float(r["tokens_per_s"]) for r in rows])

    def residuals(x: Any) -> Any:
        p = Params(*np.exp(x))
        preds = [predict(t, p) for t in terms]
        rj = np.log([q.j_per_token for q in preds]) - meas_j
        rt = np.log([q.tokens_per_s for q in preds]) - meas_t
        return np.concatenate([rj, THROUGHPUT_WEIGHT * rt])

    res = least_squares(residuals, x0, bounds=(lo, hi), x_scale=1.0, max_nfev=400)
    return Params(*np.exp(res.x))


def run() -> tuple[str, str, str]:
    """(params YAML, validation CSV, docs block) from the calibration data."""
    import numpy as np

    from tokenwatt.analysis.energy_model import PARAM_NAMES, predict

    rows = load_rows()
    terms = build_terms(rows)
    idx = [i for i, t in enumerate(terms) if t is not None]
    fitted = fit([rows[i] for i in idx], [terms[i] for i in idx])
    models = sorted({rows[i]["model"] for i in idx})
    heldout: dict[int, Any] = {}
    for m in models:
        train = [i for i in idx if rows[i]["model"] != m]
        p = fit([rows[i] for i in train], [terms[i] for i in train])
        for i in idx:
            if rows[i]["model"] == m:
                heldout[i] = predict(terms[i], p)
    logr = {i: math.log(heldout[i].j_per_token / float(rows[i]["j_per_output_token"]))
            for i in idx}  # fmt: skip
    # Interval: multiply a prediction by exp(q05 .. q95) of log(measured / held-out predicted).
    meas_over_pred = np.array([-logr[i] for i in idx])
    q_lo, q_hi = np.quantile(meas_over_pred, [0.05, 0.95])
    inside = {}
    for m in models:  # nested: each model's rows against an interval sized without it
        others = np.array([-logr[i] for i in idx if rows[i]["model"] != m])
        a, b = np.quantile(others, [0.05, 0.95])
        for i in idx:
            if rows[i]["model"] == m:
                inside[i] = bool(a <= -logr[i] <= b)
    absr = np.abs([logr[i] for i in idx])
    worst = max(idx, key=lambda i: abs(logr[i]))
    summary = {
        "rows_published": len(rows), "rows_modelled": len(idx),
        "rows_not_modelled": len(rows) - len(idx), "models_held_out": len(models),
        "heldout_median_abs_log_ratio": float(np.median(absr)),
        "heldout_median_ratio_factor": float(math.exp(np.median(absr))),
        "heldout_worst_ratio": float(math.exp(logr[worst])),
        "heldout_worst_row": f"{rows[worst]['model']} {rows[worst]['hardware']} "
                             f"{rows[worst]['source_file'].rsplit('/', 1)[-1]}",
        "heldout_interval_coverage": float(np.mean([inside[i] for i in idx])),
        "meets_median_target": bool(np.median(absr) <= TARGET_MEDIAN),
        "meets_worst_target": bool(absr.max() <= TARGET_WORST),
        "meets_coverage_target": bool(np.mean([inside[i] for i in idx]) >= TARGET_COVERAGE),
    }  # fmt: skip
    summary.update(_board_out(rows, terms, idx))
    release = _release_check(fitted, math.exp(q_lo), math.exp(q_hi))
    summary.update(release[0])
    table = _table(rows, terms, fitted, heldout, logr, inside, q_lo, q_hi)
    params = _params_yaml(fitted, PARAM_NAMES, q_lo, q_hi, rows, idx, summary)
    return params, table, _doc_block(summary, table, fitted, q_lo, q_hi, release[1])


def _board_out(rows: list[dict[str, Any]], terms: list[Any], idx: list[int]) -> dict[str, Any]:
    """Leave-one-board-out: fit on the other boards' rows, predict this board's (how far the
    datasheet figures carry the model to a board without data)."""
    from tokenwatt.analysis.energy_model import predict

    out: dict[str, Any] = {}
    for hw in sorted({rows[i]["hardware"] for i in idx}):
        train = [i for i in idx if rows[i]["hardware"] != hw]
        test = [i for i in idx if rows[i]["hardware"] == hw]
        p = fit([rows[i] for i in train], [terms[i] for i in train])
        r = [predict(terms[i], p).j_per_token / float(rows[i]["j_per_output_token"]) for i in test]
        logs = sorted(abs(math.log(x)) for x in r)
        out[f"board_out_{hw}_median_ratio_factor"] = float(math.exp(logs[len(logs) // 2]))
        out[f"board_out_{hw}_worst_ratio"] = float(max(r, key=lambda x: abs(math.log(x))))
    return out


def _release_check(fitted: Any, low: float, high: float) -> tuple[dict[str, Any], list[str]]:
    """The rows of another release (calibration/heldout/*.csv), never fitted: predicted with
    the stored parameters. Returns summary figures and the docs table's lines."""
    from tokenwatt.analysis.energy_model import predict, workload_terms
    from tokenwatt.analysis.floor import inventory_info, load_hardware
    from tokenwatt.models.inventory import model_shapes

    rows = []
    for path in sorted((CALIBRATION / "heldout").glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    if not rows:
        return {"release_rows": 0}, []
    lines = [
        "| model | board | batch | measured J/token | predicted | ratio | measured W | "
        "predicted W | in interval |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios, inside = [], 0
    for r in rows:
        inv, cfg = model_shapes(f"preset:{r['preset']}")
        t = workload_terms(cfg, inventory_info(inv, r["precision"]), r["precision"],
                           float(r["avg_batch"]), float(r["prompt_tokens"]),
                           float(r["output_tokens"]), load_hardware()[r["hardware"]],
                           tp=int(r["tp"]), pp=int(r["pp"]))  # fmt: skip
        q = predict(t, fitted)
        meas = float(r["j_per_output_token"])
        ratio = q.j_per_token / meas
        ok = bool(low <= meas / q.j_per_token <= high)
        ratios.append(ratio)
        inside += ok
        lines.append(f"| {r['model']} | {r['hardware']} | {r['avg_batch']} | {meas:.3g} | "
                     f"{q.j_per_token:.3g} | {ratio:.2f} | {r['avg_power_w']} | "
                     f"{q.board_power_w:.0f} | {'yes' if ok else 'no'} |")  # fmt: skip
    logs = sorted(abs(math.log(x)) for x in ratios)
    summary = {"release_rows": len(rows),
               "release_median_ratio_factor": float(math.exp(logs[len(logs) // 2])),
               "release_in_interval": int(inside)}  # fmt: skip
    return summary, lines


def _table(rows: list[dict[str, Any]], terms: list[Any], fitted: Any, heldout: dict[int, Any],
           logr: dict[int, float], inside: dict[int, bool], q_lo: float,
           q_hi: float) -> str:  # fmt: skip
    from tokenwatt.analysis.energy_model import predict

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=OUT_COLUMNS, lineterminator="\n")
    w.writeheader()
    for i, r in enumerate(rows):
        meas = float(r["j_per_output_token"])
        out: dict[str, Any] = {k: r.get(k, "") for k in OUT_COLUMNS}
        out.update(measured_j_per_token=_g(meas),
                   measured_tokens_per_s=_g(float(r["tokens_per_s"])))  # fmt: skip
        if terms[i] is None:
            out["status"] = "not-modelled (no preset)" if not r["preset"] else "not-modelled"
        else:
            f = predict(terms[i], fitted).j_per_token
            h = heldout[i]
            out.update(
                fitted_j_per_token=_g(f), fitted_ratio=_g(f / meas),
                heldout_j_per_token=_g(h.j_per_token), heldout_ratio=_g(math.exp(logr[i])),
                heldout_tokens_per_s=_g(h.tokens_per_s),
                interval_low_j_per_token=_g(h.j_per_token * math.exp(q_lo)),
                interval_high_j_per_token=_g(h.j_per_token * math.exp(q_hi)),
                in_interval=inside[i], status="held-out (leave-one-model-out)",
            )  # fmt: skip
        w.writerow(out)
    return buf.getvalue()


def _g(v: float) -> str:
    return f"{v:.4g}"


def _params_yaml(fitted: Any, names: tuple[str, ...], q_lo: float, q_hi: float,
                 rows: list[dict[str, Any]], idx: list[int],
                 summary: dict[str, Any]) -> str:  # fmt: skip
    import yaml

    data = {
        "params": {k: float(f"{getattr(fitted, k):.6g}") for k in names},
        "interval": {"low_factor": float(f"{math.exp(q_lo):.4g}"),
                     "high_factor": float(f"{math.exp(q_hi):.4g}"), "coverage": 0.9,
                     "basis": "5th-95th percentile of measured / held-out predicted J per "
                              "output token, leave-one-model-out"},
        "calibration": {
            "source": "; ".join(sorted({rows[i]["source"] for i in idx})),
            "files": sorted(p.name for p in CALIBRATION.glob("*.csv")),
            "hardware": sorted({rows[i]["hardware"] for i in idx}),
            "precisions": sorted({rows[i]["precision"] for i in idx}),
            "engine": "; ".join(sorted({rows[i]["engine"] for i in idx})),
            "covers": "; ".join(sorted({rows[i]["covers"] for i in idx})),
        },
        "validation": {k: (float(f"{v:.4g}") if isinstance(v, float) else v)
                       for k, v in summary.items()},
    }  # fmt: skip
    head = (
        "# Written by benchmarks/fit_energy_model.py from tokenwatt/data/calibration/*.csv:"
        " do not edit.\n# The energy model's fitted parameters (analysis/energy_model.py)"
        " and the interval sized from its held-out errors.\n"
    )
    return head + yaml.safe_dump(data, sort_keys=False, width=100)


def _doc_block(summary: dict[str, Any], table: str, fitted: Any, q_lo: float,
               q_hi: float, release: list[str]) -> str:  # fmt: skip
    s = summary

    def yes(ok: bool) -> str:
        return "yes" if ok else "**no**"

    lines = [
        BEGIN,
        "<!-- generated by benchmarks/fit_energy_model.py; tests/test_energy_model.py holds "
        "it to the stored result -->",
        "",
        f"{s['rows_published']} published rows, {s['rows_modelled']} modelled "
        f"({s['rows_not_modelled']} not: no preset for the model), {s['models_held_out']} "
        "models, each held out in turn (leave-one-model-out).",
        "",
        "| held-out figure | value | target | met |",
        "|---|---|---|---|",
        f"| median \\|log(predicted / measured)\\| | {s['heldout_median_abs_log_ratio']:.3f} "
        f"(a factor {s['heldout_median_ratio_factor']:.2f}) | <= log(1.5) = 0.405 | "
        f"{yes(s['meets_median_target'])} |",
        f"| worst row (predicted / measured) | {s['heldout_worst_ratio']:.2f} "
        f"({s['heldout_worst_row']}) | within 3x | {yes(s['meets_worst_target'])} |",
        f"| rows inside the printed interval | {s['heldout_interval_coverage']:.1%} | >= 80% | "
        f"{yes(s['meets_coverage_target'])} |",
        "",
        f"Interval printed by `tokenwatt estimate`: x{math.exp(q_lo):.2f} to "
        f"x{math.exp(q_hi):.2f} of the prediction.",
        "",
        "Fitted parameters (every modelled row): " + ", ".join(
            f"{k} = {v:.3g}" for k, v in vars(fitted).items()) + ".",
        "",
        "Leave-one-board-out (fit on the other board's rows, predict this board's): "
        + "; ".join(
            f"{k.removeprefix('board_out_').removesuffix('_median_ratio_factor')} median "
            f"factor {v:.2f}, worst {s[k.replace('median_ratio_factor', 'worst_ratio')]:.2f}"
            for k, v in s.items() if k.endswith("_median_ratio_factor")
            and k.startswith("board_out_")) + ".",
        "",
        *_release_lines(s, release),
        "Per model (held out): median and worst predicted / measured over its rows.",
        "",
        "| model | board | rows | median ratio | worst ratio | in interval |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in csv.DictReader(io.StringIO(table)):
        groups.setdefault((r["model"], r["hardware"]), []).append(r)
    for (model, hw), rs in sorted(groups.items()):
        done = [r for r in rs if r["heldout_ratio"]]
        if not done:
            lines.append(f"| {model} | {hw} | {len(rs)} | not modelled | | |")
            continue
        ratios = sorted(float(r["heldout_ratio"]) for r in done)
        worst = max(ratios, key=lambda v: abs(math.log(v)))
        med = ratios[len(ratios) // 2]
        n_in = sum(r["in_interval"] == "True" for r in done)
        lines.append(f"| {model} | {hw} | {len(done)} | {med:.2f} | {worst:.2f} | "
                     f"{n_in}/{len(done)} |")  # fmt: skip
    lines += ["", "Every row: benchmarks/results/energy_model_validation.csv.", END]
    return "\n".join(lines)


def _release_lines(s: dict[str, Any], release: list[str]) -> list[str]:
    if not release:
        return ["Another release (ML.ENERGY v3): no rows in calibration/heldout.", ""]
    met = s["release_median_ratio_factor"] <= 1.5 and s["release_in_interval"] >= 0.8 * len(
        release[2:]
    )
    return [
        f"Another release, never fitted (calibration/heldout: ML.ENERGY v3.0, vLLM 0.11.1; "
        f"{s['release_rows']} rows, lengths approximated): median factor "
        f"{s['release_median_ratio_factor']:.2f}, {s['release_in_interval']} of "
        f"{s['release_rows']} inside the interval; generalisation across releases met: "
        f"{'yes' if met else '**no**'}.",
        "",
        *release,
        "",
    ]


def splice(doc: str, block: str) -> str:
    a, b = doc.find(BEGIN), doc.find(END)
    if a < 0 or b < 0:
        raise SystemExit(f"{DOC}: no {BEGIN} ... {END} markers")
    return doc[:a] + block + doc[b + len(END) :]


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a stored output is stale")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from _record import Record

    rec = Record()
    params, table, block = run()
    doc = splice(DOC.read_text(encoding="utf-8"), block)
    outputs = ((PARAMS, params), (TABLE, table), (DOC, doc))
    if args.check:
        stale = [p for p, text in outputs
                 if not p.is_file() or p.read_text(encoding="utf-8") != text]  # fmt: skip
        for p in stale:
            print(f"{p.relative_to(ROOT)} is stale: run python benchmarks/fit_energy_model.py",
                  file=sys.stderr)  # fmt: skip
        return 1 if stale else 0
    for p, text in outputs:
        p.write_text(text, encoding="utf-8")
        print(f"wrote {p.relative_to(ROOT)}")
    rec.write(TABLE.parent, "energy_model_validation", [TABLE.name])
    print(block.split("\n\n", 2)[1] if "\n\n" in block else block)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
