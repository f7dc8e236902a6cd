"""Simulated measurement hardware: NVML boards with the real sensor's timing, a powercap tree.

Tests and benchmarks run tokenwatt's real meter code against these and compare with the known
ground truth. To make a whole `tokenwatt run` see a simulated GPU:

    PYTHONPATH=$(python -c 'import tokenwatt.sim as s; print(s.shim_dir())') \\
        TOKENWATT_SIM_POWER_W=250 tokenwatt run --meter nvml --device cpu

The model still runs on the CPU; because the imported `pynvml` says it is simulated, the NVML
meter measures simulated GPU 0 whatever device the model runs on (see meters/select.py).
"""

from __future__ import annotations

import os


def shim_dir() -> str:
    """The folder holding a `pynvml.py` that is the simulation."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
