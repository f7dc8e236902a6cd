"""What is measured once per board per process: the counter's update period and the instant
power field's averaging window.

Opening a meter used to measure the update period every time (0.4 s of polling); a process
that opens many windows pays it once per board here. The key is the binding, the driver
version and the board's UUID, so a reloaded driver (or a reconfigured simulation) is measured
again.

The instant field's averaging window (25 ms of every 100 ms on A100/H100, other boards
differ) is not assumed: it is estimated from the pairs (period energy, instant value) the
meter sees, at open and then from every update the sampler dates. Power ripple shorter than a
period moves the instant value and the period energy together in proportion to the window, so
the regression slope of the period energy's change on the instant value's change is the
window (large jumps, which move both by whole levels, are left out). It is used once its
standard error is below 20% of it; until then `instant_window_s` is None and the attribution
takes 25 ms, and `describe()` says which.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field

MIN_PAIRS = 80
MAX_PAIRS = 600
REFIT_EVERY = 25
MAX_REL_SE = 0.2


@dataclass
class BoardFacts:
    period_s: float | None
    _pairs: deque = field(default_factory=lambda: deque(maxlen=MAX_PAIRS))
    _window: tuple[float, float, int] | None = None  # (seconds, standard error, pairs)
    _new: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, energy_j: float, seconds: float, instant_w: float) -> None:
        """One update period: its energy, its length, the instant value published at its end."""
        if not (seconds > 0 and math.isfinite(energy_j) and math.isfinite(instant_w)):
            return
        with self._lock:
            self._pairs.append((energy_j, seconds, instant_w))
            self._new += 1
            if self._new >= REFIT_EVERY and len(self._pairs) >= MIN_PAIRS:
                self._new = 0
                self._window = window_from_pairs(list(self._pairs))

    @property
    def instant_window_s(self) -> float | None:
        w = self._window
        if w is None or not w[1] < MAX_REL_SE * w[0]:
            return None
        return w[0]

    def describe(self) -> dict[str, object]:
        w = self._window
        if self.instant_window_s is not None and w is not None:
            how = f"measured: ripple regression over {w[2]} update periods (se {w[1]:.4f} s)"
        else:
            how = ("assumed 0.025 s (the A100/H100 value): too few or too steady update periods "
                   "to measure it yet")  # fmt: skip
        return {"instant_window_s": self.instant_window_s, "instant_window_source": how}


def window_from_pairs(pairs: list[tuple[float, float, float]]) -> tuple[float, float, int] | None:
    """(window s, standard error, pairs used) from consecutive (energy, seconds, instant W)."""
    de, dp = [], []
    # differences of disjoint pairs of neighbours: drift cancels, and no two differences share
    # a period (overlapping ones would be correlated and understate the standard error)
    for (e0, s0, p0), (e1, s1, p1) in zip(pairs[::2], pairs[1::2]):
        if abs(s1 - s0) > 0.2 * s0:
            continue  # a missed update in between: not comparable periods
        de.append(e1 / s1 * s0 - e0)  # energies over the same length
        dp.append(p1 - p0)
    if len(dp) < MIN_PAIRS // 2:
        return None
    mad = sorted(abs(x) for x in dp)[len(dp) // 2] or 1e-12
    keep = [(x, y) for x, y in zip(dp, de) if abs(x) <= 5 * mad]  # no level jumps
    sxx = sum(x * x for x, _ in keep)
    if len(keep) < MIN_PAIRS // 2 or sxx <= 0:
        return None
    slope = sum(x * y for x, y in keep) / sxx
    resid = sum((y - slope * x) ** 2 for x, y in keep) / max(len(keep) - 1, 1)
    se = math.sqrt(resid / sxx)
    period = sum(s for _, s, _ in pairs) / len(pairs)
    if not 0.0 < slope <= 1.2 * period:
        return None
    return slope, se, len(keep)


_FACTS: dict[tuple[str, str, str], BoardFacts] = {}
_LOCK = threading.Lock()


def facts_for(key: tuple[str, str, str]) -> BoardFacts | None:
    with _LOCK:
        return _FACTS.get(key)


def remember(key: tuple[str, str, str], facts: BoardFacts) -> BoardFacts:
    with _LOCK:
        return _FACTS.setdefault(key, facts)


def forget() -> None:
    """Measure every board again at its next open (tests; a changed machine)."""
    with _LOCK:
        _FACTS.clear()
