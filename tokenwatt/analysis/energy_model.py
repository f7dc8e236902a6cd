"""The energy model: what a generated token will cost on hardware one does not have.

Built on the roofline the floor computes (analysis/floor.py: the bytes of weights a decode step
reads, MoE experts touched included, each sequence's KV cache, the FLOPs), with the parts the
floor leaves out on purpose: kernels run below the peaks, engines spend time outside the GPU's
work, and boards draw static and idle power over all of it. For a step of B sequences on K
boards (tensor parallel, layers split P ways by a pipeline):

    t_mem  = (weight bytes + B x KV bytes) / (K x bandwidth)
    t_cmp  = B x FLOPs/token / (K x peak FLOP/s)                 (decode)
    t_pre  = B x (prompt/new) x FLOPs/prompt token / (K x peak)  (prefill admitted per step)
    t_comm = 2 x layers x (latency + 2 (K-1)/K x B x (1 + prompt/new) x hidden x 2 bytes
             / (interconnect / 2))                               (K > 1 only, per TP group)
    t_step = t_mem / eta_mem + (t_cmp + t_pre) / eta_cmp + t_comm
             + layers x overhead_per_layer + B x overhead_per_sequence
    power  = TDP x min(1, idle + mem_power x u_mem + cmp_power x u_cmp)   per board,
             u_mem = t_mem / eta_mem / t_step, u_cmp = (t_cmp + t_pre) / eta_cmp / t_step
    J/generated token = K x power x t_step / B,   tokens/s = B / t_step

The eight parameters (eta_mem, eta_cmp, overhead_per_layer, overhead_per_sequence,
allreduce_latency, idle, mem_power, cmp_power) are fitted by benchmarks/fit_energy_model.py on
published measurements (data/calibration) and stored with their validation in
data/energy_model.yaml; the hardware numbers come from data/hardware.yaml with their sources.
Every figure here is a prediction, labelled `estimate-model`, never a measurement.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from tokenwatt.analysis.floor import Hardware, model_floor, moe_shape
from tokenwatt.errors import ConfigError
from tokenwatt.registry.precisions import PRECISIONS

LABEL = "estimate-model"
PARAMS_FILE = "data/energy_model.yaml"
PARAM_NAMES = ("eta_mem", "eta_cmp", "overhead_per_layer_s", "overhead_per_sequence_s",
               "allreduce_latency_s", "idle_power_fraction", "mem_power_fraction",
               "cmp_power_fraction")  # fmt: skip
ACTIVATION_BYTES = 2.0  # bf16 activations exchanged between tensor-parallel boards
# A profile without interconnect_bytes_per_s: PCIe Gen4 x16 (64 GB/s both directions, PCI-SIG
# PCIe 4.0 specification), the slowest link a data-centre board has; the output says so.
UNKNOWN_INTERCONNECT = 6.4e10


@dataclass(frozen=True)
class Params:
    eta_mem: float  # achieved fraction of peak memory bandwidth
    eta_cmp: float  # achieved fraction of peak FLOP/s
    overhead_per_layer_s: float  # per layer and step: launches, synchronisation
    overhead_per_sequence_s: float  # per sequence and step: the engine's scheduling, sampling
    allreduce_latency_s: float  # per all-reduce between tensor-parallel boards
    idle_power_fraction: float  # board power with nothing to do, over TDP
    mem_power_fraction: float  # added at full memory utilisation, over TDP
    cmp_power_fraction: float  # added at full compute utilisation, over TDP


@dataclass(frozen=True)
class Terms:
    """A workload's roofline terms, per step, independent of the fitted parameters."""

    batch: float
    boards: int
    tp: int
    layers: int
    hidden: int
    prompt_over_new: float
    t_mem_s: float
    t_cmp_s: float
    t_pre_s: float
    interconnect_bytes_per_s: float | None
    tdp_w: float
    flops_per_prompt_token: float
    peak_flops_per_s: float


@dataclass(frozen=True)
class Prediction:
    j_per_token: float  # steady state: decode + the prefill admitted, per generated token
    decode_j_per_token: float  # decode steps alone
    prefill_j_per_prompt_token: float
    tokens_per_s: float
    decode_tokens_per_s: float
    step_s: float
    board_power_w: float  # average per board
    boards: int


