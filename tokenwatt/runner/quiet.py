"""Keep library chatter that says nothing about the measurement off the user's screen.

Targeted filters only (by module and message), so a user's own UserWarnings still show when
they call tokenwatt from Python.
"""

from __future__ import annotations

import logging
import os
import warnings

# (module regex, message regex) of warnings that torchao, torch's pytree and transformers raise
# while a model is built, quantised or run; none of them changes a measured number.
NOISY_WARNINGS = [
    (r"torchao(\..*)?", ""),
    (r"torch\.utils\._pytree", ""),
    (r"torch\._dynamo(\..*)?", ""),
    (r"transformers(\..*)?", ""),
    (r"torch\.ao(\..*)?", ""),
    (r".*", r".*(TypedStorage|_register_pytree_node|torch\.utils\._pytree).*"),
]
NOISY_LOGGERS = ("torch.utils._pytree", "torchao", "transformers", "torch._dynamo")


def quiet_libraries(whole_process: bool = False) -> None:
    """Silence the libraries' own warnings and logs (idempotent).

    whole_process: the command line, where no user code runs: every UserWarning and
    FutureWarning is silenced except tokenwatt's own. From Python, only the libraries' ones.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for module, message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    if whole_process:
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("default", module=r"tokenwatt(\..*)?")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
