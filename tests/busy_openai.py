"""tests/fake_openai.py's server computing as a real one does: it spins the CPU for each
token instead of sleeping (python tests/busy_openai.py --port P --delay-s D), so its load is
that of a server under test, which must not read as contention."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))
import fake_openai  # noqa: E402


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


fake_openai.time = SimpleNamespace(**{**{k: getattr(time, k) for k in dir(time)
                                         if not k.startswith("_")}, "sleep": spin})  # fmt: skip

if __name__ == "__main__":
    fake_openai.main()