def workload_terms(config: dict[str, Any], info: dict[str, Any], precision: str, batch: float,
                   prompt_tokens: float, new_tokens: float, hardware: Hardware, tp: int = 1,
                   pp: int = 1) -> Terms:  # fmt: skip
    """The roofline of one step on tp x pp boards, from the floor's own accounting (emulated
    formats priced as their hardware would run them natively)."""
    boards = max(1, tp) * max(1, pp)
    b = max(1, round(batch))
    fl, w = model_floor(config, info, precision, b, prompt_tokens, new_tokens, hardware,
                        native=True)  # fmt: skip
    entry = PRECISIONS.get(precision)
    fmt = (
        entry.native_compute_format
        if entry and entry.emulated
        else (entry.compute_format if entry else "bf16")
    )
    _, comp = hardware.compute(fmt)
    # Prefill: every prompt token multiplies the active weights, attention at half the prompt.
    pre, _ = model_floor(config, info, precision, b, 0, max(prompt_tokens, 2), hardware,
                         native=True)  # fmt: skip
    c = config.get("text_config") if "num_hidden_layers" not in config else config
    c = c or config
    bw = hardware.memory_bandwidth_bytes_per_s * boards
    peak = comp.peak_flops_per_s * boards
    p_over_n = float(prompt_tokens) / max(float(new_tokens), 1.0)
    return Terms(
        batch=float(batch), boards=boards, tp=max(1, tp), layers=int(c["num_hidden_layers"]),
        hidden=int(c["hidden_size"]), prompt_over_new=p_over_n,
        t_mem_s=fl.bytes_per_token * b / bw, t_cmp_s=fl.flops_per_token * batch / peak,
        t_pre_s=pre.flops_per_token * batch * p_over_n / peak,
        interconnect_bytes_per_s=hardware.interconnect_bytes_per_s, tdp_w=hardware.tdp_w,
        flops_per_prompt_token=pre.flops_per_token, peak_flops_per_s=peak,
    )  # fmt: skip


def _comm_s(t: Terms, p: Params, tokens_per_step: float) -> float:
    if t.tp <= 1:
        return 0.0
    link = (t.interconnect_bytes_per_s or UNKNOWN_INTERCONNECT) / 2  # one direction
    ring = 2 * (t.tp - 1) / t.tp * tokens_per_step * t.hidden * ACTIVATION_BYTES / link
    return 2 * t.layers * (p.allreduce_latency_s + ring)


def _power(t: Terms, p: Params, u_mem: float, u_cmp: float) -> float:
    frac = p.idle_power_fraction + p.mem_power_fraction * u_mem + p.cmp_power_fraction * u_cmp
    return t.tdp_w * min(1.0, frac)


def predict(t: Terms, p: Params) -> Prediction:
    """The model's figures for one workload's terms."""
    b = t.batch
    mem, cmp, pre = t.t_mem_s / p.eta_mem, t.t_cmp_s / p.eta_cmp, t.t_pre_s / p.eta_cmp
    fixed = t.layers * p.overhead_per_layer_s + b * p.overhead_per_sequence_s
    step = mem + cmp + pre + fixed + _comm_s(t, p, b * (1 + t.prompt_over_new))
    power = _power(t, p, mem / step, (cmp + pre) / step)
    dstep = mem + cmp + fixed + _comm_s(t, p, b)
    dpower = _power(t, p, mem / dstep, cmp / dstep)
    # Prefill alone: compute-bound, the weights read once per batch of prompts.
    ptok = b * max(t.prompt_over_new, 1e-9)
    pstep = t.flops_per_prompt_token * ptok / t.peak_flops_per_s / p.eta_cmp
    pstep_all = pstep + t.t_mem_s / p.eta_mem + t.layers * p.overhead_per_layer_s
    ppower = _power(t, p, (t.t_mem_s / p.eta_mem) / pstep_all, pstep / pstep_all)
    return Prediction(
        j_per_token=t.boards * power * step / b,
        decode_j_per_token=t.boards * dpower * dstep / b,
        prefill_j_per_prompt_token=t.boards * ppower * pstep_all / ptok,
        tokens_per_s=b / step,
        decode_tokens_per_s=b / dstep,
        step_s=step,
        board_power_w=power,
        boards=t.boards,
    )


