"""A sweep's Slurm settings: the `slurm:` block of its YAML with `tokenwatt sweep`'s flags over
it, validated into one typed value. An unknown key or a bad value is one line naming the key (or
the flag) and the fix, even for a local sweep, so a cluster's settings are checked where they
are written. Apart from sweep/slurm.py so that planning (plan.py) can validate the block
without importing the executor.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from tokenwatt.config import short
from tokenwatt.errors import ConfigError

NAME_RE = re.compile(r"^[^\s\x00-\x1f]{1,200}$")  # one line, no space: it becomes #SBATCH --k=v
MEM_RE = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)  # sbatch --mem: a size, default unit MiB
FLAG_RE = re.compile(r"^--[A-Za-z][A-Za-z0-9-]*(=[^\x00-\x1f]+)?$")
# what tokenwatt decides per array: a flag for it would give every case the same GPUs or logs
OWN_FLAGS = ("array", "output", "error", "gpus", "gpus-per-node", "gpus-per-task", "gres")


class SlurmOptions(BaseModel):
    """What every job of a sweep asks Slurm for (each key is also a flag: --time-limit, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time_limit: StrictInt = Field(60, ge=1, description="Minutes per case.")
    cpus_per_task: StrictInt = Field(2, ge=1)
    mem: str | None = None
    gpus_per_case: StrictInt | None = Field(None, ge=0)
    array_parallelism: StrictInt = Field(8, ge=1, description="Array tasks running at once.")
    sbatch: list[str] = Field(default_factory=list, description="Extra sbatch flags.")

    @field_validator("partition", "account", "qos", "constraint")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME_RE.match(v):
            raise ValueError("must be one word without spaces, as Slurm names it")
        return v

    @field_validator("mem", mode="before")
    @classmethod
    def _mem(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)  # sbatch reads a bare number as MiB
        if v is not None and not (isinstance(v, str) and MEM_RE.match(v)):
            raise ValueError("is not a Slurm memory size; write e.g. 16G or 4000M")
        return v

    @field_validator("gpus_per_case")
    @classmethod
    def _gpus(cls, v: int | None) -> int | None:
        if v is not None and v > 1:
            raise ValueError(
                f"{v} GPUs: a device-auto case asks for 0 or 1; to place a model across {v} "
                f"boards write gpus: {v} in the sweep (that case then asks Slurm for {v})"
            )
        return v

    @field_validator("sbatch")
    @classmethod
    def _flags(cls, v: list[str]) -> list[str]:
        for flag in v:
            if not FLAG_RE.match(flag):
                raise ValueError(f"{short(flag)} is not a long sbatch flag; write e.g. --qos=high")
            if flag[2:].split("=")[0] in OWN_FLAGS:
                raise ValueError(f"tokenwatt sets {flag.split('=')[0]} itself (the GPUs from "
                                 "each case's device and gpus:, or --gpus-per-case); "
                                 "remove it")  # fmt: skip
        return v


KEYS = tuple(SlurmOptions.model_fields)


def slurm_options(block: Any = None, flags: dict[str, Any] | None = None,
                  where: str = "sweep") -> SlurmOptions:  # fmt: skip
    """The sweep file's `slurm:` block (`block`) with the flags given over it (`flags`: key ->
    value, None when the flag was not given): a flag overrides the file."""
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: slurm must be a mapping of its keys, e.g. "
                          "slurm: {partition: gpu, time_limit: 60}")  # fmt: skip
    opts = _validate(block, lambda key: f"{where}: slurm.{key}")
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if not given:
        return opts
    return _validate({**block, **given},
                     lambda key: "--" + key.replace("_", "-") if key in given
                     else f"{where}: slurm.{key}")  # fmt: skip


def _validate(data: dict[str, Any], name: Callable[[str], str]) -> SlurmOptions:
    try:
        return SlurmOptions.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "slurm"
        if err["type"] == "extra_forbidden":
            near = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{name(key)}: unknown key{hint}; slurm: takes "
                              f"{', '.join(KEYS)}") from None  # fmt: skip
        if err["type"] == "value_error":  # ours: the message names the value and the fix
            raise ConfigError(f"{name(key)}: {err['msg'].removeprefix('Value error, ')}") from None
        raise ConfigError(f"{name(key)}: {err['msg']} (got {short(err['input'])})") from None
