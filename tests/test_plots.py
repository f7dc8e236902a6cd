"""plots: every figure is written as PNG and SVG, axes carry units, estimates say so."""

import json

import pytest
from synth_results import write_folder

from tokenwatt.analysis.compare import case_stats, ok_trials
from tokenwatt.report.plots import (
    pareto_front,
    plot_j_per_token_cases,
    plot_pareto,
    plot_power_trace,
    plot_vs,
)
from tokenwatt.results.load import load_results, load_summary


def _case(cid, prec, b, p, j, **kw):
    return {
        "case_id": cid,
        "precision": prec,
        "batch_size": b,
        "prompt_tokens": p,
        "new_tokens": 6,
        "decode_j_per_token": j,
        **kw,
    }


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("plots")
    cases = [
        _case(f"{p}{b}{c}", p, b, c, j / b + c / 1000, top1=t, kl=1 - t)
        for p, j, t in (
            ("bf16", 1.0, 1.0),
            ("int8-weight", 0.7, 0.96),
            ("nvfp4-emulated", 1.5, 0.9),
        )
        for b in (1, 4)
        for c in (8, 64)
    ]
    folder = write_folder(tmp_path / "r", cases, trials=3)
    stats = case_stats(ok_trials(load_results(folder), load_summary(folder)))
    runs = json.loads((folder / "run.json").read_text())["runs"]
    return stats, runs, tmp_path / "fig"


def _svg_text(fig):
    assert fig.png.stat().st_size > 1000 and fig.png.read_bytes()[:4] == b"\x89PNG"
    return fig.svg.read_text()


def test_j_per_token_bars_label_unit_and_estimate(grid):
    stats, _, out = grid
    svg = _svg_text(plot_j_per_token_cases(stats, out))
    assert "energy per generated token (J, estimate)" in svg
    assert "prefill" in svg and "decode" in svg and "95% CI" in svg


def test_vs_batch_and_context_one_line_per_precision(grid):
    stats, _, out = grid
    svg = _svg_text(plot_vs(stats, "batch_size", out))
    assert "batch size (sequences)" in svg and "decode energy per token (J, estimate)" in svg
    for p in ("bf16", "int8-weight", "nvfp4-emulated"):
        assert p in svg
    svg = _svg_text(plot_vs(stats, "prompt_tokens", out))
    assert "context length at decode start (prompt tokens)" in svg


def test_vs_is_skipped_when_x_does_not_vary(grid):
    stats, _, out = grid
    assert plot_vs(stats[stats["batch_size"] == "1"], "batch_size", out) is None


def test_pareto_front_and_plot(grid):
    pts = [(1.0, 1.0), (0.7, 0.96), (1.5, 0.9), (0.7, 0.5)]
    assert pareto_front(pts, higher_is_better=True) == [1, 0]
    assert pareto_front([(1, 0.1), (2, 0.0)], higher_is_better=False) == [0, 1]
    stats, _, out = grid
    svg = _svg_text(plot_pareto(stats, out))
    assert "top-1 agreement with the reference (fraction)" in svg


def test_pareto_skipped_without_fidelity(grid):
    stats, _, out = grid
    assert plot_pareto(stats.drop(columns=["top1_agreement", "kl_divergence"]), out) is None


def test_power_trace_fallback_says_phase_average(grid):
    _, runs, out = grid
    svg = _svg_text(plot_power_trace(runs[0], out))
    assert "phase-average power (no power trace recorded)" in svg
    assert "power (W, estimate)" in svg and "time since the trial started (s)" in svg
    assert "idle 2 W" in svg


def test_power_trace_from_samples_with_marks(tmp_path, monkeypatch):
    from tokenwatt.report import plots

    axes = []
    real_draw = plots._draw_trace

    def draw(ax, trial):
        axes.append(ax)
        return real_draw(ax, trial)

    monkeypatch.setattr(plots, "_draw_trace", draw)
    trace = [
        {"t_s": 10 + 0.01 * i, "channel": "gpu0", "joules": 3.0 * i, "power_w": None}
        for i in range(60)
    ]
    marks = [
        {"phase": "prefill", "t_s": 10.0},
        {"phase": "decode", "t_s": 10.1},
        {"phase": "end", "t_s": 10.5},
    ]
    run = {
        "trials": [{"trial": 0, "trace": trace, "marks": marks}],
        "idle_power_w": 70.0,
        "summary": {"measured": True},
        "config": {"precision": "bf16", "workload": {}},
    }
    fig = plot_power_trace(run, tmp_path)
    svg = _svg_text(fig)
    assert "power trace, trial 0" in svg and "power (W)" in svg and "estimate" not in svg
    assert "gpu0" in svg
    (ax,) = axes
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "gpu0"]
    # 3 J every 10 ms on the counter is 300 W, on a time axis that starts at the first mark
    assert list(line.get_ydata()) == pytest.approx([300.0] * 59)
    assert list(line.get_xdata()) == pytest.approx([0.01 * i for i in range(59)])
    spans = {p.get_label(): (p.get_x(), p.get_x() + p.get_width()) for p in ax.patches}
    assert spans["prefill"] == pytest.approx((0.0, 0.1))
    assert spans["decode"] == pytest.approx((0.1, 0.5))
    assert ax.get_ylim()[1] == pytest.approx(1.15 * 300.0)  # the peak, not the 70 W idle


@pytest.mark.parametrize("n", [2, 4, 9])
def test_case_labels_of_the_bar_chart_never_overlap(tmp_path, monkeypatch, n):
    import pandas as pd

    from tokenwatt.report import plots

    models = ["preset:qwen3-moe-30b-a3b", "preset:llama-3.1-8b", "preset:mixtral-8x7b"]
    precisions = ["nvfp4-emulated", "int8-dynamic", "bf16"]
    rows = [{"model": models[i % 3], "precision": precisions[i // 3 % 3], "batch_size": "1",
             "prefill_j_per_gen_token_mean": 0.01, "decode_j_per_gen_token_mean": 0.1 + i / 100,
             "total_j_per_token_mean": 0.11, "total_j_per_token_ci95_low": 0.1,
             "total_j_per_token_ci95_high": 0.12, "n_trials": 3, "measured": True}
            for i in range(n)]  # fmt: skip
    seen = {}
    real_save = plots._save

    def save(fig, folder, stem, title):
        fig.tight_layout()
        fig.canvas.draw()
        ax = fig.axes[0]
        seen["boxes"] = [t.get_window_extent() for t in ax.get_xticklabels()]
        seen["labels"] = [t.get_text() for t in ax.get_xticklabels()]
        seen["figure"] = fig.bbox
        return real_save(fig, folder, stem, title)

    monkeypatch.setattr(plots, "_save", save)
    assert plots.plot_j_per_token_cases(pd.DataFrame(rows), tmp_path) is not None
    boxes = seen["boxes"]
    assert len(boxes) == n and all("qwen3" in t or "llama" in t or "mixtral" in t
                                   for t in seen["labels"])  # fmt: skip
    for i in range(n - 1):
        assert not boxes[i].overlaps(boxes[i + 1]), (seen["labels"][i], seen["labels"][i + 1])
    assert all(b.x0 >= seen["figure"].x0 - 1 and b.y0 >= seen["figure"].y0 - 1 for b in boxes)


def test_error_bars_need_three_trials():
    from tokenwatt.report.plots import _yerr

    down, up = _yerr([1.0, 1.0], [0.9, -0.5], [1.1, 2.5], [2, 3])
    assert (down, up) == ([0.0, 1.0], [0.0, 1.5])  # n=2: none; n=3: never below 0
