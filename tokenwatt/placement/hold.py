"""How many GPU boards a case holds where it is sent, decided before it starts.

An executor (this machine, a Slurm partition) says what it offers a case that does not name
its boards (`Offer`); `hold_for` decides the case's boards from its config and that offer:
`gpus:` N holds N, `cpu` none, `cuda[:N]` one, and `auto` one only where GPUs are offered, so
a case asks a scheduler for a GPU only where one can exist. The case's own process then
resolves `auto` by what it really sees (`resolve.resolve_device`), which may still be the CPU
(a CPU build of torch on a GPU node), and says so in its rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenwatt.config import RunConfig


@dataclass(frozen=True)
class Offer:
    """GPUs a place offers a case that does not name its boards, and where that was read."""

    gpus: int
    source: str  # "this machine: NVML sees 2 boards", "partition gpu offers gpu:4 (sinfo)"


@dataclass(frozen=True)
class Hold:
    """The boards a case holds: how many (what a scheduler must give it), the device its
    process is given (cuda:N becomes cuda where only its board is visible), and why."""

    boards: int
    device: str
    why: str


def hold_for(cfg: RunConfig, offer: Offer, *, model_here: bool = True,
             renumbered: bool = True) -> Hold:  # fmt: skip
    """The case's hold under `offer`. model_here=False: the engine's model runs in a server
    elsewhere, so `auto` holds nothing unless `gpus` says so. renumbered: the case's process
    sees only its own boards (cuda:N is then plain cuda)."""
    device = "cuda" if renumbered and cfg.device.startswith("cuda:") else cfg.device
    if cfg.gpus is not None:
        n = cfg.gpus if isinstance(cfg.gpus, int) else len(cfg.gpus)
        return Hold(n, device, f"gpus: {cfg.gpus}")
    if cfg.device == "cpu":
        return Hold(0, device, "device cpu")
    if cfg.device.startswith("cuda"):
        return Hold(1, device, f"device {cfg.device}")
    if not model_here:
        return Hold(0, device, f"device auto, engine {cfg.engine}: the model runs in a server")
    n = 1 if offer.gpus else 0
    return Hold(n, device, f"device auto -> {n} GPU{'' if n == 1 else 's'}: {offer.source}")


def local_offer() -> Offer:
    """What this machine offers: the NVIDIA boards this process may use."""
    from tokenwatt.placement.resolve import process_view

    view = process_view()
    return Offer(view.gpus, f"this machine: {view.why}")


def visible_for(cfg: RunConfig, hold: Hold, visible: str | None) -> str | None:
    """CUDA_VISIBLE_DEVICES for a case's process on this machine, from this process's own
    (`visible`, which may hold UUIDs); None keeps it as it is.

    A case holding nothing sees no GPU; cuda:N sees only GPU N (counted within this process's
    list); N boards are the first N; boards named in a list keep this process's numbering.
    """
    if isinstance(cfg.gpus, list):
        return None
    if hold.boards == 0:
        return ""
    names = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    if cfg.device.startswith("cuda:") and cfg.gpus is None:
        index = int(cfg.device.split(":")[1])
        return names[index] if index < len(names) else str(index)
    return ",".join(names[: hold.boards] if names else [str(i) for i in range(hold.boards)])
