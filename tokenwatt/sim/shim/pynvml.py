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
    real,
    reload_driver,
)


def _nvmlGetFunctionPointer(name: str) -> None:
    """nvidia-ml-py's own lookup (tools check for it to tell the official binding): a function
    the simulation does not have is NVML_ERROR_FUNCTION_NOT_FOUND, as on an old driver."""
    raise NVMLError(real.NVML_ERROR_FUNCTION_NOT_FOUND)


install_from_env()


def __getattr__(name: str):
    """A function of nvidia-ml-py the simulation does not model (Zeus calls a few, such as
    nvmlDeviceGetC2cModeInfoV): it exists, and fails as on a driver without it."""
    if name.startswith("nvml") and hasattr(real, name):

        def missing(*args, **kwargs):
            raise NVMLError(real.NVML_ERROR_FUNCTION_NOT_FOUND)

        missing.__name__ = name
        return missing
    raise AttributeError(name)
