"""Output fidelity: teacher-forced top-1 agreement and KL against a same-weights reference."""

from __future__ import annotations

import pytest
import torch

from tokenwatt.config import RunConfig
from tokenwatt.errors import UserError
from tokenwatt.models.fidelity import compare, measure_fidelity, reference_precision
from tokenwatt.models.load import load_model
from tokenwatt.models.precision import apply_precision, base_dtype


def _cfg(precision: str, model: str = "preset:tiny-llama") -> RunConfig:
    return RunConfig(model=model, precision=precision, fidelity={"sequences": 2, "tokens": 12})


def _fidelity(precision: str, model: str = "preset:tiny-llama") -> dict:
    cfg = _cfg(precision, model)
    m = load_model(cfg.model, "cpu", base_dtype(precision, "cpu"), seed=cfg.workload.seed).model
    apply_precision(m, precision, "cpu")
    return measure_fidelity(cfg, m, "cpu")


def test_reference_against_itself_agrees_fully() -> None:
    f = _fidelity("fp32")
    assert f["fidelity_ref"] == "fp32"
    assert f["top1_agreement"] == 1.0
    assert f["kl_divergence"] == 0.0
    assert 0 < f["fidelity_ref_top1_prob"] < 1


def test_mxfp4_emulated_disagrees_with_positive_kl() -> None:
    f = _fidelity("mxfp4-emulated")
    assert f["top1_agreement"] < 1.0
    assert f["kl_divergence"] > 0.0


@pytest.mark.slow
def test_fidelity_ranks_precisions_on_tiny_moe() -> None:
    """KL grows as precision drops: bf16 < int8-weight < mxfp4 (same weights throughout)."""
    kl = {p: _fidelity(p, "preset:tiny-moe")["kl_divergence"]
          for p in ("bf16", "int8-weight", "mxfp4-emulated")}  # fmt: skip
    assert 0 < kl["bf16"] < kl["int8-weight"] < kl["mxfp4-emulated"]


def test_reference_precision_resolution() -> None:
    assert reference_precision("auto", "cpu") == "fp32"
    assert reference_precision("auto", "cuda:0") == "bf16"
    assert reference_precision("fp16", "cpu") == "fp16"
    with pytest.raises(UserError, match="fidelity.reference"):
        reference_precision("int8-weight", "cpu")


def test_compare_on_known_distributions() -> None:
    ref = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]]).log()
    test = torch.tensor([[[0.6, 0.3, 0.1], [0.5, 0.1, 0.4]]]).log()
    out = compare(ref, test)
    assert out["top1_agreement"] == 0.5
    expected = (ref.exp() * (ref - test)).sum(-1).mean().item()
    assert out["kl_divergence"] == pytest.approx(expected) and expected > 0
    assert out["fidelity_ref_top1_prob"] == pytest.approx(0.75)
