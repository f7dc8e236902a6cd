"""Choose the meters for a run: NVML on NVIDIA boards, RAPL where readable, else an estimate.

Which boards are measured is decided by placement (`Placement.measured`: `measure.gpus`, else
the boards the case holds), not here; this module only opens meters on them. auto: boards to
measure get NVML (a GPU run never falls back to a CPU estimate that would not cover the GPU);
otherwise RAPL when `energy_uj` is readable, else the labelled CPU estimate. Naming a meter
that cannot run here is a user error with the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tokenwatt.energy.meters.base import Meter
from tokenwatt.errors import MeterUnavailable, UserError

if TYPE_CHECKING:
    from tokenwatt.config import Measure


def open_meters(
    choice: str,
    boards: Sequence[str] = (),
    *,
    device: str = "cpu",
    cpu_tdp_w: float | None = None,
    nvml_module: str | None = None,
    measure: Measure | None = None,
) -> list[Meter]:
    """Meters for `choice` (auto|nvml|rapl|estimate|dcgm|prometheus).

    boards: NVML identities (UUIDs or PCI bus ids, as placement resolved them) of the boards
    to measure; device: where the model runs (for the message when NVML has no board).
    nvml_module: the NVML binding to use (default: TOKENWATT_NVML_MODULE, else pynvml).
    measure: the config's `measure:` block, which names a remote meter's URLs and boards.
    """
    asked = choice
    try:
        if choice in ("dcgm", "prometheus"):
            return open_remote_boards(choice, measure)
        if choice == "auto":
            choice = "nvml" if boards else _cpu_meter()
        if choice == "estimate":
            from tokenwatt.energy.meters.estimate import CpuEstimateMeter

            return [CpuEstimateMeter(tdp_w=cpu_tdp_w)]
        if choice == "rapl":
            from tokenwatt.energy.meters.rapl import RaplMeter

            return [RaplMeter()]
        if choice == "nvml":
            if not boards:
                raise MeterUnavailable(
                    f"the model runs on {device!r} and no boards are named; give --gpus 0 (or "
                    "UUIDs) to measure boards whatever runs the model, or use --meter "
                    "rapl/estimate"
                )
            return open_nvml(boards, nvml_module)
    except MeterUnavailable as e:
        chosen = asked if asked == choice else f"{asked} (chose {choice})"
        raise UserError(f"measure.meter={chosen}: {e}") from None
    raise UserError(f"measure.meter: unknown meter {choice!r}")


def open_remote_boards(choice: str, measure: Measure | None) -> list[Meter]:
    """The boards a node's exporter (or Prometheus) publishes that `measure` selects: by UUID
    or gpu label (measure.gpus), by pod and container, else every board published."""
    from tokenwatt.energy.meters.dcgm_text import Selection
    from tokenwatt.energy.meters.remote import open_remote

    if measure is None:
        raise MeterUnavailable(f"meter {choice} reads the URLs of a run's `measure:` block; "
                               "give it in a config, or pass meters= to the API")  # fmt: skip
    named = {"--gpus": ",".join(measure.gpus or ()), "--dcgm-pod": measure.dcgm_pod,
             "--dcgm-container": measure.dcgm_container}  # fmt: skip
    said = [f"{flag} {value}" for flag, value in named.items() if value]
    selector = measure.prometheus_selector if choice == "prometheus" else None
    sel = Selection(tuple(measure.gpus or ()), measure.dcgm_pod, measure.dcgm_container,
                    many_nodes="Hostname" in (selector or ""), said=tuple(said))  # fmt: skip
    urls = [measure.prometheus_url] if choice == "prometheus" else list(measure.dcgm_url)
    meters = open_remote(choice, urls, selector, sel)
    try:  # a window of a few collection intervals or less is refused before the run
        for m in meters:
            m.check_window(measure.min_seconds, "measure.min_seconds", "--min-seconds")
            m.check_window(measure.idle_seconds, "measure.idle_seconds", "--idle-seconds")
    except BaseException:
        for m in meters:
            m.close()
        raise
    return meters


def _cpu_meter() -> str:
    from tokenwatt.energy.meters.rapl import readable

    return "rapl" if readable() else "estimate"


def open_nvml(boards: Sequence[str], nvml_module: str | None = None) -> list[Meter]:
    """One NvmlMeter per board (NVML UUIDs or PCI bus ids), each board once."""
    from tokenwatt.energy.meters.nvml import NvmlMeter
    from tokenwatt.placement.nvml_ids import import_pynvml

    nvml = import_pynvml(nvml_module)
    meters: list[Meter] = []
    try:
        for board in dict.fromkeys(boards):
            meters.append(NvmlMeter(board, nvml=nvml))
    except BaseException:
        for m in meters:
            m.close()
        raise
    return meters


def boards_not_running_the_model(meters: Sequence[Meter], device: str,
                                 model_boards: Sequence[str] = ()) -> str | None:  # fmt: skip
    """A one-line warning when the measured boards are not the model's: some run no part of
    it, or some of the model's boards (`model_boards`: UUIDs or bus ids) are not measured."""
    from tokenwatt.energy.meters.nvml import NvmlMeter

    boards = [m for m in meters if isinstance(m, NvmlMeter)]
    if not boards:
        return None
    names = ", ".join(f"gpu{m.index}" for m in boards)
    if not device.startswith("cuda"):
        return (f"measured boards {names} do not run the model (it runs on {device}); their "
                "energy is whatever else runs there")  # fmt: skip
    ids = [{m.uuid, m.pci_bus_id} for m in boards]
    outside = [m for m, i in zip(boards, ids) if not i & set(model_boards)]
    unmeasured = [b for b in model_boards if not any(b in i for i in ids)]
    if outside:
        return (f"measured boards {', '.join(f'gpu{m.index}' for m in outside)} are not the "
                f"model's ({device}); their energy is whatever else runs there")  # fmt: skip
    if unmeasured:
        return (f"the model also runs on boards that are not measured ({', '.join(unmeasured)}); "
                "its energy is partial: measure every board it spans (leave measure.gpus "
                "unset)")  # fmt: skip
    return None