# ---------------------------------------------------------------- the stored fit


@dataclass(frozen=True)
class Fit:
    params: Params
    interval_low: float  # multiply a prediction by these for the interval (held-out errors)
    interval_high: float
    interval_coverage: float  # the share of held-out rows the interval was sized to hold
    calibrated_hardware: tuple[str, ...]
    calibrated_precisions: tuple[str, ...]
    source: str
    engine: str
    validation: dict[str, Any]


def params_path() -> str:
    return str(resources.files("tokenwatt").joinpath(PARAMS_FILE))


@lru_cache(maxsize=1)
def stored_fit() -> Fit:
    """The parameters and interval benchmarks/fit_energy_model.py stored."""
    import yaml

    path = params_path()
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        return Fit(
            params=Params(**{k: float(data["params"][k]) for k in PARAM_NAMES}),
            interval_low=float(data["interval"]["low_factor"]),
            interval_high=float(data["interval"]["high_factor"]),
            interval_coverage=float(data["interval"]["coverage"]),
            calibrated_hardware=tuple(data["calibration"]["hardware"]),
            calibrated_precisions=tuple(data["calibration"]["precisions"]),
            source=str(data["calibration"]["source"]),
            engine=str(data["calibration"]["engine"]),
            validation=dict(data.get("validation") or {}),
        )
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable energy-model parameters ({e}); rerun "
                          "benchmarks/fit_energy_model.py") from None  # fmt: skip


def params_dict(p: Params) -> dict[str, float]:
    return asdict(p)


# ---------------------------------------------------------------- an estimate with its caveats

ESTIMATE_COLUMNS = (
    "model", "precision", "hardware", "boards", "batch_size", "prompt_tokens", "new_tokens",
    "j_per_token", "j_per_token_low", "j_per_token_high", "decode_j_per_token",
    "prefill_j_per_prompt_token", "tokens_per_s", "tokens_per_s_per_sequence",
    "board_power_w", "power_w", "floor_j_per_token", "energy_source", "energy_scope",
    "caveats",
)  # fmt: skip
SCOPE = "GPU boards (the model's boards only: no host, no network, no cooling)"


def caveats(config: dict[str, Any], precision: str, batch: int, hardware: Hardware,
            fit: Fit, boards: int = 1) -> list[str]:  # fmt: skip
    """Where the model is known to be weak for this workload."""
    out = []
    if boards > 1 and hardware.interconnect_bytes_per_s is None:
        out.append(f"{hardware.name} has no interconnect_bytes_per_s: PCIe Gen4 assumed for "
                   "the all-reduce")  # fmt: skip
    if hardware.name not in fit.calibrated_hardware:
        out.append(f"no calibration data on {hardware.name}: its datasheet figures carry the "
                   "model across boards")  # fmt: skip
    entry = PRECISIONS.get(precision)
    if precision not in fit.calibrated_precisions:
        out.append(f"no calibration data at {precision}: bytes and FLOP rates follow the format"
                   + (", priced as native FP4 hardware (not the emulation)"
                      if entry and entry.emulated else ""))  # fmt: skip
    shape = moe_shape(config)
    if shape and batch * shape[1] < 2 * shape[0]:
        out.append("MoE at small batch: experts touched per step follow uniform routing; real "
                   "routing is skewed, and the held-out MoE rows are large-batch only")  # fmt: skip
    return out


