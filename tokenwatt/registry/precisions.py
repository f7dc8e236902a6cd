"""The precision registry: every fact about each precision, in one frozen entry.

After torchao's pattern (a config is a small frozen dataclass; a handler registered for it
applies it): the entries here are the facts, read by the config validation, the CLI help, the
supported-precision check, the physical floor and the fidelity code; the function that applies
each one is registered under the same name in `tokenwatt.models.precision`. This module imports
nothing heavy, so the config and the CLI can read it instantly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    """One precision.

    base_dtype: the torch dtype (by name) the model is built in before any quantisation.
    weight_bits, activation_bits: bits per weight value stored and per activation value the
        matmuls read (block scales excluded): W4A4 for MXFP4, W4A16 for NVFP4.
    compute_format: the number format the matmuls run in here (weight-only formats and the FP4
        emulation dequantise to bf16 first).
    native_format, native_scale_bits: what an emulated format would be on hardware that has it
        (the compute format, and scale bits per weight: one E8M0 byte per 32 values for MX).
    emulated: the format is emulated in software; its energy is the emulation's.
    devices: device types it runs on; min_cuda_capability: the NVIDIA compute capability the
        real kernels need (None: any).
    expert_scheme: how tokenwatt quantises MoE experts for it (None: experts stay as they are).
    how: one line for help texts and the README.
    """

    name: str
    base_dtype: str
    weight_bits: int
    activation_bits: int
    compute_format: str
    how: str
    native_format: str | None = None
    native_scale_bits: float = 0.0
    emulated: bool = False
    devices: tuple[str, ...] = ("cpu", "cuda")
    min_cuda_capability: tuple[int, int] | None = None
    expert_scheme: str | None = None

    @property
    def is_dtype(self) -> bool:
        """A plain dtype cast: no quantisation (the only kind that can be a fidelity reference)."""
        return self.expert_scheme is None and not self.emulated and self.weight_bits >= 16

    @property
    def native_compute_format(self) -> str:
        return self.native_format or self.compute_format

    @property
    def extra(self) -> str | None:
        """The optional extra it needs: every precision that is not a dtype cast uses torchao."""
        return None if self.is_dtype else "quant"


_ALL = [
    Precision("fp32", "float32", 32, 32, "fp32", "dtype cast"),
    Precision("bf16", "bfloat16", 16, 16, "bf16", "dtype cast"),
    Precision("fp16", "float16", 16, 16, "fp16", "dtype cast"),
    Precision(
        "int8-weight",
        "bfloat16",
        8,
        16,
        "bf16",
        "torchao Int8WeightOnlyConfig",
        expert_scheme="int8",
    ),  # fmt: skip
    Precision(
        "int8-dynamic",
        "bfloat16",
        8,
        8,
        "int8",
        "torchao Int8DynamicActivationInt8WeightConfig",
        expert_scheme="int8",
    ),  # fmt: skip
    Precision(
        "int4-weight", "bfloat16", 4, 16, "bf16", "torchao int4 weight-only", expert_scheme="int4"
    ),  # fmt: skip
    Precision(
        "fp8",
        "bfloat16",
        8,
        8,
        "fp8",
        "torchao Float8DynamicActivationFloat8WeightConfig (FP8 tensor cores)",
        devices=("cuda",),
        min_cuda_capability=(8, 9),
        expert_scheme="fp8",
    ),  # fmt: skip
    Precision(
        "mxfp4-emulated",
        "bfloat16",
        4,
        4,
        "bf16",
        "MXFP4 E2M1, 32-value blocks, E8M0 scales, quantise-dequantise in PyTorch",
        native_format="fp4",
        native_scale_bits=8 / 32,
        emulated=True,
        expert_scheme="mxfp4",
    ),  # fmt: skip
    Precision(
        "nvfp4-emulated",
        "bfloat16",
        4,
        16,
        "bf16",
        "NVFP4 E2M1, 16-value blocks, E4M3 scales + tensor scale, weight-only, emulated",
        native_format="fp4",
        native_scale_bits=8 / 16,
        emulated=True,
        expert_scheme="nvfp4",
    ),  # fmt: skip
]

PRECISIONS: dict[str, Precision] = {p.name: p for p in _ALL}
PRECISION_NAMES: tuple[str, ...] = tuple(PRECISIONS)
REFERENCE_NAMES: tuple[str, ...] = tuple(p.name for p in _ALL if p.is_dtype)
# "auto", the default: the precision that suits the device (see resolve).
AUTO = "auto"
PRECISION_CHOICES: tuple[str, ...] = (AUTO, *PRECISION_NAMES)


def resolve(name: str, device: str) -> str:
    """`auto` -> fp32 on a CPU, bf16 on a GPU; any other name as it is. Most CPUs have no
    native bf16/fp16 matmul, so there they run slower than fp32 (2.2x on a 2-vCPU EPYC)."""
    if name != AUTO:
        return name
    return "fp32" if str(device).split(":")[0] == "cpu" else "bf16"


def get(name: str) -> Precision:
    """The entry for `name`; KeyError for an unknown one (the config refuses those first)."""
    return PRECISIONS[name]


def unsupported_reason(
    name: str, device: str, cuda_capability: tuple[int, int] | None
) -> str | None:
    """Why `name` cannot run on `device` ("cpu", "cuda:0", ...), as the end of a one-line
    message ("needs ..."); None when it can. cuda_capability: the GPU's (major, minor)."""
    p = PRECISIONS[name]
    device_type = str(device).split(":")[0]
    if p.min_cuda_capability is not None:
        need = ".".join(map(str, p.min_cuda_capability))
        if device_type != "cuda" or cuda_capability is None:
            return (f"needs an NVIDIA GPU with compute capability >= {need} (Ada, Hopper, "
                    f"Blackwell); device {device!r} is not a CUDA GPU")  # fmt: skip
        if tuple(cuda_capability) < p.min_cuda_capability:
            cc = ".".join(map(str, cuda_capability))
            return (f"needs an NVIDIA GPU with compute capability >= {need} (Ada, Hopper, "
                    f"Blackwell); this GPU has {cc}")  # fmt: skip
    if device_type not in p.devices:
        return f"needs a {' or '.join(p.devices)} device; {device!r} has no kernel for it"
    return None
