"""Optional extras: check that one is installed before any work, and say how to install it.

A missing extra found deep inside a run is a traceback and, for the report, a folder left
half made; checked first, it is one line with the pip command (MissingExtra, exit 2).
"""

from __future__ import annotations

import importlib.util
import sys

from tokenwatt.errors import MissingExtra

# extra name -> (the module it provides, what it is for)
EXTRAS: dict[str, tuple[str, str]] = {
    "quant": ("torchao", "the quantised precisions"),
    "carbon": ("codecarbon", "carbon intensity and CPU TDP data"),
    "plots": ("matplotlib", "the report's figures"),
    "multigpu": ("accelerate", "placing a model across several GPU boards"),
    "slurm": ("submitit", "sweeps on a Slurm cluster"),
    "publish": ("pyarrow", "parquet datasets (tokenwatt export)"),
}


def installed(module: str) -> bool:
    """True when `module` can be imported (a None entry in sys.modules means hidden)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, needed_by: str) -> None:
    """Raise MissingExtra naming what needs it and the pip command, unless it is installed.

    needed_by: the setting or command that needs it, e.g. "precision int8-weight".
    """
    module, purpose = EXTRAS[extra]
    if not installed(module):
        raise MissingExtra(
            f"{needed_by} needs {module} ({purpose}), which is not installed: "
            f"pip install 'tokenwatt[{extra}]' (or 'tokenwatt[all]')"
        )
