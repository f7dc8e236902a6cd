"""Every exception a tokenwatt user can see, in one place.

Two kinds, told apart by their exit code:
- `UserError` (exit 2): bad input. The message is one line that names the field and the fix;
  it is raised before anything is written.
- `RunFault` (exit 1): the run started but could not finish (a meter failed, out of memory,
  a stop on repeated faults). Finished trials are on disk; the message says where and what to do.
The command line prints either as one line on stderr, without a traceback. `Interrupted` and
`Terminated` are Ctrl-C and SIGTERM raised in the main thread, so cleanup runs (exit 130/143).
"""

from __future__ import annotations


class TokenwattError(Exception):
    """Base of tokenwatt's own errors; `exit_code` is what the command line exits with."""

    exit_code = 1


class UserError(TokenwattError):
    """Bad input: the message names the field and the fix. Exit code 2, no traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A config field is malformed, unknown or out of range."""


class PrecisionUnsupported(UserError):
    """This precision cannot run on this hardware; the message says what it needs."""


class MissingExtra(UserError):
    """An optional dependency is not installed; the message gives the pip command."""


class ResultsFolderError(UserError):
    """A file in the results folder is damaged or not tokenwatt's: the message names it."""


class FolderBusy(UserError):
    """Another live process holds the results folder (a sweep) or a case of it."""


class SlurmRefused(UserError):
    """Slurm cannot take a sweep (no controller, no sbatch, a partition, account or flag it
    rejects, a results folder its nodes cannot see): found before anything is submitted, or
    an sbatch that failed anyway (what the sweep had submitted is then cancelled)."""


class RunFault(TokenwattError):
    """The run could not finish; finished trials are saved. Exit code 1."""

    exit_code = 1


class RunStopped(RunFault):
    """The run stopped early on a hardware fault; finished trials are saved."""


class CaseOutOfMemory(RunFault):
    """The case ran out of memory; finished trials are saved."""


class SweepIncomplete(RunFault):
    """A sweep ended with failed cases or degraded trials; the message is its one-line summary
    (the other cases are saved). Exit code 1, as pytest and make."""


class WriteFailed(RunFault):
    """A result file could not be written (disk full, read-only); what was written is kept."""


class TrialsDegraded(RunFault):
    """The run finished, but some trials failed or lost their reading; the summary uses the
    good ones. Raised by the command line after the outcome is printed (exit 1, as pytest
    with a failed test); `tokenwatt.run` returns the outcome instead."""


class NoUsableRow(TokenwattError):
    """compare, report or plan: the input is readable but holds no usable row (every row
    failed or degraded, no complete run). Exit 1: what failed is the measurement, not the
    input; the message says what was found and what to do."""

    exit_code = 1


class InvalidResults(TokenwattError):
    """`tokenwatt validate` found problems in a results folder (each printed on its line).
    Exit 1: the folder is readable; what it holds does not add up."""

    exit_code = 1


class MeterError(TokenwattError, RuntimeError):
    """A meter failed while reading (NVML error, unreadable RAPL file, ...).

    Inside a trial it marks that trial degraded; outside one it stops the run as a RunStopped.
    """


class MeterUnavailable(MeterError):
    """A meter cannot run on this machine; the message says what is missing and the fix."""


class NvmlUnavailable(MeterUnavailable):
    """NVML itself cannot start here (no binding, no driver): this process sees no board."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so cleanup runs as for Ctrl-C (exit 143)."""


class EngineFault(TokenwattError, RuntimeError):
    """An engine outside this process failed during a trial (a server answering errors or
    dying, vLLM's engine core gone): that trial is marked degraded with the reason."""
