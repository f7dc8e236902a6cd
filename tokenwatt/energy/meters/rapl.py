"""CPU package and DRAM energy from Linux powercap RAPL (Intel, and AMD on recent kernels).

Channels: one `cpu-package-N` per top-level package domain (`intel-rapl:N` named package-N),
one `dram-N` per dram domain, kept separate. Never summed on top of the packages: `psys` (it
contains the packages) and the core/uncore sub-domains (they are inside the package). Each
counter wraps at its `max_energy_range_uj`; one wrap per read interval is handled, which the
sampler's reads every 20 ms make certain. Since CVE-2020-8694 `energy_uj` is root-only.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenwatt.energy.meters.base import Channel, Meter
from tokenwatt.errors import MeterError, MeterUnavailable

POWERCAP = "/sys/class/powercap"
ROOT_ONLY_FIX = (
    "is readable by root only (since CVE-2020-8694); run as root, or grant read access with "
    "`sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj "
    "/sys/class/powercap/intel-rapl:*/intel-rapl:*/energy_uj` (until reboot), "
    "or use --meter estimate"
)


@dataclass(frozen=True)
class Domain:
    path: Path
    name: str  # package-0, dram, psys, core, uncore
    key: str  # channel key, "" when not measured (psys, core, uncore)
    max_uj: int


def discover(root: str | Path = POWERCAP) -> list[Domain]:
    """Every RAPL domain under `root`, with the channel key it gets (or "" if skipped)."""
    root = Path(root)
    out: list[Domain] = []
    if not root.is_dir():
        return out
    for top in sorted(root.glob("*-rapl:*")):
        if top.name.count(":") != 1 or not (top / "name").exists():
            continue
        name = _text(top / "name")
        pkg = name.split("-")[-1] if name.startswith("package") else top.name.split(":")[-1]
        out.append(_domain(top, name, f"cpu-package-{pkg}" if name.startswith("package") else ""))
        for sub in sorted(top.glob(f"{top.name}:*")):
            sname = _text(sub / "name")
            out.append(_domain(sub, sname, f"dram-{pkg}" if sname == "dram" else ""))
    return out


def _domain(path: Path, name: str, key: str) -> Domain:
    try:
        max_uj = int(_text(path / "max_energy_range_uj"))
    except (OSError, ValueError):
        max_uj = 2**32
    return Domain(path, name, key, max_uj)


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8").strip()


class RaplMeter(Meter):
    """Cumulative joules per package and dram domain, wrap-corrected; thread-safe."""

    name = "rapl"

    def __init__(self, root: str | Path = POWERCAP) -> None:
        self.root = Path(root)
        all_domains = discover(self.root)
        self.domains = [d for d in all_domains if d.key]
        self.skipped = [d.name for d in all_domains if not d.key]
        if not self.domains:
            raise MeterUnavailable(
                f"no RAPL package domain under {self.root} (virtual machine, or a CPU/kernel "
                "without powercap RAPL); use --meter estimate"
            )
        self._lock = threading.Lock()
        self._last = {d.key: self._raw(d) for d in self.domains}
        self._joules = dict.fromkeys(self._last, 0.0)
        self.wraps = 0
        self._channels = tuple(
            Channel(
                d.key,
                "dram" if d.key.startswith("dram") else "cpu-package",
                "rapl",
                True,
                _cpu_name(),
            )  # fmt: skip
            for d in self.domains
        )

    def _raw(self, d: Domain) -> int:
        try:
            return int(_text(d.path / "energy_uj"))
        except PermissionError:
            raise MeterUnavailable(f"{d.path / 'energy_uj'} {ROOT_ONLY_FIX}") from None
        except (OSError, ValueError) as e:
            raise MeterError(f"RAPL {d.path}: {e}") from None

    @property
    def channels(self) -> tuple[Channel, ...]:
        return self._channels

    def read_joules(self) -> dict[str, float]:
        with self._lock:
            for d in self.domains:
                raw = self._raw(d)
                delta = raw - self._last[d.key]
                if delta < 0:  # the counter wrapped at max_energy_range_uj
                    delta += d.max_uj
                    self.wraps += 1
                self._last[d.key] = raw
                self._joules[d.key] += delta / 1e6
            return dict(self._joules)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            root=str(self.root),
            domains={
                x.key: {"path": str(x.path), "max_energy_range_uj": x.max_uj} for x in self.domains
            },  # fmt: skip
            skipped_domains=self.skipped,
            rule="package domains summed; dram separate; psys and core/uncore never added",
            wraps=self.wraps,
        )
        return d


def _cpu_name() -> str:
    from tokenwatt.energy.meters.estimate import cpu_model_name

    return cpu_model_name()


def readable(root: str | Path = POWERCAP) -> bool:
    """True when RaplMeter can open here: every package and dram counter is readable."""
    domains = [d for d in discover(root) if d.key]
    return bool(domains) and all(os.access(d.path / "energy_uj", os.R_OK) for d in domains)
