"""Simulated measurement hardware: NVML boards with the real sensor's timing, a powercap tree.

Tests and benchmarks run tokenwatt's real meter code against these and compare with the known
ground truth. To make a whole `tokenwatt run` measure a simulated GPU, name the simulation as
the NVML binding (an explicit setting: no code path in tokenwatt differs) and the boards:

    TOKENWATT_NVML_MODULE=tokenwatt.sim.nvml TOKENWATT_SIM_POWER_W=250 \\
        tokenwatt run --meter nvml --gpus 0 --device cpu

The model runs on the CPU; `--gpus 0` measures simulated board 0 whatever runs the model, and
the rows say `simulated-nvml-energy-counter` with measured=False. Tools that import `pynvml`
themselves (Zeus, CodeCarbon) see the same boards with `shim_dir()` first on PYTHONPATH.
"""

from __future__ import annotations

import os


def shim_dir() -> str:
    """The folder holding a `pynvml.py` that is the simulation."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
