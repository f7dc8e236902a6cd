"""A missing optional extra is one line with the pip command, exit 2, before any work.

Each test hides the extra's module (a None entry in sys.modules makes `import` fail as if it
were not installed) and checks that nothing was written.
"""

import sys

import pytest

from tokenwatt._util.extras import installed, require
from tokenwatt.errors import MissingExtra


def _one_line_exit_2(r, extra):
    assert r.exit_code == 2, r.output
    assert r.output.strip().count("\n") == 0, r.output
    assert f"pip install 'tokenwatt[{extra}]'" in r.output
    assert "Traceback" not in r.output


def test_installed_sees_a_hidden_module(monkeypatch):
    assert installed("json")
    assert not installed("no_such_module_tokenwatt_xyz")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert not installed("matplotlib")
    with pytest.raises(MissingExtra, match=r"report needs matplotlib .*tokenwatt\[plots\]"):
        require("plots", "tokenwatt report")


@pytest.mark.parametrize("precision", ["int8-weight", "int4-weight", "mxfp4-emulated"])
def test_quantised_precision_without_torchao(monkeypatch, tmp_path, invoke, fast_args, precision):
    monkeypatch.setitem(sys.modules, "torchao", None)
    out = tmp_path / "o"
    r = invoke("run", *fast_args, "--precision", precision, "--device", "cpu", "--out", str(out))
    _one_line_exit_2(r, "quant")
    assert f"precision {precision} needs torchao" in r.output
    assert not out.exists()


def test_dtype_precisions_need_no_torchao(monkeypatch):
    """The check is for the precisions that need torchao only."""
    from tokenwatt.config import RunConfig
    from tokenwatt.engines.transformers import TransformersEngine

    monkeypatch.setitem(sys.modules, "torchao", None)
    for name in ("fp32", "bf16", "fp16"):
        TransformersEngine.check(RunConfig(precision=name), "cpu")  # no error
    with pytest.raises(MissingExtra):
        TransformersEngine.check(RunConfig(precision="int8-dynamic"), "cpu")


def test_report_without_matplotlib_makes_no_folder(monkeypatch, tmp_path, invoke):
    from synth_results import write_folder

    folder = write_folder(tmp_path / "r", [{"case_id": "a", "precision": "bf16", "batch_size": 1,
                                           "prompt_tokens": 8, "new_tokens": 6,
                                           "decode_j_per_token": 0.1}], trials=3)  # fmt: skip
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    out = tmp_path / "report-here"
    r = invoke("report", str(folder), "--out", str(out))
    _one_line_exit_2(r, "plots")
    assert not out.exists()
    assert not (folder / "report.md").exists() and not (folder / "figures").exists()


def test_report_of_a_folder_without_results_makes_no_out_folder(tmp_path, invoke):
    (tmp_path / "empty").mkdir()
    r = invoke("report", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2
    assert not (tmp_path / "o").exists()


def test_carbon_region_without_codecarbon(monkeypatch, tmp_path, invoke, fast_args):
    from tokenwatt.analysis import carbon

    carbon.codecarbon_catalogue.cache_clear()
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    try:
        out = tmp_path / "o"
        r = invoke("run", *fast_args, "--precision", "fp32", "--region", "DEU", "--out", str(out))
        _one_line_exit_2(r, "carbon")
        assert "carbon.region needs codecarbon" in r.output
        assert not out.exists()
    finally:
        monkeypatch.undo()
        carbon.codecarbon_catalogue.cache_clear()