def estimate_row(model: str, config: dict[str, Any], info: dict[str, Any], precision: str,
                 batch: int, prompt_tokens: int, new_tokens: int, hardware: Hardware,
                 boards: int = 1, fit: Fit | None = None) -> dict[str, Any]:  # fmt: skip
    """One row of `tokenwatt estimate`: the prediction, its interval and what it covers."""
    fit = fit or stored_fit()
    _check(precision, batch, prompt_tokens, new_tokens, boards)
    t = workload_terms(config, info, precision, batch, prompt_tokens, new_tokens, hardware,
                       tp=boards)  # fmt: skip
    pr = predict(t, fit.params)
    from tokenwatt.analysis.floor import aggregate

    fl, _ = model_floor(config, info, precision, batch, prompt_tokens, new_tokens,
                        aggregate(hardware, boards), native=True)  # fmt: skip
    return {
        "model": model, "precision": precision, "hardware": hardware.name, "boards": boards,
        "batch_size": batch, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
        "j_per_token": pr.j_per_token,
        "j_per_token_low": pr.j_per_token * fit.interval_low,
        "j_per_token_high": pr.j_per_token * fit.interval_high,
        "decode_j_per_token": pr.decode_j_per_token,
        "prefill_j_per_prompt_token": pr.prefill_j_per_prompt_token,
        "tokens_per_s": pr.tokens_per_s, "tokens_per_s_per_sequence": pr.tokens_per_s / batch,
        "board_power_w": pr.board_power_w, "power_w": pr.board_power_w * boards,
        "floor_j_per_token": fl.j_per_token, "energy_source": LABEL, "energy_scope": SCOPE,
        "caveats": "; ".join(caveats(config, precision, batch, hardware, fit, boards)),
    }  # fmt: skip


def _check(precision: str, batch: int, prompt: int, new: int, boards: int) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision: unknown {precision!r}; choose one of "
                          f"{', '.join(PRECISIONS)}")  # fmt: skip
    for name, v, low in (("--batch-size", batch, 1), ("--prompt-tokens", prompt, 0),
                         ("--new-tokens", new, 2), ("--gpus", boards, 1)):  # fmt: skip
        if v < low:
            raise ConfigError(f"{name} must be at least {low} (got {v})")


# ---------------------------------------------------------------- a measured row's plausibility

PLAUSIBILITY_COLUMNS = ("predicted_j_per_token", "plausibility", "implausible")
# A measurement is `implausible` outside the interval widened by this factor on each side:
# the interval holds most honest measurements; this far out, something is likely wrong.
IMPLAUSIBLE_MARGIN = 2.0


def plausibility_columns(row: dict[str, Any], info: dict[str, Any],
                         board_name: str | None = None) -> dict[str, Any]:  # fmt: skip
    """predicted_j_per_token (the model's decode J/token for the row's workload on the board
    measured), plausibility = measured decode_j_per_token / predicted, and implausible =
    outside the model's interval widened IMPLAUSIBLE_MARGIN-fold.

    board_name: the NVML name of the GPU board the energy was read from, when it was (the
    prediction is for that board, so a model run elsewhere than the board measured shows up);
    else the row's own device. `implausible` is judged only for a measured GPU board: the model
    is fitted on GPU boards, and a CPU estimate is no measurement to judge. None everywhere
    the model cannot price the row (unknown hardware, a config without the usual shapes)."""
    from tokenwatt.analysis.floor import match_hardware

    out: dict[str, Any] = dict.fromkeys(PLAUSIBILITY_COLUMNS)
    if board_name:
        hardware = match_hardware(board_name, "cuda")
    else:
        hardware = match_hardware(row.get("device_name"), row.get("device"))
    if hardware is None:
        return out
    try:
        fit = stored_fit()
        precision = str(info.get("precision") or row.get("precision") or "bf16")
        batch = max(1, int(row.get("batch_size") or 1))
        t = workload_terms(info["config"], info, precision, batch,
                           float(row.get("prompt_tokens") or 0),
                           float(row.get("new_tokens") or 0), hardware,
                           tp=int(row.get("model_boards") or 1))  # fmt: skip
        predicted = predict(t, fit.params).decode_j_per_token
    except (ConfigError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return out
    out["predicted_j_per_token"] = predicted
    try:
        measured = float(row.get("decode_j_per_token"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return out
    if not (math.isfinite(measured) and measured > 0 and predicted > 0):
        return out
    ratio = measured / predicted
    out["plausibility"] = ratio
    if board_name:
        low, high = fit.interval_low / IMPLAUSIBLE_MARGIN, fit.interval_high * IMPLAUSIBLE_MARGIN
        out["implausible"] = not (low <= ratio <= high)
    return out
