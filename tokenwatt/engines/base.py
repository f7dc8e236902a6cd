"""The engine seam: how tokens get generated, behind one small interface.

An engine is prepared once per run (`prepare`), generates one batch per call (`generate`),
describes itself for the rows and run.json (`describe`) and ends its processes (`close`). The
run loop, the meters and the attribution never know which engine ran: they see a `Batch`
(tokens counted from the engine's own outputs) and phase boundaries, either marked live by
the engine after a device synchronisation (`live_marks`: the transformers loop), or dated by
the engine on `clock` and handed back in `Batch.marks` (vLLM's per-request timestamps, a
server's streamed chunks), which the recorder places on its trace afterwards.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tokenwatt.config import ENGINES, RunConfig

if TYPE_CHECKING:
    from tokenwatt._util.proctree import ServerProcesses

Mark = Callable[[str], None]
__all__ = ["ENGINES", "Batch", "Engine", "Mark", "Prepared", "RequestTiming", "no_mark"]


def no_mark(phase: str) -> None:
    pass


@dataclass
class RequestTiming:
    """One request of a served batch, on the engine's clock (seconds)."""

    sent_t: float
    first_token_t: float | None = None
    end_t: float | None = None
    token_times: list[float] = field(default_factory=list)  # one per streamed chunk with text
    output_tokens: int = 0  # from the server's usage (or the engine's output), never assumed
    prompt_tokens: int = 0
    error: str = ""  # why it failed ("" when it finished)

    @property
    def ok(self) -> bool:
        return not self.error and self.end_t is not None


@dataclass
class Batch:
    """What one `generate` call produced; tokens are counted from the engine's outputs."""

    tokens_generated: int
    decode_tokens: int  # tokens after each sequence's first (the first comes from prefill)
    batch_size: int  # sequences (or concurrent requests)
    prompt_tokens: int  # per sequence
    marks: list[tuple[str, float]] = field(default_factory=list)  # (phase, t on engine.clock)
    requests: list[RequestTiming] = field(default_factory=list)


@dataclass
class Prepared:
    """What an engine learned while preparing: the facts every row of the run shares."""

    constants: dict[str, Any]  # precision_backend, emulated, weight_bytes, params_total, ...
    model_info: dict[str, Any]  # config, weight_bytes, kv_bytes_per_element (for the floor)
    meta: dict[str, Any] = field(default_factory=dict)  # model_source, precision_report, ...
    model: Any = None  # the in-process model (transformers engine), else None
    device: str = "cpu"  # where the model runs, as the meters should see it


class Engine(ABC):
    """One way of generating tokens. Subclasses set `name`, declare what differs between
    engines below (the runner asks these, never an engine's name) and implement the four
    calls. The class attributes and class methods are read before an engine is made."""

    name: str = ""
    cfg: RunConfig
    live_marks: bool = True  # True: generate() calls mark(); False: Batch.marks are dated
    # windows: "phases" (prefill/decode/end marks) or "serving" (ramp-up/steady/ramp-down)
    windows: str = "phases"
    clock: Callable[[], float] = staticmethod(time.perf_counter)
    # The model runs in this process (or its children): its device and boards are placed
    # here. False: it runs in a server that this process only drives, on the CPU.
    in_process: bool = True
    # tokenwatt sets the number format. False: the engine's own (a server's), so `precision`
    # is only a label of what it runs ("server" when left auto).
    sets_precision: bool = True
    # An exception from generate() comes from code in this process (a bug, bad input, OOM) and
    # stops the run. False: from a process outside it (a server, an engine core), so it marks
    # the trial degraded as an EngineFault and the run goes on.
    errors_are_own: bool = True

    @classmethod
    def check(cls, cfg: RunConfig, device: str) -> None:
        """Refuse, before anything loads, what this engine cannot run on `device` (a missing
        package, a precision it has no kernel for): a one-line UserError. None by default."""
        return None

    @classmethod
    def runs_model_here(cls, cfg: RunConfig) -> bool:
        """Whether the model runs on the machine this case runs on (so it may need a GPU)."""
        return cls.in_process

    @classmethod
    def slow_reason(cls, cfg: RunConfig, device: str) -> str | None:
        """Why this run will be very slow, said before any work; None when nothing says so."""
        return None

    def model_label(self) -> str:
        """The model the rows name (after prepare)."""
        return self.cfg.model

    def warnings(self, meters: list[Any]) -> list[str]:
        """Warnings about what the meters cover of this engine's work, said once per run."""
        return []

    def fit_window(self, min_window_s: float, on_phase: Callable[[str, str], None]) -> None:
        """After prepare: make each measured window last at least `min_window_s` where the
        engine can (a served closed loop sends more requests a pass), saying so. A meter whose
        counter is slow (a DCGM exporter's) asks for it; in-process engines need nothing."""
        return None

    def trial_started(self) -> None:
        """Called before a trial's first generation (a served engine reads the server's own
        metrics here, to check the trial against them)."""
        return None

    def trial_columns(self, batches: list[Batch]) -> dict[str, Any]:
        """Columns of a trial's rows from the engine's own view (the server's word)."""
        return {}

    def server_processes(self) -> ServerProcesses | None:
        """After prepare: the processes on this machine that serve the model apart from this
        one (their load is reported, not counted as contention); None for a model run here."""
        return None

    @abstractmethod
    def prepare(self, on_phase: Callable[[str, str], None]) -> Prepared:
        """Load the model (or reach the server) once; raise UserError for bad input."""

    @abstractmethod
    def generate(self, mark: Mark = no_mark) -> Batch:
        """Generate one batch of the workload."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """{"engine": name, "engine_version": "...", "engine_settings": {...}} for every row."""

    @abstractmethod
    def close(self) -> None:
        """End what prepare() started (processes, connections); safe to call twice."""
