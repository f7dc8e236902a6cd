"""A fake Linux powercap tree for RAPL tests: packages, sub-domains, dram, psys, wrap."""

from __future__ import annotations

from pathlib import Path


def build_tree(root: str | Path, packages: int = 2, dram: bool = True, psys: bool = True,
               max_range_uj: int = 262_143_328_850) -> Path:  # fmt: skip
    """Create `root/intel-rapl:N` (package-N with core, uncore, dram) and psys; zero counters."""
    root = Path(root)
    (root / "intel-rapl").mkdir(parents=True, exist_ok=True)  # the control type, no counter
    for n in range(packages):
        top = _domain(root / f"intel-rapl:{n}", f"package-{n}", max_range_uj)
        subs = ["core", "uncore"] + (["dram"] if dram else [])
        for i, name in enumerate(subs):
            _domain(top / f"intel-rapl:{n}:{i}", name, max_range_uj)
    if psys:
        _domain(root / f"intel-rapl:{packages}", "psys", max_range_uj)
    return root


def _domain(path: Path, name: str, max_range_uj: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(name + "\n")
    (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    (path / "energy_uj").write_text("0\n")
    return path


def add_energy(root: str | Path, domain: str, joules: float) -> int:
    """Advance `domain` (e.g. "intel-rapl:0" or "intel-rapl:0:2") by joules, wrapping."""
    path = next(Path(root).rglob(domain))
    max_uj = int((path / "max_energy_range_uj").read_text())
    raw = (int((path / "energy_uj").read_text()) + round(joules * 1e6)) % max_uj
    (path / "energy_uj").write_text(f"{raw}\n")
    return raw


def set_energy(root: str | Path, domain: str, uj: int) -> None:
    (next(Path(root).rglob(domain)) / "energy_uj").write_text(f"{uj}\n")
