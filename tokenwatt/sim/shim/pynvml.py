"""`pynvml` replaced by tokenwatt's simulated NVML (put this folder first on PYTHONPATH).

Configured from TOKENWATT_SIM_* environment variables; see tokenwatt.sim.nvml.install_from_env.
"""

from tokenwatt.sim.nvml import *  # noqa: F401,F403
from tokenwatt.sim.nvml import (  # noqa: F401
    STATE,
    TOKENWATT_SIMULATED,
    NVMLError,
    configure,
    inject_error,
    install_from_env,
    reload_driver,
)

install_from_env()
