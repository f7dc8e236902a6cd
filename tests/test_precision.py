"""Every precision runs on the tiny dense and MoE presets on CPU, or says what it needs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchao  # noqa: F401 - in the test extras: a missing torchao fails, never skips

from tokenwatt.errors import (
    PrecisionUnsupported,
    UserError,  # noqa: E402
)
from tokenwatt.models.load import load_model  # noqa: E402
from tokenwatt.models.moe import expert_modules, track_routing  # noqa: E402
from tokenwatt.models.precision import (  # noqa: E402
    apply_precision,
    base_dtype,
    check_supported,
    weight_bytes,
)
from tokenwatt.registry.precisions import PRECISION_NAMES  # noqa: E402

MODELS = ["preset:tiny-llama", "preset:tiny-moe"]
_BF16_BYTES: dict[str, int] = {}
IDS = torch.randint(0, 4096, (1, 8), generator=torch.Generator().manual_seed(0))


def _build(spec: str, precision: str):
    model = load_model(spec, "cpu", base_dtype(precision, "cpu"), seed=0).model
    return model, apply_precision(model, precision, "cpu")


@pytest.mark.parametrize("spec", MODELS)
@pytest.mark.parametrize("precision", [p for p in PRECISION_NAMES if p != "fp8"])
def test_precision_runs_on_cpu(spec: str, precision: str) -> None:
    model = load_model(spec, "cpu", base_dtype(precision, "cpu"), seed=0).model
    experts = expert_modules(model)
    before = experts[0][1].down_proj.detach().clone() if experts else None
    rep = apply_precision(model, precision, "cpu")
    with torch.inference_mode(), track_routing(model) as routing:
        logits = model(IDS).logits
    assert torch.isfinite(logits.float()).all()
    assert rep.precision == precision and rep.precision_backend
    assert rep.weight_bytes == weight_bytes(model) > 0
    bf16_bytes = _BF16_BYTES.setdefault(
        spec, weight_bytes(load_model(spec, "cpu", torch.bfloat16).model)
    )
    dtype_only = precision in ("fp32", "bf16", "fp16")
    if dtype_only:
        assert rep.precision_backend == "torch-dtype" and rep.quantized_param_fraction == 0
    else:  # codes + scales; part of the model (embeddings, odd shapes) stays bf16
        assert 0.5 < rep.quantized_param_fraction <= 1.0
        assert rep.weight_bytes < 0.75 * bf16_bytes
    if precision == "fp32":
        assert rep.weight_bytes > 1.9 * bf16_bytes
    emulated = precision.endswith("-emulated")
    assert rep.emulated == emulated
    assert ("fp4-emulated" in rep.precision_backend) == emulated
    if experts:  # tiny-moe: routing went through the (quantised) experts
        assert sum(routing["routing_decode_tokens_per_expert"][0]) == IDS.numel() * 2
        # every precision, the dtype casts too, runs the experts through the same loop
        assert rep.detail["experts_impl"] == "tokenwatt-loop"
    if experts and not dtype_only:  # the experts themselves were quantised, not skipped
        assert "experts:" in rep.precision_backend and rep.quantized_param_fraction > 0.9
        stored = experts[0][1]._tokenwatt_qexperts["down_proj"]
        assert stored.qdata.dtype in (torch.int8, torch.uint8)
        assert not torch.equal(stored.dequantize(), before)
    if emulated and experts:
        assert rep.weight_bytes < 0.4 * bf16_bytes  # experts (93% of it) at ~4.5 bits


@pytest.mark.parametrize("spec", MODELS)
def test_fp8_on_cpu_fails_in_one_line_naming_the_hardware(spec: str) -> None:
    model = load_model(spec, "cpu", torch.bfloat16).model
    with pytest.raises(PrecisionUnsupported) as e:
        apply_precision(model, "fp8", "cpu")
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg
    assert "compute capability >= 8.9" in msg and "GPU" in msg


def test_check_supported_before_loading() -> None:
    with pytest.raises(PrecisionUnsupported, match="8.9"):
        check_supported("fp8", "cpu")
    with pytest.raises(UserError, match="unknown"):
        check_supported("fp3", "cpu")
    check_supported("mxfp4-emulated", "cpu")


def test_precisions_leave_inductor_config_alone() -> None:
    import torch._inductor.config as ic

    before = ic.get_config_copy()
    for p in ("int8-weight", "int8-dynamic", "int4-weight"):
        _build("preset:tiny-llama", p)
    assert ic.get_config_copy() == before


def test_precision_names_import_without_torch() -> None:
    code = (
        "import sys, tokenwatt.models.precision, tokenwatt.registry.precisions as p; "
        "print(p.PRECISION_NAMES); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_auto_precision_suits_the_device():
    from tokenwatt.config import load_config
    from tokenwatt.registry.precisions import resolve

    assert load_config(None).precision == "auto"  # the quickstart
    assert load_config(None, precision=None).precision == "auto"
    assert (resolve("auto", "cpu"), resolve("auto", "cuda"), resolve("auto", "cuda:1")) == (
        "fp32", "bf16", "bf16")  # fmt: skip
    assert resolve("fp16", "cpu") == "fp16"
